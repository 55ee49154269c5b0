"""ResNet34 (He et al., 2015, "Deep Residual Learning for Image Recognition").

Built from the modules of this package so that its ``state_dict`` lines up,
entry by entry, with ``torchvision.models.resnet34()``; that is what lets
``copy_weights`` load the pretrained ImageNet weights.
"""

import torch as t
import torch.nn as nn
import torchvision

from .batchnorm import BatchNorm2d
from .conv import AveragePool, Conv2d
from .given import MaxPool2d, Sequential, copy_weights
from .modules import Linear, ReLU


class ResidualBlock(nn.Module):
    """Basic residual block: ``out = relu(left(x) + right(x))``.

    ``(B, in_feats, H, W) -> (B, out_feats, H_out, W_out)`` with
    ``H_out = (H - 1) // first_stride + 1`` (same for width).

    * ``left``: conv 3x3 (stride ``first_stride``) -> batch norm -> ReLU ->
      conv 3x3 -> batch norm.
    * ``right`` (the shortcut): the identity when the shape is unchanged
      (``first_stride == 1`` and ``in_feats == out_feats``); otherwise a
      1x1 conv with stride ``first_stride`` followed by batch norm, projecting
      ``x`` to the output shape so the two branches can be added.

    ``left`` is declared before ``right`` on purpose: modules register their
    parameters in declaration order, and in torchvision's ``BasicBlock`` the
    ``downsample`` branch comes after ``conv1/bn1/conv2/bn2``. Declaring
    ``left`` first keeps our ``state_dict`` in the same order as torchvision's.
    """

    def __init__(self, in_feats: int, out_feats: int, first_stride: int = 1):
        super().__init__()
        self.left = Sequential(
            Conv2d(in_feats, out_feats, kernel_size=3, stride=first_stride, padding=1),
            BatchNorm2d(out_feats),
            ReLU(),
            Conv2d(out_feats, out_feats, kernel_size=3, stride=1, padding=1),
            BatchNorm2d(out_feats),
        )
        if first_stride == 1 and in_feats == out_feats:
            self.right = nn.Identity()
        else:
            self.right = Sequential(
                Conv2d(in_feats, out_feats, kernel_size=1, stride=first_stride),
                BatchNorm2d(out_feats),
            )
        self.relu = ReLU()

    def forward(self, x: t.Tensor) -> t.Tensor:
        return self.relu(self.left(x) + self.right(x))


class BlockGroup(nn.Module):
    """``n_blocks`` residual blocks in a row, ``(B, in_feats, H, W) -> (B, out_feats, H_out, W_out)``.

    Only the first block changes the number of channels and applies
    ``first_stride``; the others map ``out_feats`` to ``out_feats`` at stride 1.
    """

    def __init__(self, n_blocks: int, in_feats: int, out_feats: int, first_stride: int = 1):
        super().__init__()
        self.blocks = Sequential(
            ResidualBlock(in_feats, out_feats, first_stride),
            *[ResidualBlock(out_feats, out_feats) for _ in range(n_blocks - 1)],
        )

    def forward(self, x: t.Tensor) -> t.Tensor:
        return self.blocks(x)


class ResNet34(nn.Module):
    """ResNet34 classifier: ``(B, 3, H, W)`` images -> ``(B, n_classes)`` logits.

    * ``in_layers``: conv 7x7 stride 2 -> batch norm -> ReLU -> max pool 3x3 stride 2
      (64 channels, spatial size divided by 4).
    * ``residual_layers``: one ``BlockGroup`` per entry of the three lists;
      group ``i`` has ``n_blocks_per_group[i]`` blocks, ``out_features_per_group[i]``
      channels and starts with stride ``first_strides_per_group[i]``.
    * ``out_layers``: global average pool -> linear layer to ``n_classes``.

    With the defaults this is torchvision's ``resnet34`` (21,797,672 parameters).
    """

    def __init__(
        self,
        n_blocks_per_group: list[int] = [3, 4, 6, 3],
        out_features_per_group: list[int] = [64, 128, 256, 512],
        first_strides_per_group: list[int] = [1, 2, 2, 2],
        n_classes: int = 1000,
    ):
        super().__init__()
        # Copy the lists, so that the (shared) default lists are never modified.
        self.n_blocks_per_group = list(n_blocks_per_group)
        self.out_features_per_group = list(out_features_per_group)
        self.first_strides_per_group = list(first_strides_per_group)
        self.n_classes = n_classes

        self.in_layers = Sequential(
            Conv2d(3, 64, kernel_size=7, stride=2, padding=3),
            BatchNorm2d(64),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, padding=1),
        )

        in_features_per_group = [64, *self.out_features_per_group]
        self.residual_layers = Sequential(
            *[
                BlockGroup(n_blocks, in_feats, out_feats, first_stride)
                for n_blocks, in_feats, out_feats, first_stride in zip(
                    self.n_blocks_per_group,
                    in_features_per_group,
                    self.out_features_per_group,
                    self.first_strides_per_group,
                )
            ]
        )

        self.out_layers = Sequential(
            AveragePool(),
            Linear(self.out_features_per_group[-1], n_classes),
        )

    def forward(self, x: t.Tensor) -> t.Tensor:
        x = self.in_layers(x)
        x = self.residual_layers(x)
        return self.out_layers(x)


def get_resnet_for_feature_extraction(n_classes: int) -> ResNet34:
    """ResNet34 with frozen ImageNet weights and a new, trainable final layer.

    Every pretrained parameter gets ``requires_grad=False``; only the fresh
    ``Linear(512, n_classes)`` that replaces ``out_layers[-1]`` is trained.
    """
    my_resnet = ResNet34()
    pretrained_resnet = torchvision.models.resnet34(weights=torchvision.models.ResNet34_Weights.IMAGENET1K_V1)
    my_resnet = copy_weights(my_resnet, pretrained_resnet)

    my_resnet.requires_grad_(False)
    # Created after freezing, so its parameters are trainable.
    my_resnet.out_layers[-1] = Linear(my_resnet.out_features_per_group[-1], n_classes)
    return my_resnet
