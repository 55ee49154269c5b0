"""Convolutions and max pooling from scratch, using ``as_strided`` views.

The idea: instead of copying every window of the input into a new tensor, build
a *view* with extra dimensions that walks over the windows. ``x.as_strided(size,
stride)`` reinterprets the storage of ``x``: moving one step along dimension ``d``
of the view moves ``stride[d]`` elements in memory. Reusing the same memory
stride in two view dimensions makes overlapping windows for free.

Conventions:

* Strides always come from ``x.stride()``, never from the shape, so the functions
  work on non-contiguous inputs (transposes, slices) too. The view keeps
  ``x``'s storage offset.
* Only ``as_strided``, ``einops.einsum``, sums and ``amax`` do the work; padding
  is done by writing into a new tensor made with ``x.new_full``, so dtype and
  device follow the input.
* Shapes: ``b`` batch, ``ic``/``oc`` input/output channels, ``h``/``w`` input
  height/width, ``kh``/``kw`` kernel height/width, ``oh``/``ow`` output
  height/width.
"""

import einops
import torch as t

from .given import IntOrPair, force_pair


def as_strided_trace(mat: t.Tensor) -> t.Tensor:
    """Sum of the diagonal of a square matrix ``(n, n) -> ()``.

    One step along the diagonal is one step down a row plus one step along a column.
    """
    n = mat.shape[0]
    diagonal = mat.as_strided(size=(n,), stride=(mat.stride(0) + mat.stride(1),))
    return diagonal.sum()


def as_strided_mv(mat: t.Tensor, vec: t.Tensor) -> t.Tensor:
    """Matrix-vector product ``(i, j), (j,) -> (i,)``.

    ``vec`` is viewed as an ``(i, j)`` matrix whose rows are all ``vec``
    (stride 0 along ``i``), then multiplied elementwise and summed over ``j``.
    """
    i, j = mat.shape
    vec_rows = vec.as_strided(size=(i, j), stride=(0, vec.stride(0)))
    return (mat * vec_rows).sum(dim=1)


def as_strided_mm(matA: t.Tensor, matB: t.Tensor) -> t.Tensor:
    """Matrix-matrix product ``(i, j), (j, k) -> (i, k)``.

    Both matrices are viewed as ``(i, j, k)`` tensors (``matA`` repeated along
    ``k``, ``matB`` repeated along ``i``, both with stride 0), multiplied
    elementwise and summed over ``j``.
    """
    i, j = matA.shape
    k = matB.shape[1]
    sA0, sA1 = matA.stride()
    sB0, sB1 = matB.stride()
    A = matA.as_strided(size=(i, j, k), stride=(sA0, sA1, 0))
    B = matB.as_strided(size=(i, j, k), stride=(0, sB0, sB1))
    return (A * B).sum(dim=1)


def conv1d_minimal_simple(x: t.Tensor, weights: t.Tensor) -> t.Tensor:
    """1-D convolution (cross-correlation) with no batch or channels: ``(w,), (kw,) -> (ow,)``.

    ``ow = w - kw + 1`` (stride 1, no padding). Window ``o`` is ``x[o : o + kw]``.
    """
    w = x.shape[0]
    kw = weights.shape[0]
    ow = w - kw + 1
    s = x.stride(0)
    # Both the window position and the position inside a window advance one element.
    x_windows = x.as_strided(size=(ow, kw), stride=(s, s))
    return einops.einsum(x_windows, weights, "ow kw, kw -> ow")


def conv1d_minimal(x: t.Tensor, weights: t.Tensor) -> t.Tensor:
    """1-D convolution, stride 1, no padding: ``(b, ic, w), (oc, ic, kw) -> (b, oc, ow)``.

    ``ow = w - kw + 1``.
    """
    b, ic, w = x.shape
    oc, ic2, kw = weights.shape
    assert ic == ic2, "in_channels of x and weights must match"
    ow = w - kw + 1
    s_b, s_ic, s_w = x.stride()
    x_windows = x.as_strided(size=(b, ic, ow, kw), stride=(s_b, s_ic, s_w, s_w))
    return einops.einsum(x_windows, weights, "b ic ow kw, oc ic kw -> b oc ow")


def conv2d_minimal(x: t.Tensor, weights: t.Tensor) -> t.Tensor:
    """2-D convolution, stride 1, no padding: ``(b, ic, h, w), (oc, ic, kh, kw) -> (b, oc, oh, ow)``.

    ``oh = h - kh + 1`` and ``ow = w - kw + 1``; the kernel need not be square.
    """
    b, ic, h, w = x.shape
    oc, ic2, kh, kw = weights.shape
    assert ic == ic2, "in_channels of x and weights must match"
    oh = h - kh + 1
    ow = w - kw + 1
    s_b, s_ic, s_h, s_w = x.stride()
    x_windows = x.as_strided(
        size=(b, ic, oh, ow, kh, kw),
        stride=(s_b, s_ic, s_h, s_w, s_h, s_w),
    )
    return einops.einsum(x_windows, weights, "b ic oh ow kh kw, oc ic kh kw -> b oc oh ow")


def pad1d(x: t.Tensor, left: int, right: int, pad_value: float) -> t.Tensor:
    """Pad the last dimension: ``(..., w) -> (..., left + w + right)``."""
    w = x.shape[-1]
    out = x.new_full((*x.shape[:-1], left + w + right), pad_value)
    out[..., left : left + w] = x
    return out


def pad2d(x: t.Tensor, left: int, right: int, top: int, bottom: int, pad_value: float) -> t.Tensor:
    """Pad the last two dimensions: ``(..., h, w) -> (..., top + h + bottom, left + w + right)``.

    Note the argument order: ``left, right`` (width) before ``top, bottom`` (height).
    """
    h, w = x.shape[-2:]
    out = x.new_full((*x.shape[:-2], top + h + bottom, left + w + right), pad_value)
    out[..., top : top + h, left : left + w] = x
    return out


def conv1d(x: t.Tensor, weights: t.Tensor, stride: int = 1, padding: int = 0) -> t.Tensor:
    """1-D convolution: ``(b, ic, w), (oc, ic, kw) -> (b, oc, ow)``.

    ``x`` is zero-padded by ``padding`` on both sides, then windows start every
    ``stride`` elements: ``ow = (w + 2 * padding - kw) // stride + 1``.
    """
    x = pad1d(x, left=padding, right=padding, pad_value=0.0)
    b, ic, w = x.shape
    oc, ic2, kw = weights.shape
    assert ic == ic2, "in_channels of x and weights must match"
    ow = (w - kw) // stride + 1
    s_b, s_ic, s_w = x.stride()
    # Consecutive windows are `stride` elements apart; inside a window, 1 element.
    x_windows = x.as_strided(size=(b, ic, ow, kw), stride=(s_b, s_ic, s_w * stride, s_w))
    return einops.einsum(x_windows, weights, "b ic ow kw, oc ic kw -> b oc ow")


def conv2d(x: t.Tensor, weights: t.Tensor, stride: IntOrPair = 1, padding: IntOrPair = 0) -> t.Tensor:
    """2-D convolution: ``(b, ic, h, w), (oc, ic, kh, kw) -> (b, oc, oh, ow)``.

    ``stride`` and ``padding`` are an int or an ``(height, width)`` pair. ``x`` is
    zero-padded, then ``oh = (h + 2 * padding_h - kh) // stride_h + 1`` (same for width).
    """
    stride_h, stride_w = force_pair(stride)
    padding_h, padding_w = force_pair(padding)
    x = pad2d(x, left=padding_w, right=padding_w, top=padding_h, bottom=padding_h, pad_value=0.0)

    b, ic, h, w = x.shape
    oc, ic2, kh, kw = weights.shape
    assert ic == ic2, "in_channels of x and weights must match"
    oh = (h - kh) // stride_h + 1
    ow = (w - kw) // stride_w + 1
    s_b, s_ic, s_h, s_w = x.stride()
    x_windows = x.as_strided(
        size=(b, ic, oh, ow, kh, kw),
        stride=(s_b, s_ic, s_h * stride_h, s_w * stride_w, s_h, s_w),
    )
    return einops.einsum(x_windows, weights, "b ic oh ow kh kw, oc ic kh kw -> b oc oh ow")


def maxpool2d(
    x: t.Tensor,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> t.Tensor:
    """2-D max pooling: ``(b, c, h, w) -> (b, c, oh, ow)``.

    ``kernel_size``, ``stride`` and ``padding`` are an int or an ``(height, width)``
    pair; ``stride=None`` means stride equal to the kernel size. Padding uses
    ``-inf`` so it never wins the max. ``oh = (h + 2 * padding_h - kh) // stride_h + 1``.
    """
    if stride is None:
        stride = kernel_size
    kh, kw = force_pair(kernel_size)
    stride_h, stride_w = force_pair(stride)
    padding_h, padding_w = force_pair(padding)
    x = pad2d(x, left=padding_w, right=padding_w, top=padding_h, bottom=padding_h, pad_value=float("-inf"))

    b, c, h, w = x.shape
    oh = (h - kh) // stride_h + 1
    ow = (w - kw) // stride_w + 1
    s_b, s_c, s_h, s_w = x.stride()
    x_windows = x.as_strided(
        size=(b, c, oh, ow, kh, kw),
        stride=(s_b, s_c, s_h * stride_h, s_w * stride_w, s_h, s_w),
    )
    return x_windows.amax(dim=(-2, -1))
