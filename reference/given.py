"""Helpers that the course hands to learners ready-made.

These are not exercises: they are the small pieces of plumbing (argument
normalisation, containers, a course-flavoured max pool and the weight-copying
rule for ResNet34) that the exercises build on.
"""

import math

import torch as t
import torch.nn as nn
import torch.nn.functional as F

IntOrPair = int | tuple[int, int]
Pair = tuple[int, int]


def force_pair(v: IntOrPair) -> Pair:
    """Turn a size argument into a ``(height, width)`` pair of Python ints.

    An ``int`` ``v`` becomes ``(v, v)``; a tuple of length 2 is converted element-wise
    (its elements may be numpy integers). Anything else raises ``ValueError``, a bare
    numpy integer included, exactly as the course's own ``force_pair`` does.
    """
    if isinstance(v, tuple):
        if len(v) != 2:
            raise ValueError(f"expected a pair of ints, got {len(v)} values: {v!r}")
        return (int(v[0]), int(v[1]))
    if isinstance(v, int):
        return (v, v)
    raise ValueError(f"expected an int or a pair of ints, got {v!r}")


class Sequential(nn.Module):
    """Apply a list of modules one after another.

    The modules are registered as children named ``"0"``, ``"1"``, ...,
    so parameter names look like ``"0.weight"``, exactly as in
    ``torch.nn.Sequential``. Negative indices count from the end.
    """

    def __init__(self, *modules: nn.Module):
        super().__init__()
        for index, module in enumerate(modules):
            self._modules[str(index)] = module

    def __getitem__(self, index: int) -> nn.Module:
        index %= len(self._modules)
        return self._modules[str(index)]

    def __setitem__(self, index: int, module: nn.Module) -> None:
        index %= len(self._modules)
        self._modules[str(index)] = module

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x: t.Tensor) -> t.Tensor:
        for module in self._modules.values():
            x = module(x)
        return x


class Flatten(nn.Module):
    """Merge the dimensions ``start_dim`` to ``end_dim`` (both inclusive) into one.

    Negative dims count from the end, so the default ``(1, -1)`` maps
    ``(B, C, H, W)`` to ``(B, C * H * W)``.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: t.Tensor) -> t.Tensor:
        shape = input.shape
        start = self.start_dim % input.ndim
        end = self.end_dim % input.ndim
        merged = math.prod(shape[start : end + 1])
        return input.reshape(*shape[:start], merged, *shape[end + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class MaxPool2d(nn.Module):
    """2-D max pooling, ``(B, C, H, W) -> (B, C, H_out, W_out)``.

    Course convention: ``padding`` defaults to 1 (``torch.nn.MaxPool2d`` uses 0).
    ``stride=None`` means stride equal to ``kernel_size``.
    """

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

    def forward(self, x: t.Tensor) -> t.Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def copy_weights(my_resnet: nn.Module, pretrained_resnet: nn.Module) -> nn.Module:
    """Copy the pretrained model's weights into ``my_resnet`` and return it.

    The two state dicts are paired up entry by entry, IN ORDER, ignoring the
    names (ours say ``residual_layers.0.blocks.0.left.0.weight`` where
    torchvision says ``layer1.0.conv1.weight``). This only works if both models
    register their parameters and buffers in the same order, with the same
    shapes; the first entry that does not line up raises ``ValueError``.
    """
    mydict = my_resnet.state_dict()
    pretraineddict = pretrained_resnet.state_dict()

    # Check the number of entries, then every pair's shape.
    assert len(mydict) == len(pretraineddict), (
        f"state dicts have different lengths: {len(mydict)} vs {len(pretraineddict)}"
    )
    pairs = zip(mydict.items(), pretraineddict.items())
    for index, ((mykey, myvalue), (pretrainedkey, pretrainedvalue)) in enumerate(pairs):
        if myvalue.shape != pretrainedvalue.shape:
            raise ValueError(
                f"state_dict entry {index} does not line up: "
                f"yours is {mykey!r} with shape {tuple(myvalue.shape)}, "
                f"pretrained is {pretrainedkey!r} with shape {tuple(pretrainedvalue.shape)}"
            )

    # Load the pretrained values under our names.
    new_dict = {
        mykey: pretrainedvalue
        for (mykey, _), (_, pretrainedvalue) in zip(mydict.items(), pretraineddict.items())
    }
    my_resnet.load_state_dict(new_dict)
    return my_resnet
