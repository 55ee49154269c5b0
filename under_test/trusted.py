"""Trusted building blocks, lent to a worker to find the root cause of a composite's failure.

When a residual block, a ResNet34, the weight copy or the feature extractor fails, the
harness grades it once more in a fresh worker where the submission's own building blocks
are replaced by these: torch's own modules and functions, configured the course's way
(the course's signatures and defaults). If the composite then passes, it is right and
only inherits a block's bug, and the feedback says which block. That worker grades
nothing else afterwards.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


class Conv2d(nn.Conv2d):
    """The course's Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0): square, no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)


class MaxPool2d(nn.MaxPool2d):
    """The course's MaxPool2d(kernel_size, stride=None, padding=1): padding 1 by default, unlike torch's."""

    def __init__(self, kernel_size, stride=None, padding=1):
        super().__init__(kernel_size, stride=stride, padding=padding)


class AveragePool(nn.Module):
    """(B, C, H, W) -> (B, C): the mean over height and width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def conv2d(x, weights, stride=1, padding=0):
    return F.conv2d(x, weights, stride=_pair(stride), padding=_pair(padding))


def maxpool2d(x, kernel_size, stride=None, padding=0):
    kernel = _pair(kernel_size)
    return F.max_pool2d(x, kernel, stride=kernel if stride is None else _pair(stride), padding=_pair(padding))


BLOCKS = {
    "ReLU": nn.ReLU,
    "Linear": nn.Linear,
    "Flatten": nn.Flatten,
    "Sequential": nn.Sequential,
    "BatchNorm2d": nn.BatchNorm2d,
    "Conv2d": Conv2d,
    "MaxPool2d": MaxPool2d,
    "AveragePool": AveragePool,
    "conv2d": conv2d,
    "maxpool2d": maxpool2d,
}


def lend(names: list[str], namespaces: list[dict]) -> None:
    """Put the trusted version of each name where the submission's own one was bound.

    `namespaces` are the submission's module and its own package modules; a name bound there
    to something else than the submission's own object (torch's nn.Linear, say) is left alone.
    """
    own = {ns.get("__name__") for ns in namespaces}
    for namespace in namespaces:
        for name in names:
            value = namespace.get(name)
            if value is not None and getattr(value, "__module__", None) in own:
                namespace[name] = BLOCKS[name]
