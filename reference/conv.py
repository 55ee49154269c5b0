"""Convolution and global average pooling as modules (the functional work is done by torch)."""

import torch as t
import torch.nn as nn
import torch.nn.functional as F

from .given import IntOrPair


class Conv2d(nn.Module):
    """2-D convolution without bias, ``(B, in_channels, H, W) -> (B, out_channels, H_out, W_out)``.

    The kernel is square. ``weight`` has shape
    ``(out_channels, in_channels, kernel_size, kernel_size)`` and is initialised
    uniformly in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` with
    ``fan_in = in_channels * kernel_size**2``. Output size per spatial dim is
    ``(size + 2 * padding - kernel_size) // stride + 1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

        fan_in = in_channels * kernel_size * kernel_size
        bound = 1 / fan_in**0.5
        weight = bound * (2 * t.rand(out_channels, in_channels, kernel_size, kernel_size) - 1)
        self.weight = nn.Parameter(weight)

    def forward(self, x: t.Tensor) -> t.Tensor:
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


class AveragePool(nn.Module):
    """Global average pooling: mean over height and width, ``(B, C, H, W) -> (B, C)``."""

    def forward(self, x: t.Tensor) -> t.Tensor:
        return x.mean(dim=(2, 3))
