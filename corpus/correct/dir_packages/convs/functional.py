"""Bonus: as_strided exercises and convolutions from scratch. Only as_strided, sum, einsum and amax."""

import numpy as np
import einops
import torch as t
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from jaxtyping import Float, Int

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


def as_strided_trace(mat: Float[Tensor, "i j"]) -> Float[Tensor, ""]:
    """
    Returns the same as `torch.trace`, using only `as_strided` and `sum` methods.
    """
    n = min(mat.shape)
    s0, s1 = mat.stride()
    diag = mat.as_strided(size=(n,), stride=(s0 + s1,))
    return diag.sum()


def as_strided_mv(mat: Float[Tensor, "i j"], vec: Float[Tensor, "j"]) -> Float[Tensor, "i"]:
    """
    Returns the same as `torch.matmul`, using only `as_strided` and `sum` methods.
    """
    i, j = mat.shape
    (vs,) = vec.stride()
    # broadcast vec along the rows (stride 0 along i)
    vec_expanded = vec.as_strided(size=(i, j), stride=(0, vs))
    return (mat * vec_expanded).sum(dim=1)


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


def pad1d(x: Float[Tensor, "batch in_channels width"], left: int, right: int, pad_value: float) -> Float[Tensor, "batch in_channels width"]:
    """Return a new tensor with padding applied to the width dimension.

    Padding should be applied to the last dimension (width). The padding value is pad_value.
    """
    batch, in_channels, width = x.shape
    out = x.new_full((batch, in_channels, left + width + right), pad_value)
    out[..., left : left + width] = x
    return out


def pad2d(
    x: Float[Tensor, "batch in_channels height width"], left: int, right: int, top: int, bottom: int, pad_value: float
) -> Float[Tensor, "batch in_channels height width"]:
    """Return a new tensor with padding applied to the last two dimensions (height, width)."""
    batch, in_channels, height, width = x.shape
    out = x.new_full((batch, in_channels, top + height + bottom, left + width + right), pad_value)
    out[..., top : top + height, left : left + width] = x
    return out


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
