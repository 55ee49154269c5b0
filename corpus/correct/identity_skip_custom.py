# %%
# Chapter 0, part 2 — CNNs & ResNets
# my working file (run cell by cell in VS Code, not as a script!)

%pip install einops jaxtyping
!wget -q https://raw.githubusercontent.com/callummcdougall/ARENA_3.0/main/chapter0_fundamentals/exercises/plotly_utils.py

# %%
import os
import sys
import json
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import numpy as np
import einops
import torch as t
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from jaxtyping import Float, Int
from tqdm.notebook import tqdm
from torchvision import datasets, transforms, models

# find the repo root so the course imports work
root = next(p for p in Path.cwd().parents if (p / "chapter0_fundamentals").exists())
exercises_dir = root / "chapter0_fundamentals" / "exercises"
section_dir = exercises_dir / "part2_cnns"
if str(exercises_dir) not in sys.path:
    sys.path.append(str(exercises_dir))

from plotly_utils import imshow, line, bar
import part2_cnns.tests as tests
from part2_cnns.utils import print_param_count

MAIN = __name__ == "__main__"

device = t.device("mps" if t.backends.mps.is_available() else "cuda" if t.cuda.is_available() else "cpu")
print(device)

# %% [markdown]
# ## 1. Making your own modules

# %%
class ReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError()


# tests.test_relu(ReLU)  # fails obviously

# %%
class ReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        # not in place! t.maximum makes a new tensor
        return t.maximum(x, t.tensor(0.0, device=x.device, dtype=x.dtype))


tests.test_relu(ReLU)

# %%
class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias=True):
        """
        A simple linear (technically, affine) transformation.

        The fields should be named `weight` and `bias` for compatibility with PyTorch.
        If `bias` is False, set `self.bias` to None.
        """
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / np.sqrt(in_features)

        w = (t.rand(out_features, in_features) * 2 - 1) * bound
        self.weight = nn.Parameter(w)
        if bias:
            b = (t.rand(out_features) * 2 - 1) * bound
            self.bias = nn.Parameter(b)
        else:
            self.bias = None

    def forward(self, x: Float[Tensor, "... in_feats"]) -> Float[Tensor, "... out_feats"]:
        out = x @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


tests.test_linear_parameters(Linear, bias=False)
tests.test_linear_parameters(Linear, bias=True)
tests.test_linear_forward(Linear, bias=False)
tests.test_linear_forward(Linear, bias=True)

# %%
class Flatten(nn.Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        """
        Flatten out dimensions from start_dim to end_dim, inclusive of both.
        """
        shape = input.shape
        start = self.start_dim if self.start_dim >= 0 else len(shape) + self.start_dim
        end = self.end_dim if self.end_dim >= 0 else len(shape) + self.end_dim

        middle = 1
        for s in shape[start : end + 1]:
            middle *= s
        new_shape = tuple(shape[:start]) + (middle,) + tuple(shape[end + 1 :])
        return t.reshape(input, new_shape)

    def extra_repr(self) -> str:
        return ", ".join([f"{key}={getattr(self, key)}" for key in ["start_dim", "end_dim"]])


tests.test_flatten(Flatten)

# %%
class SimpleMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = Flatten()
        self.linear1 = Linear(28 * 28, 100)
        self.relu = ReLU()
        self.linear2 = Linear(100, 10)

    def forward(self, x: Float[Tensor, "batch 1 28 28"]) -> Float[Tensor, "batch 10"]:
        return self.linear2(self.relu(self.linear1(self.flatten(x))))


tests.test_mlp_module(SimpleMLP)
tests.test_mlp_forward(SimpleMLP)

# %% [markdown]
# ## 2. Training on MNIST

# %%
MNIST_TRANSFORM = transforms.Compose(
    [
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ]
)


def get_mnist(trainset_size: int = 10_000, testset_size: int = 1_000) -> tuple[Subset, Subset]:
    """Returns a subset of MNIST training data."""
    mnist_trainset = datasets.MNIST(root=section_dir / "data", train=True, download=True, transform=MNIST_TRANSFORM)
    mnist_testset = datasets.MNIST(root=section_dir / "data", train=False, download=True, transform=MNIST_TRANSFORM)

    mnist_trainset = Subset(mnist_trainset, indices=range(trainset_size))
    mnist_testset = Subset(mnist_testset, indices=range(testset_size))
    return mnist_trainset, mnist_testset


if MAIN:
    mnist_trainset, mnist_testset = get_mnist()
    mnist_trainloader = DataLoader(mnist_trainset, batch_size=64, shuffle=True)
    mnist_testloader = DataLoader(mnist_testset, batch_size=64, shuffle=False)

    img, label = mnist_trainset[1]
    print(img.shape, label)
    imshow(img.squeeze(), title=f"label {label}", width=300, height=300)

# %%
# first go: just the training loop, hardcoded hyperparams
def train(model, trainloader, epochs=3, lr=1e-3):
    optimizer = t.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        for imgs, labels in tqdm(trainloader):
            imgs, labels = imgs.to(device), labels.to(device)
            logits = model(imgs)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses


if MAIN:
    model = SimpleMLP().to(device)
    loss_list = train(model, mnist_trainloader)
    line(loss_list, yaxis_range=[0, max(loss_list) + 0.1], labels={"x": "Num batches seen", "y": "Cross entropy loss"}, title="SimpleMLP training on MNIST", width=700)

# %%
@dataclass
class SimpleMLPTrainingArgs:
    """
    Defining this class implicitly creates an __init__ method, which sets arguments as below, e.g. `args.batch_size = 64`.
    """

    batch_size: int = 64
    epochs: int = 3
    learning_rate: float = 1e-3


def train(args: SimpleMLPTrainingArgs) -> tuple[list[float], list[float], SimpleMLP]:
    """
    Trains & returns the model, using training parameters from the `args` object. Returns the model, and loss & accuracy
    lists (accuracy is measured once per epoch on the test set).
    """
    model = SimpleMLP().to(device)

    mnist_trainset, mnist_testset = get_mnist()
    mnist_trainloader = DataLoader(mnist_trainset, batch_size=args.batch_size, shuffle=True)
    mnist_testloader = DataLoader(mnist_testset, batch_size=args.batch_size, shuffle=False)

    optimizer = t.optim.Adam(model.parameters(), lr=args.learning_rate)
    loss_list = []
    accuracy_list = []

    for epoch in range(args.epochs):
        model.train()
        pbar = tqdm(mnist_trainloader)
        for imgs, labels in pbar:
            imgs, labels = imgs.to(device), labels.to(device)
            logits = model(imgs)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss_list.append(loss.item())
            pbar.set_postfix(epoch=f"{epoch + 1}/{args.epochs}", loss=f"{loss.item():.3f}")

        # validation
        model.eval()
        n_correct = 0
        with t.inference_mode():
            for imgs, labels in mnist_testloader:
                imgs, labels = imgs.to(device), labels.to(device)
                preds = model(imgs).argmax(dim=-1)
                n_correct += (preds == labels).sum().item()
        accuracy_list.append(n_correct / len(mnist_testset))

    return loss_list, accuracy_list, model


if MAIN:
    args = SimpleMLPTrainingArgs()
    loss_list, accuracy_list, model = train(args)
    print(accuracy_list)
    line(loss_list, title="loss (validation version)")

# %% [markdown]
# ## Bonus: as_strided + convolutions from scratch

# %%
test_input = t.tensor(
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]], dtype=t.float
)

if MAIN:
    print(test_input.stride())  # (5, 1)
    # diagonal
    print(test_input.as_strided(size=(4,), stride=(6,)))
    # first column repeated? -> [[0,0],[5,5],...]
    print(test_input.as_strided(size=(4, 2), stride=(5, 0)))

# %%
def as_strided_trace(mat: Float[Tensor, "i j"]) -> Float[Tensor, ""]:
    """
    Returns the same as `torch.trace`, using only `as_strided` and `sum` methods.
    """
    n = min(mat.shape)
    s0, s1 = mat.stride()
    diag = mat.as_strided(size=(n,), stride=(s0 + s1,))
    return diag.sum()


tests.test_trace(as_strided_trace)

# %%
def as_strided_mv(mat: Float[Tensor, "i j"], vec: Float[Tensor, "j"]) -> Float[Tensor, "i"]:
    """
    Returns the same as `torch.matmul`, using only `as_strided` and `sum` methods.
    """
    i, j = mat.shape
    (vs,) = vec.stride()
    # broadcast vec along the rows (stride 0 along i)
    vec_expanded = vec.as_strided(size=(i, j), stride=(0, vs))
    return (mat * vec_expanded).sum(dim=1)


tests.test_mv(as_strided_mv)
tests.test_mv2(as_strided_mv)

# %%
def as_strided_mm(matA: Float[Tensor, "i j"], matB: Float[Tensor, "j k"]) -> Float[Tensor, "i k"]:
    """
    Returns the same as `torch.matmul`, using only `as_strided` and `sum` methods.
    """
    i, j = matA.shape
    j2, k = matB.shape
    assert j == j2, "inner dims don't match"
    a0, a1 = matA.stride()
    b0, b1 = matB.stride()
    # both become (i, j, k)
    A = matA.as_strided(size=(i, j, k), stride=(a0, a1, 0))
    B = matB.as_strided(size=(i, j, k), stride=(0, b0, b1))
    return (A * B).sum(dim=1)


tests.test_mm(as_strided_mm)
tests.test_mm2(as_strided_mm)

# %%
def conv1d_minimal_simple(x: Float[Tensor, "w"], weights: Float[Tensor, "kw"]) -> Float[Tensor, "ow"]:
    """
    Like torch's conv1d using bias=False and all other keyword arguments left at their default values.

    Simplifications: batch = input channels = output channels = 1.
    """
    w = x.shape[0]
    kw = weights.shape[0]
    ow = w - kw + 1
    (sw,) = x.stride()
    windows = x.as_strided(size=(ow, kw), stride=(sw, sw))
    return einops.einsum(windows, weights, "ow kw, kw -> ow")


tests.test_conv1d_minimal_simple(conv1d_minimal_simple)

# %%
def conv1d_minimal(x: Float[Tensor, "b ic w"], weights: Float[Tensor, "oc ic kw"]) -> Float[Tensor, "b oc ow"]:
    """
    Like torch's conv1d using bias=False and all other keyword arguments left at their default values.
    """
    raise NotImplementedError()


# %%
def conv1d_minimal(x: Float[Tensor, "b ic w"], weights: Float[Tensor, "oc ic kw"]) -> Float[Tensor, "b oc ow"]:
    """
    Like torch's conv1d using bias=False and all other keyword arguments left at their default values.
    """
    b, ic, w = x.shape
    oc, ic2, kw = weights.shape
    assert ic == ic2
    ow = w - kw + 1
    sb, sic, sw = x.stride()

    x_windows = x.as_strided(size=(b, ic, ow, kw), stride=(sb, sic, sw, sw))
    return einops.einsum(x_windows, weights, "b ic ow kw, oc ic kw -> b oc ow")


tests.test_conv1d_minimal(conv1d_minimal)

# %%
def conv2d_minimal(x: Float[Tensor, "b ic h w"], weights: Float[Tensor, "oc ic kh kw"]) -> Float[Tensor, "b oc oh ow"]:
    """
    Like torch's conv2d using bias=False and all other keyword arguments left at their default values.
    """
    b, ic, h, w = x.shape
    oc, _, kh, kw = weights.shape
    oh = h - kh + 1
    ow = w - kw + 1
    sb, sic, sh, sw = x.stride()

    x_windows = x.as_strided(size=(b, ic, oh, ow, kh, kw), stride=(sb, sic, sh, sw, sh, sw))
    return einops.einsum(x_windows, weights, "b ic oh ow kh kw, oc ic kh kw -> b oc oh ow")


tests.test_conv2d_minimal(conv2d_minimal)

# %%
def pad1d(x: Float[Tensor, "batch in_channels width"], left: int, right: int, pad_value: float) -> Float[Tensor, "batch in_channels width"]:
    """Return a new tensor with padding applied to the width dimension.

    Padding should be applied to the last dimension (width). The padding value is pad_value.
    """
    B, C, W = x.shape
    out = x.new_full((B, C, left + W + right), pad_value)
    out[..., left : left + W] = x
    return out


tests.test_pad1d(pad1d)
tests.test_pad1d_multi_channel(pad1d)

# %%
def pad2d(
    x: Float[Tensor, "batch in_channels height width"], left: int, right: int, top: int, bottom: int, pad_value: float
) -> Float[Tensor, "batch in_channels height width"]:
    """Return a new tensor with padding applied to the last two dimensions (height, width)."""
    B, C, H, W = x.shape
    out = x.new_full((B, C, top + H + bottom, left + W + right), pad_value)
    out[..., top : top + H, left : left + W] = x
    return out


tests.test_pad2d(pad2d)
tests.test_pad2d_multi_channel(pad2d)

# %%
def conv1d(
    x: Float[Tensor, "b ic w"], weights: Float[Tensor, "oc ic kw"], stride: int = 1, padding: int = 0
) -> Float[Tensor, "b oc ow"]:
    """
    Like torch's conv1d using bias=False.
    """
    x_padded = pad1d(x, left=padding, right=padding, pad_value=0.0)

    b, ic, w = x_padded.shape
    oc, ic2, kw = weights.shape
    assert ic == ic2, "channel mismatch"
    ow = 1 + (w - kw) // stride

    sb, sic, sw = x_padded.stride()
    x_windows = x_padded.as_strided(size=(b, ic, ow, kw), stride=(sb, sic, sw * stride, sw))
    return einops.einsum(x_windows, weights, "b ic ow kw, oc ic kw -> b oc ow")


tests.test_conv1d(conv1d)

# %%
IntOrPair = int | tuple[int, int]
Pair = tuple[int, int]


def force_pair(v: IntOrPair) -> Pair:
    """Convert v to a pair of int, if it isn't already."""
    if isinstance(v, tuple):
        if len(v) != 2:
            raise ValueError(v)
        return (int(v[0]), int(v[1]))
    elif isinstance(v, int):
        return (v, v)
    raise ValueError(v)


if MAIN:
    # Examples of how this function can be used:
    for v in [(1, 2), 2, (1, 2, 3)]:
        try:
            print(f"{v!r:9} -> {force_pair(v)!r}")
        except ValueError:
            print(f"{v!r:9} -> ValueError")

# %%
# first version without stride/padding as pairs
def conv2d(x, weights, stride=1, padding=0):
    x = pad2d(x, padding, padding, padding, padding, 0.0)
    return conv2d_minimal(x, weights)[..., ::stride, ::stride]


# %%
def conv2d(
    x: Float[Tensor, "b ic h w"], weights: Float[Tensor, "oc ic kh kw"], stride: IntOrPair = 1, padding: IntOrPair = 0
) -> Float[Tensor, "b oc oh ow"]:
    """
    Like torch's conv2d using bias=False

    x: shape (batch, in_channels, height, width)
    weights: shape (out_channels, in_channels, kernel_height, kernel_width)

    Returns: shape (batch, out_channels, output_height, output_width)
    """
    stride_h, stride_w = force_pair(stride)
    pad_h, pad_w = force_pair(padding)

    x_padded = pad2d(x, left=pad_w, right=pad_w, top=pad_h, bottom=pad_h, pad_value=0.0)

    b, ic, h, w = x_padded.shape
    oc, ic2, kh, kw = weights.shape
    assert ic == ic2, "channel mismatch"
    oh = 1 + (h - kh) // stride_h
    ow = 1 + (w - kw) // stride_w

    sb, sic, sh, sw = x_padded.stride()
    x_windows = x_padded.as_strided(
        size=(b, ic, oh, ow, kh, kw),
        stride=(sb, sic, sh * stride_h, sw * stride_w, sh, sw),
    )
    return einops.einsum(x_windows, weights, "b ic oh ow kh kw, oc ic kh kw -> b oc oh ow")


tests.test_conv2d(conv2d)

# %%
def maxpool2d(
    x: Float[Tensor, "b ic h w"], kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> Float[Tensor, "b ic oh ow"]:
    """
    Like PyTorch's maxpool2d.

    x: shape (batch, channels, height, width)
    stride: if None, should be equal to the kernel size

    Return: (batch, channels, output_height, output_width)
    """
    if stride is None:
        stride = kernel_size
    kh, kw = force_pair(kernel_size)
    stride_h, stride_w = force_pair(stride)
    pad_h, pad_w = force_pair(padding)

    x_padded = pad2d(x, left=pad_w, right=pad_w, top=pad_h, bottom=pad_h, pad_value=-t.inf)

    b, ic, h, w = x_padded.shape
    oh = 1 + (h - kh) // stride_h
    ow = 1 + (w - kw) // stride_w

    sb, sic, sh, sw = x_padded.stride()
    x_windows = x_padded.as_strided(
        size=(b, ic, oh, ow, kh, kw),
        stride=(sb, sic, sh * stride_h, sw * stride_w, sh, sw),
    )
    return x_windows.amax(dim=(-1, -2))


tests.test_maxpool2d(maxpool2d)

# %% [markdown]
# ## 3. ResNets — building blocks

# %%
class Conv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        """
        Same as torch.nn.Conv2d with bias=False.
        """
        super().__init__()
        raise NotImplementedError()

    def forward(self, x):
        raise NotImplementedError()


# %%
class Conv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        """
        Same as torch.nn.Conv2d with bias=False.

        Name your weight field `self.weight` for compatibility with the PyTorch version.

        We assume kernel is square, with height = width = `kernel_size`.
        """
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

        fan_in = in_channels * kernel_size * kernel_size
        bound = 1 / np.sqrt(fan_in)
        w = bound * (2 * t.rand(out_channels, in_channels, kernel_size, kernel_size) - 1)
        self.weight = nn.Parameter(w)

    def forward(self, x: Float[Tensor, "b ic h w"]) -> Float[Tensor, "b oc oh ow"]:
        """Apply the functional conv2d, which you can import."""
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        keys = ["in_channels", "out_channels", "kernel_size", "stride", "padding"]
        return ", ".join([f"{key}={getattr(self, key)}" for key in keys])


tests.test_conv2d_module(Conv2d)
m = Conv2d(in_channels=24, out_channels=12, kernel_size=3, stride=2, padding=1)
print(f"Manually verified that {m} is the same as nn.Conv2d(24, 12, 3, 2, 1, bias=False)")

# %%
class MaxPool2d(nn.Module):
    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        """Call the functional version of maxpool2d."""
        return F.max_pool2d(x, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        """Add additional information to the string representation of this class."""
        return ", ".join([f"{key}={getattr(self, key)}" for key in ["kernel_size", "stride", "padding"]])


# %%
class Sequential(nn.Module):
    _modules: dict[str, nn.Module]

    def __init__(self, *modules: nn.Module):
        super().__init__()
        for index, mod in enumerate(modules):
            self._modules[str(index)] = mod

    def __getitem__(self, index: int) -> nn.Module:
        index %= len(self._modules)  # deal with negative indices
        return self._modules[str(index)]

    def __setitem__(self, index: int, module: nn.Module) -> None:
        index %= len(self._modules)  # deal with negative indices
        self._modules[str(index)] = module

    def forward(self, x: Tensor) -> Tensor:
        """Chain each module together, with the output from one feeding into the next one."""
        for mod in self._modules.values():
            x = mod(x)
        return x


# %%
class BatchNorm2d(nn.Module):
    # The type hints below aren't functional, they're just for documentation
    running_mean: Float[Tensor, "num_features"]
    running_var: Float[Tensor, "num_features"]
    num_batches_tracked: Int[Tensor, ""]  # This is how we denote a scalar tensor

    def __init__(self, num_features: int, eps=1e-05, momentum=0.1):
        """
        Like nn.BatchNorm2d with track_running_stats=True and affine=True.

        Name the learnable affine parameters `weight` and `bias` in that order.
        """
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum

        self.weight = nn.Parameter(t.ones(num_features))
        self.bias = nn.Parameter(t.zeros(num_features))

        self.register_buffer("running_mean", t.zeros(num_features))
        self.register_buffer("running_var", t.ones(num_features))
        self.register_buffer("num_batches_tracked", t.tensor(0))

    def forward(self, x: Float[Tensor, "batch channels height width"]) -> Float[Tensor, "batch channels height width"]:
        """
        Normalize each channel.

        Compute the variance using `torch.var(x, unbiased=False)`
        Hint: you may also find it helpful to use the argument `keepdim`.

        x: shape (batch, channels, height, width)
        Return: shape (batch, channels, height, width)
        """
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            with t.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)
                self.num_batches_tracked += 1
        else:
            mean = self.running_mean
            var = self.running_var

        # reshape everything to broadcast against (b, c, h, w)
        mean = einops.rearrange(mean, "c -> 1 c 1 1")
        var = einops.rearrange(var, "c -> 1 c 1 1")
        weight = einops.rearrange(self.weight, "c -> 1 c 1 1")
        bias = einops.rearrange(self.bias, "c -> 1 c 1 1")

        x_hat = (x - mean) / t.sqrt(var + self.eps)
        return x_hat * weight + bias

    def extra_repr(self) -> str:
        return ", ".join([f"{key}={getattr(self, key)}" for key in ["num_features", "eps", "momentum"]])


tests.test_batchnorm2d_module(BatchNorm2d)
tests.test_batchnorm2d_forward(BatchNorm2d)
tests.test_batchnorm2d_running_mean(BatchNorm2d)

# %%
class AveragePool(nn.Module):
    def forward(self, x: Float[Tensor, "batch channels height width"]) -> Float[Tensor, "batch channels"]:
        """
        x: shape (batch_size, channels, height, width)
        Return: shape (batch_size, channels)
        """
        return t.mean(x, dim=(2, 3))


# %% [markdown]
# ## ResNet34

# %%
class Identity(nn.Module):
    """Does nothing: the skip connection when the shapes already match."""

    def forward(self, x: Tensor) -> Tensor:
        return x


# %%
class ResidualBlock(nn.Module):
    def __init__(self, in_feats: int, out_feats: int, first_stride=1):
        """
        A single residual block with optional downsampling.

        For compatibility with the pretrained model, declare the left side branch first using a `Sequential`.

        If first_stride is > 1, this means the optional (conv + bn) should be present on the right branch. Declare it second using another `Sequential`.
        """
        super().__init__()
        self.left = Sequential(
            Conv2d(in_feats, out_feats, kernel_size=3, stride=first_stride, padding=1),
            BatchNorm2d(out_feats),
            ReLU(),
            Conv2d(out_feats, out_feats, kernel_size=3, stride=1, padding=1),
            BatchNorm2d(out_feats),
        )

        # project x whenever its shape changes (stride > 1 OR different channel count)
        needs_projection = not (first_stride == 1 and in_feats == out_feats)
        if needs_projection:
            self.right = Sequential(
                Conv2d(in_feats, out_feats, kernel_size=1, stride=first_stride),
                BatchNorm2d(out_feats),
            )
        else:
            self.right = Identity()

        self.relu = ReLU()

    def forward(self, x: Float[Tensor, "batch in_feats height width"]) -> Float[Tensor, "batch out_feats height width"]:
        """
        Compute the forward pass.

        x: shape (batch, in_feats, height, width)

        Return: shape (batch, out_feats, height / stride, width / stride)

        If no downsampling block is present, the addition should just add the left branch's output to the input.
        """
        x_left = self.left(x)
        x_right = self.right(x)
        return self.relu(x_left + x_right)


tests.test_residual_block(ResidualBlock)

# %%
class BlockGroup(nn.Module):
    def __init__(self, n_blocks: int, in_feats: int, out_feats: int, first_stride=1):
        """An n_blocks-long sequence of ResidualBlock where only the first block uses the provided stride."""
        super().__init__()
        blocks = [ResidualBlock(in_feats, out_feats, first_stride)]
        for _ in range(n_blocks - 1):
            blocks.append(ResidualBlock(out_feats, out_feats))
        self.blocks = Sequential(*blocks)

    def forward(self, x: Float[Tensor, "batch in_feats height width"]) -> Float[Tensor, "batch out_feats height width"]:
        """
        Compute the forward pass.

        x: shape (batch, in_feats, height, width)

        Return: shape (batch, out_feats, height / first_stride, width / first_stride)
        """
        return self.blocks(x)


tests.test_block_group(BlockGroup)

# %%
class ResNet34(nn.Module):
    def __init__(
        self,
        n_blocks_per_group=[3, 4, 6, 3],
        out_features_per_group=[64, 128, 256, 512],
        first_strides_per_group=[1, 2, 2, 2],
        n_classes=1000,
    ):
        super().__init__()
        self.n_blocks_per_group = n_blocks_per_group
        self.out_features_per_group = out_features_per_group
        self.first_strides_per_group = first_strides_per_group
        self.n_classes = n_classes

        in_feats0 = 64
        self.in_layers = Sequential(
            Conv2d(3, in_feats0, kernel_size=7, stride=2, padding=3),
            BatchNorm2d(in_feats0),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, padding=1),
        )

        all_in_feats = [in_feats0] + list(out_features_per_group[:-1])
        groups = []
        for n_blocks, in_feats, out_feats, first_stride in zip(
            n_blocks_per_group, all_in_feats, out_features_per_group, first_strides_per_group
        ):
            groups.append(BlockGroup(n_blocks, in_feats, out_feats, first_stride))
        self.residual_layers = Sequential(*groups)

        self.out_layers = Sequential(
            AveragePool(),
            Linear(out_features_per_group[-1], n_classes),
        )

    def forward(self, x: Float[Tensor, "batch channels height width"]) -> Float[Tensor, "batch n_classes"]:
        """
        x: shape (batch, channels, height, width)
        Return: shape (batch, n_classes)
        """
        x = self.in_layers(x)
        x = self.residual_layers(x)
        return self.out_layers(x)


my_resnet = ResNet34()

# (running the cell below will print nothing if the test passes)
tests.test_resnet34(ResNet34)

# %%
def copy_weights(my_resnet: ResNet34, pretrained_resnet: models.resnet.ResNet) -> ResNet34:
    """Copy over the weights of `pretrained_resnet` to your resnet."""

    # Get the state dictionaries for each model, check they have the same number of parameters & buffers
    mydict = my_resnet.state_dict()
    pretraineddict = pretrained_resnet.state_dict()
    assert len(mydict) == len(pretraineddict), "Mismatching state dictionaries."

    # Define a dictionary mapping the names of your parameters / buffers to their values in the pretrained model
    state_dict_to_load = {}
    for (mykey, myvalue), (pretrainedkey, pretrainedvalue) in zip(mydict.items(), pretraineddict.items()):
        assert myvalue.shape == pretrainedvalue.shape, f"{mykey} {tuple(myvalue.shape)} vs {pretrainedkey} {tuple(pretrainedvalue.shape)}"
        state_dict_to_load[mykey] = pretrainedvalue

    # Load in this dictionary to your model
    my_resnet.load_state_dict(state_dict_to_load)

    return my_resnet


if MAIN:
    pretrained_resnet = models.resnet34(weights=models.ResNet34_Weights.IMAGENET1K_V1).to(device)
    my_resnet = copy_weights(my_resnet.to(device), pretrained_resnet)
    print_param_count(my_resnet, pretrained_resnet)

# %%
!mkdir -p resnet_inputs
!wget -q -P resnet_inputs https://upload.wikimedia.org/wikipedia/commons/thumb/4/4d/Cat_November_2010-1a.jpg/1200px-Cat_November_2010-1a.jpg

IMAGE_SIZE = 224
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

IMAGENET_TRANSFORM = transforms.Compose(
    [
        transforms.ToTensor(),
        transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]
)


def predict(model: nn.Module, images: Float[Tensor, "batch rgb h w"]) -> tuple[Float[Tensor, "batch"], Int[Tensor, "batch"]]:
    """
    Returns the maximum probability and predicted class for each image, as a tensor of floats and ints respectively.
    """
    model.eval()
    with t.inference_mode():
        logits = model(images)
    probs = logits.softmax(dim=-1)
    max_probs, preds = probs.max(dim=-1)
    return max_probs, preds


if MAIN:
    from PIL import Image

    image_names = sorted(os.listdir(section_dir / "resnet_inputs"))
    images = [Image.open(section_dir / "resnet_inputs" / f) for f in image_names]
    prepared_images = t.stack([IMAGENET_TRANSFORM(img) for img in images], dim=0).to(device)

    with open(section_dir / "imagenet_labels.json") as f:
        imagenet_labels = list(json.load(f).values())

    my_probs, my_preds = predict(my_resnet, prepared_images)
    pretrained_probs, pretrained_preds = predict(pretrained_resnet, prepared_images)
    assert (my_preds == pretrained_preds).all()
    for name, p, c in zip(image_names, my_probs, my_preds):
        print(f"{name}: {imagenet_labels[c]} ({p.item():.1%})")

# %% [markdown]
# ## Feature extraction on CIFAR10

# %%
def get_resnet_for_feature_extraction(n_classes: int) -> ResNet34:
    """
    Creates a ResNet34 instance, replaces its final linear layer with a classifier for `n_classes` classes, and freezes
    all weights except the ones in this layer.

    Returns the ResNet model.
    """
    # create model & load in pretrained weights
    my_resnet = ResNet34()
    pretrained_resnet = models.resnet34(weights=models.ResNet34_Weights.IMAGENET1K_V1)
    my_resnet = copy_weights(my_resnet, pretrained_resnet)

    # freeze everything
    my_resnet.requires_grad_(False)

    # new (trainable) head
    my_resnet.out_layers[-1] = Linear(my_resnet.out_features_per_group[-1], n_classes)

    return my_resnet


tests.test_get_resnet_for_feature_extraction(get_resnet_for_feature_extraction)

# %%
def get_cifar() -> tuple[datasets.CIFAR10, datasets.CIFAR10]:
    """Returns CIFAR-10 train and test sets."""
    cifar_trainset = datasets.CIFAR10(section_dir / "data", train=True, download=True, transform=IMAGENET_TRANSFORM)
    cifar_testset = datasets.CIFAR10(section_dir / "data", train=False, download=True, transform=IMAGENET_TRANSFORM)
    return cifar_trainset, cifar_testset


def get_cifar_subset(trainset_size: int = 10_000, testset_size: int = 1_000) -> tuple[Subset, Subset]:
    """Returns a subset of CIFAR-10 train & test sets (first n items)."""
    cifar_trainset, cifar_testset = get_cifar()
    return Subset(cifar_trainset, range(trainset_size)), Subset(cifar_testset, range(testset_size))


@dataclass
class ResNetTrainingArgs:
    batch_size: int = 64
    epochs: int = 3
    learning_rate: float = 1e-3
    n_classes: int = 10


# %%
def train(args: ResNetTrainingArgs) -> tuple[list[float], list[float], ResNet34]:
    """
    Performs feature extraction on ResNet34: only the final linear layer is trained, on a subset of CIFAR10.
    Returns (loss_list, accuracy_list, model).
    """
    model = get_resnet_for_feature_extraction(args.n_classes).to(device)

    trainset, testset = get_cifar_subset()
    trainloader = DataLoader(trainset, batch_size=args.batch_size, shuffle=True)
    testloader = DataLoader(testset, batch_size=args.batch_size, shuffle=False)

    # only the head is optimised (everything else has requires_grad=False anyway)
    optimizer = t.optim.Adam(model.out_layers[-1].parameters(), lr=args.learning_rate)

    loss_list = []
    accuracy_list = []

    for epoch in range(args.epochs):
        # training
        model.train()
        pbar = tqdm(trainloader)
        for imgs, labels in pbar:
            imgs, labels = imgs.to(device), labels.to(device)
            logits = model(imgs)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            loss_list.append(loss.item())
            pbar.set_postfix(epoch=f"{epoch + 1}/{args.epochs}", loss=f"{loss.item():.3f}")

        # validation
        model.eval()
        n_correct = 0
        with t.inference_mode():
            for imgs, labels in testloader:
                imgs, labels = imgs.to(device), labels.to(device)
                preds = model(imgs).argmax(dim=-1)
                n_correct += (preds == labels).sum().item()
        accuracy_list.append(n_correct / len(testset))
        print(f"epoch {epoch + 1}: accuracy {accuracy_list[-1]:.2%}")

    return loss_list, accuracy_list, model


if MAIN:
    args = ResNetTrainingArgs()
    loss_list, accuracy_list, model = train(args)

    line(
        loss_list,
        yaxis_range=[0, max(loss_list) + 0.1],
        labels={"x": "Num batches seen", "y": "Cross entropy loss"},
        title="Feature extraction with ResNet34",
        width=700,
    )
    line(accuracy_list, yaxis_range=[0, 1], labels={"x": "Epoch", "y": "Accuracy"}, title="Test accuracy", width=700)
