"""Area `strided` (rubric item 3 through its stride checks): the from-scratch functions.

Oracles, computed in the harness on the same inputs: `torch.trace`, `mat @ vec`,
`matA @ matB`, `F.conv1d`, `F.conv2d`, `F.pad` and `F.max_pool2d`. Inputs come in
several memory layouts (transposed, every-other-element and offset views), so a
function that derives strides from the shape instead of `x.stride()` is caught.
Output shapes are checked first, against oh = floor((h + 2p - k) / s) + 1. The
functions are bias-free; stride and padding are an int or a pair (whose
elements may be numpy ints);
max pooling pads with -inf and a stride of None means the kernel size. A separate
check traces the ATen ops each function runs: convolution, pooling, unfold/im2col
and padding ops are forbidden (and torch.trace / matrix products in the as_strided
exercises), and all but pad1d/pad2d must go through as_strided.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.areas import area, item, requires
from conformance.compare import assert_close, fail, output_size, tensor_of
from conformance.course import probes
from conformance.strategies import (
    DTYPE, PAIR_FORMS, IntOrPair, TensorCase, ViewCase, exact_values, half_integers, int_or_pair, least_size, passed_as,
    tensors,
)
from under_test.sandbox import SubmissionRaised

pytestmark = [area("strided")]

# course: pad_value: float; tests.py passes -2.0, -3.0, 0.0, -1.0, conv1d/conv2d pass 0, maxpool2d -t.inf.
PAD_VALUES = st.one_of(half_integers, st.sampled_from([float("-inf"), float("inf")]))
negative_halves = st.integers(-8, -1).map(lambda v: v / 2)
# The course types pad1d's x as (batch, in_channels, width) and pad2d's as (batch, in_channels, height, width).
BATCH_AND_CHANNELS = st.tuples(st.integers(1, 3), st.integers(1, 3))


# ---- helpers ------------------------------------------------------------------------

def axis_formula(name: str, size: int, kernel: int, stride: int = 1, padding: int = 0) -> str:
    """The output-size formula for one axis, with the numbers filled in."""
    return (f"o{name} = floor(({name} + 2*padding - k{name}) / stride) + 1 = "
            f"floor(({size} + 2*{padding} - {kernel}) / {stride}) + 1 = "
            f"{output_size(size, kernel, stride, padding)}")


def checked_output(got: object, expected: torch.Tensor, call: str, formulas: list[str], hint: str = "") -> None:
    """Shape first (explained by the output-size formula), then dtype and values."""
    tensor = tensor_of(got, call)
    if tuple(tensor.shape) != tuple(expected.shape):
        fail(f"{call} returned shape {tuple(tensor.shape)}, expected {tuple(expected.shape)} from the output-size "
             f"formula: {'; '.join(formulas)}" + (f"\n{hint}" if hint else ""))
    assert_close(tensor, expected, call, hint=hint)


def layout_text(*arrays: torch.Tensor) -> str:
    return ", ".join(f"shape {tuple(a.shape)} stride {a.stride()} offset {a.storage_offset()}" for a in arrays)


STRIDES_FROM_X = "read the strides from x.stride() (not from the shape): the input may be a transposed, " \
                 "sliced or offset view"


# ---- as_strided exercises -----------------------------------------------------------------

def course_tensor(shape: tuple[int, ...], dtype: str = "float32") -> TensorCase:
    return TensorCase(exact_values(shape), dtype)


def course_view(view: dict) -> ViewCase:
    """One of tests.py's views into randn(30): size, stride and storage offset as the course passes them."""
    return ViewCase(exact_values((30,)), tuple(view["size"]), tuple(view["stride"]), view["offset"])


def course_matrix(probe: dict, name: str) -> TensorCase | ViewCase:
    return course_view(probe[name]) if isinstance(probe[name], dict) else course_tensor(probe[name])


# course: mat: Float[Tensor, "i j"], square; tests.py's test_trace: n = 0..9, zeros, eye, randint, contiguous (the
# views drawn here test what the exercise teaches: strides come from x.stride(); see strategies.LAYOUTS).
@st.composite
def square_matrices(draw) -> TensorCase:
    n = draw(st.integers(1, 5), label="n")
    return draw(tensors((n, n), dtype=draw(DTYPE, label="dtype")), label="mat")


def course_trace(probe: dict) -> dict:
    n = probe["n"]
    values = {"zeros": np.zeros((n, n)), "eye": np.eye(n), "randint": np.arange(n * n, dtype=np.float64).reshape(n, n) * 7 % 10}[probe["kind"]]
    return {"mat": TensorCase(values)}


# A 3x3 matrix whose rows are not n + 1 elements apart along the diagonal (every other column of a wider one): what
# tells mat.stride(0) + mat.stride(1) from the n + 1 of a contiguous matrix, whatever the draws.
SPACED_MATRIX = TensorCase(exact_values((3, 3)), layout="strided")


@requires("as_strided_trace")
@probes(course_trace)
@example(mat=SPACED_MATRIX)
@given(mat=square_matrices())
def test_as_strided_trace(sandbox, mat):
    """as_strided_trace(mat) equals torch.trace for square matrices in any memory layout."""
    n, mat = mat.shape[0], mat.build()
    got = sandbox.call("as_strided_trace", mat)
    assert_close(got, torch.trace(mat), f"as_strided_trace of a {n}x{n} matrix ({layout_text(mat)})",
                 hint="one step along the diagonal moves mat.stride(0) + mat.stride(1) elements in memory; "
                      + STRIDES_FROM_X)


# course: mat: Float[Tensor, "i j"], vec: Float[Tensor, "j"]; tests.py: (3, 4) and (4,), contiguous (test_mv) and
# as_strided views of randn(30) (test_mv2).
@st.composite
def mv_cases(draw):
    i, j, dtype = draw(st.integers(1, 4), label="i"), draw(st.integers(1, 4), label="j"), draw(DTYPE, label="dtype")
    return draw(tensors((i, j), dtype=dtype), label="mat"), draw(tensors((j,), dtype=dtype), label="vec")


@requires("as_strided_mv")
@probes(lambda p: {"case": (course_matrix(p, "mat"), course_matrix(p, "vec"))})
@given(case=mv_cases())
def test_as_strided_mv(sandbox, case):
    """as_strided_mv(mat, vec) equals mat @ vec, whatever the layout of mat and vec."""
    mat, vec = (c.build() for c in case)
    got = sandbox.call("as_strided_mv", mat, vec)
    assert_close(got, mat @ vec, f"as_strided_mv(mat, vec) with mat {layout_text(mat)}, vec {layout_text(vec)}",
                 hint="view vec as an (i, j) matrix with strides (0, vec.stride(0)); " + STRIDES_FROM_X)


# course: matA: Float[Tensor, "i j"], matB: Float[Tensor, "j k"]; tests.py: (3, 4) @ (4, 5), contiguous (test_mm)
# and as_strided views (test_mm2).
@st.composite
def mm_cases(draw):
    i, j, k = (draw(st.integers(1, 4), label=name) for name in "ijk")
    dtype = draw(DTYPE, label="dtype")
    return draw(tensors((i, j), dtype=dtype), label="matA"), draw(tensors((j, k), dtype=dtype), label="matB")


@requires("as_strided_mm")
@probes(lambda p: {"case": (course_matrix(p, "matA"), course_matrix(p, "matB"))})
@given(case=mm_cases())
def test_as_strided_mm(sandbox, case):
    """as_strided_mm(matA, matB) equals matA @ matB, whatever the layout of either matrix."""
    a, b = (c.build() for c in case)
    got = sandbox.call("as_strided_mm", a, b)
    assert_close(got, a @ b, f"as_strided_mm(matA, matB) with matA {layout_text(a)}, matB {layout_text(b)}",
                 hint="view both as (i, j, k): matA with strides (sA0, sA1, 0), matB with (0, sB0, sB1), "
                      "then multiply and sum over j; " + STRIDES_FROM_X)


# ---- minimal convolutions ------------------------------------------------------------------

def course_conv(probe: dict, dtype: str = "float32") -> dict:
    """x and weights of the shapes a course test draws (float32, or float64 for conv2d_minimal), contiguous."""
    return {"case": (course_tensor(tuple(probe["x"]), dtype), course_tensor(tuple(probe["weights"]), dtype))}


# course: x: Float[Tensor, "width"], weights: Float[Tensor, "kernel_width"], width >= kernel_width; tests.py: w 10-29,
# kw 1-9, float32, contiguous (as for the other minimal convolutions; views as for as_strided_trace).
@st.composite
def conv1d_simple_cases(draw):
    kw, extra, dtype = draw(st.integers(1, 4), label="kw"), draw(st.integers(0, 4), label="extra"), draw(DTYPE)
    return draw(tensors((kw + extra,), dtype=dtype), label="x"), draw(tensors((kw,), dtype=dtype), label="weights")


@requires("conv1d_minimal_simple")
@probes(course_conv)
@given(case=conv1d_simple_cases())
def test_conv1d_minimal_simple(sandbox, case):
    """conv1d_minimal_simple(x, weights) equals F.conv1d for 1-D x and kernel, in any memory layout."""
    x, weights = (c.build() for c in case)
    w, kw = x.shape[0], weights.shape[0]
    got = sandbox.call("conv1d_minimal_simple", x, weights)
    expected = F.conv1d(x[None, None], weights[None, None])[0, 0]
    checked_output(got, expected, f"conv1d_minimal_simple(x, weights) with x {layout_text(x)}, kw={kw}",
                   [axis_formula("w", w, kw)],
                   hint="windows are x.as_strided((ow, kw), (s, s)) with s = x.stride(0); " + STRIDES_FROM_X)


# course: x: (batch, in_channels, width), weights: (out_channels, in_channels, kernel_width); tests.py: b 1-9, ci/co
# 1-4, kw 1-9, float32.
@st.composite
def conv1d_minimal_cases(draw):
    b, ic, oc, kw = (draw(st.integers(1, n), label=name) for n, name in ((3, "b"), (3, "ic"), (3, "oc"), (4, "kw")))
    w, dtype = kw + draw(st.integers(0, 4), label="extra"), draw(DTYPE, label="dtype")
    return draw(tensors((b, ic, w), dtype=dtype), label="x"), draw(tensors((oc, ic, kw), dtype=dtype), label="weights")


@requires("conv1d_minimal")
@probes(course_conv)
@given(case=conv1d_minimal_cases())
def test_conv1d_minimal(sandbox, case):
    """conv1d_minimal(x, weights) equals F.conv1d (stride 1, no padding) on (b, ic, w) inputs in any layout."""
    x, weights = (c.build() for c in case)
    w, kw = x.shape[-1], weights.shape[-1]
    got = sandbox.call("conv1d_minimal", x, weights)
    checked_output(got, F.conv1d(x, weights), f"conv1d_minimal(x, weights) with x {layout_text(x)}, "
                   f"weights shape {tuple(weights.shape)}", [axis_formula("w", w, kw)],
                   hint="output (b, oc, ow); sum over ic and kw; " + STRIDES_FROM_X)


# course: x: (batch, in_channels, height, width), weights: (out_channels, in_channels, kernel_height, kernel_width);
# tests.py: non-square kernels 1-9, float64.
@st.composite
def conv2d_minimal_cases(draw):
    b, ic, oc = (draw(st.integers(1, n), label=name) for n, name in ((2, "b"), (3, "ic"), (3, "oc")))
    kh, kw = draw(st.integers(1, 3), label="kh"), draw(st.integers(1, 3), label="kw")
    h, w = kh + draw(st.integers(0, 3), label="extra h"), kw + draw(st.integers(0, 3), label="extra w")
    dtype = draw(DTYPE, label="dtype")
    return (draw(tensors((b, ic, h, w), dtype=dtype), label="x"),
            draw(tensors((oc, ic, kh, kw), dtype=dtype), label="weights"))


@requires("conv2d_minimal")
@probes(lambda p: course_conv(p, "float64"))
@given(case=conv2d_minimal_cases())
def test_conv2d_minimal(sandbox, case):
    """conv2d_minimal(x, weights) equals F.conv2d (stride 1, no padding), non-square kernels, any layout."""
    x, weights = (c.build() for c in case)
    (h, w), (kh, kw) = x.shape[2:], weights.shape[2:]
    got = sandbox.call("conv2d_minimal", x, weights)
    checked_output(got, F.conv2d(x, weights), f"conv2d_minimal(x, weights) with x {layout_text(x)}, "
                   f"weights shape {tuple(weights.shape)}", [axis_formula("h", h, kh), axis_formula("w", w, kw)],
                   hint="output (b, oc, oh, ow); the kernel need not be square; " + STRIDES_FROM_X)


# ---- padding --------------------------------------------------------------------------------

def course_pad(probe: dict) -> dict:
    """tests.py's pad tests: arange(4).float() viewed as `shape`, the other arguments positional."""
    return {"case": (TensorCase(np.arange(4.0).reshape(probe["shape"])), *probe["args"])}


# course: pad1d(x (batch, in_channels, width), left: int, right: int, pad_value: float): tests.py passes them
# positionally on (1, 1, 4) and (1, 2, 2), conv1d by keyword (its padding as left and right).
@st.composite
def pad1d_cases(draw):
    lead, w, dtype = draw(BATCH_AND_CHANNELS, label="lead"), draw(st.integers(1, 5), label="w"), draw(DTYPE)
    left, right = draw(st.integers(0, 3), label="left"), draw(st.integers(0, 3), label="right")
    return draw(tensors((*lead, w), dtype=dtype), label="x"), left, right, draw(PAD_VALUES, label="pad_value")


@requires("pad1d")
@probes(course_pad)
@given(case=pad1d_cases())
def test_pad1d(sandbox, case):
    """pad1d(x, left, right, pad_value) equals F.pad(x, (left, right), value=pad_value), keeping x's dtype."""
    x, left, right, pad_value = case
    x = x.build()
    got = tensor_of(sandbox.call("pad1d", x, left, right, pad_value), "pad1d")
    call = f"pad1d(x, left={left}, right={right}, pad_value={pad_value}) with x of shape {tuple(x.shape)}"
    expected = F.pad(x, (left, right), value=pad_value)
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{call} returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}: only the last "
             "dimension grows, to left + w + right")
    assert_close(got, expected, call, hint="make the result with x.new_full(...) so it keeps x's dtype and "
                 "device, then copy x into out[..., left:left + w]")


# course: pad2d(x (batch, in_channels, height, width), left, right, top, bottom: int, pad_value: float): tests.py
# passes them positionally on (1, 1, 2, 2) and (1, 2, 2, 1), conv2d and maxpool2d by keyword (float64 from conv2d).
@st.composite
def pad2d_cases(draw):
    lead, dtype = draw(BATCH_AND_CHANNELS, label="lead"), draw(DTYPE, label="dtype")
    h, w = draw(st.integers(1, 4), label="h"), draw(st.integers(1, 4), label="w")
    sides = tuple(draw(st.integers(0, 3), label=name) for name in ("left", "right", "top", "bottom"))
    return (draw(tensors((*lead, h, w), dtype=dtype), label="x"), *sides, draw(PAD_VALUES, label="pad_value"))


@requires("pad2d")
@probes(course_pad)
@given(case=pad2d_cases())
def test_pad2d(sandbox, case):
    """pad2d(x, left, right, top, bottom, pad_value) equals F.pad(x, (left, right, top, bottom), value=...)."""
    x, left, right, top, bottom, pad_value = case
    x = x.build()
    got = tensor_of(sandbox.call("pad2d", x, left, right, top, bottom, pad_value), "pad2d")
    call = (f"pad2d(x, left={left}, right={right}, top={top}, bottom={bottom}, pad_value={pad_value}) "
            f"with x of shape {tuple(x.shape)}")
    expected = F.pad(x, (left, right, top, bottom), value=pad_value)
    order = "the argument order is left, right, top, bottom: left/right pad the width (last dimension), " \
            "top/bottom the height (second to last)"
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{call} returned shape {tuple(got.shape)}, expected {tuple(expected.shape)} = "
             f"(..., top + h + bottom, left + w + right); {order}")
    assert_close(got, expected, call, hint=f"{order}; make the result with x.new_full(...) so it keeps x's "
                 "dtype and device")


# ---- conv1d -----------------------------------------------------------------------------------

# course: conv1d(x (batch, in_channels, width), weights, stride: int = 1, padding: int = 0); tests.py passes stride
# 1-4 and padding 0-4 by keyword (numpy ints from np.random.randint; Python ints here), float32.
@st.composite
def conv1d_cases(draw, strides: tuple[int, int], paddings: tuple[int, int], min_windows: int = 1):
    """x (b, ic, w), weights (oc, ic, kw), stride, padding; w + 2p >= kw + (min_windows - 1) * stride."""
    dtype = draw(DTYPE, label="dtype")
    stride = draw(st.integers(*strides), label="stride")
    padding = draw(st.integers(*paddings), label="padding")
    kw = draw(st.integers(1, 4), label="kw")
    least = least_size(kw, padding, stride, min_windows)
    w = draw(st.integers(least, least + 4), label="w")
    b, ic, oc = (draw(st.integers(1, n), label=name) for n, name in ((2, "b"), (3, "ic"), (3, "oc")))
    x = draw(tensors((b, ic, w), dtype=dtype), label="x").build()
    weights = draw(tensors((oc, ic, kw), dtype=dtype), label="weights").build()
    return x, weights, stride, padding


def passed(omitted: tuple[str, ...], **arguments) -> dict:
    """The keyword arguments of a call that leaves out `omitted` (each at its default, the course's signature's)."""
    return {name: value for name, value in arguments.items() if name not in omitted}


def shown(arguments: dict) -> str:
    return "".join(f", {name}={value!r}" for name, value in arguments.items())


def left_out(omitted: tuple[str, ...], defaults: str) -> str:
    """What a call's description adds when it leaves arguments out."""
    return f" ({' and '.join(omitted)} left out: the signature's defaults are {defaults})" if omitted else ""


def check_conv1d(sandbox, x, weights, stride, padding, omitted=(), *, hint):
    kwargs = passed(omitted, stride=stride, padding=padding)
    got = sandbox.call("conv1d", x, weights, **kwargs)
    w, kw = x.shape[-1], weights.shape[-1]
    default = left_out(omitted, "stride=1, padding=0")
    checked_output(got, F.conv1d(x, weights, stride=stride, padding=padding),
                   f"conv1d(x, weights{shown(kwargs)}){default} with x {layout_text(x)}, "
                   f"weights shape {tuple(weights.shape)}", [axis_formula("w", w, kw, stride, padding)], hint=hint)


def course_conv1d(probe: dict) -> dict:
    """tests.py's test_conv1d: float32, stride and padding by keyword."""
    x = torch.tensor(exact_values((probe["batch"], probe["in_channels"], probe["width"])), dtype=torch.float32)
    weights = torch.tensor(exact_values((probe["out_channels"], probe["in_channels"], probe["kernel"])),
                           dtype=torch.float32)
    return {"case": (x, weights, probe["stride"], probe["padding"])}


# Defaults by omission: conv1d(x, weights), the signature's stride=1 and padding=0.
CONV1D_DEFAULTS = course_conv1d({"batch": 2, "in_channels": 2, "out_channels": 3, "width": 7, "kernel": 3,
                                 "stride": 1, "padding": 0})["case"] + (("stride", "padding"),)


@requires("conv1d")
@probes(course_conv1d)
@example(case=CONV1D_DEFAULTS)
@given(case=conv1d_cases(strides=(1, 3), paddings=(0, 2)))
def test_conv1d(sandbox, case):
    """conv1d(x, weights, stride, padding) equals F.conv1d (bias-free) for strides 1-3 and paddings 0-2."""
    check_conv1d(sandbox, *case, hint="zero-pad both ends by padding, then take windows every stride elements; "
                 + STRIDES_FROM_X)


@item("3")
@requires("conv1d")
@given(case=conv1d_cases(strides=(2, 3), paddings=(0, 0), min_windows=2))
def test_conv1d_stride_changes_output_grid(sandbox, case):
    """Stride > 1 changes the output grid: conv1d with stride 2 or 3 keeps every stride-th window."""
    check_conv1d(sandbox, *case, hint="with stride s, window o starts at element o*s: step the view's window "
                 "dimension by s * x.stride(-1) and use ow = floor((w + 2p - kw) / s) + 1")


# ---- conv2d -----------------------------------------------------------------------------------

# course: conv2d(x, weights, stride: IntOrPair = 1, padding: IntOrPair = 0): an int or a pair (the hint); tests.py
# passes tuples of np.int64 by keyword, non-square kernels, float64. Forms: `PAIR_FORMS`.
@st.composite
def conv2d_cases(draw, strides: tuple[int, int], paddings: tuple[int, int], min_windows: int = 1):
    """x (b, ic, h, w), weights (oc, ic, kh, kw) and stride/padding as passed; valid by construction."""
    dtype = draw(DTYPE, label="dtype")
    stride = draw(int_or_pair(*strides), label="stride")
    padding = draw(int_or_pair(*paddings), label="padding")
    kernel, size = [], []
    for axis in range(2):
        k = draw(st.integers(1, 3), label=f"k{'hw'[axis]}")
        least = least_size(k, padding.pair[axis], stride.pair[axis], min_windows)
        kernel.append(k)
        size.append(draw(st.integers(least, least + 3), label="hw"[axis]))
    b, ic, oc = (draw(st.integers(1, n), label=name) for n, name in ((2, "b"), (2, "ic"), (3, "oc")))
    x = draw(tensors((b, ic, *size), dtype=dtype), label="x").build()
    weights = draw(tensors((oc, ic, *kernel), dtype=dtype), label="weights").build()
    return x, weights, stride, padding


PAIR_HINT = ("an int-or-pair argument is an int (the same on both axes) or a tuple (h, w): turn it into a pair with "
             "force_pair before unpacking it")


def check_conv2d(sandbox, x, weights, stride: IntOrPair, padding: IntOrPair, omitted=(), *, hint):
    kwargs = passed(omitted, stride=stride, padding=padding)
    try:
        got = sandbox.call("conv2d", x, weights, **{name: value.passed for name, value in kwargs.items()})
    except SubmissionRaised as error:
        error.add_note(f"conv2d was called as conv2d(x, weights{shown(kwargs)}): {PAIR_HINT}")
        raise
    formulas = [axis_formula(name, x.shape[2 + a], weights.shape[2 + a], stride.pair[a], padding.pair[a])
                for a, name in enumerate("hw")]
    default = left_out(omitted, "stride=1, padding=0")
    checked_output(got, F.conv2d(x, weights, stride=stride.pair, padding=padding.pair),
                   f"conv2d(x, weights{shown(kwargs)}){default} with x {layout_text(x)}, "
                   f"weights shape {tuple(weights.shape)}", formulas, hint=hint)


def course_conv2d(probe: dict) -> dict:
    """tests.py's test_conv2d: float64, stride and padding tuples of np.int64 by keyword, a non-square kernel."""
    x = torch.tensor(exact_values((probe["batch"], probe["in_channels"], *probe["size"])), dtype=torch.float64)
    weights = torch.tensor(exact_values((probe["out_channels"], probe["in_channels"], *probe["kernel"])),
                           dtype=torch.float64)
    as_passed = [IntOrPair(PAIR_FORMS["numpy tuple"](*probe[name]), tuple(probe[name])) for name in ("stride", "padding")]
    return {"case": (x, weights, *as_passed)}


# Defaults by omission: conv2d(x, weights), the signature's stride=1 and padding=0.
CONV2D_DEFAULTS = course_conv2d({"batch": 2, "in_channels": 2, "out_channels": 3, "size": (5, 6), "kernel": (2, 3),
                                 "stride": (1, 1), "padding": (0, 0)})["case"] + (("stride", "padding"),)


@requires("conv2d")
@probes(course_conv2d)
@example(case=CONV2D_DEFAULTS)
@given(case=conv2d_cases(strides=(1, 3), paddings=(0, 2)))
def test_conv2d(sandbox, case):
    """conv2d(x, weights, stride, padding) equals F.conv2d; stride and padding an int or a pair."""
    check_conv2d(sandbox, *case, hint="turn stride and padding into (h, w) pairs with force_pair (an int means "
                 "the same value on both axes; a tuple's elements may be numpy ints), zero-pad, then take strided windows; "
                 + STRIDES_FROM_X)


@item("3")
@requires("conv2d")
@given(case=conv2d_cases(strides=(2, 3), paddings=(0, 0), min_windows=2))
def test_conv2d_stride_changes_output_grid(sandbox, case):
    """Stride > 1 changes the output grid: conv2d with strides 2-3 (per axis) keeps every stride-th window."""
    check_conv2d(sandbox, *case, hint="with stride (sh, sw), window (i, j) starts at row i*sh, column j*sw: "
                 "step the view by sh * x.stride(-2) and sw * x.stride(-1), and use oh = floor((h + 2p - kh) / sh) "
                 "+ 1 (likewise ow with sw)")


# ---- maxpool2d --------------------------------------------------------------------------------

# course: maxpool2d(x, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0); tests.py
# passes the kernel positionally, stride (None or a pair) and padding (p <= k // 2) by keyword, all np.int64 tuples.
@st.composite
def maxpool_cases(draw, kernels=(1, 3), strides=(1, 3), stride_none=True, paddings=(0, None), min_windows=1,
                  elements=half_integers):
    """x (b, c, h, w), kernel, stride, padding <= kernel // 2 (as torch requires).

    The stride is None (the kernel size) or drawn from `strides`; `strides=None` means always None,
    `stride_none=False` never None. Padding per axis is in `paddings`, capped at kernel // 2.
    """
    dtype = draw(DTYPE, label="dtype")
    kernel = draw(int_or_pair(*kernels), label="kernel_size")
    none = strides is None or (stride_none and draw(st.booleans(), label="stride is None"))
    stride = None if none else draw(int_or_pair(*strides), label="stride")
    step = stride.pair if stride is not None else kernel.pair
    low, high = paddings
    padding = draw(passed_as(tuple(draw(st.integers(low, k // 2 if high is None else min(high, k // 2)), label="padding")
                                   for k in kernel.pair)))
    size = []
    for axis in range(2):
        least = least_size(kernel.pair[axis], padding.pair[axis], step[axis], min_windows)
        size.append(draw(st.integers(least, least + 3), label="hw"[axis]))
    b, c = draw(st.integers(1, 2), label="b"), draw(st.integers(1, 3), label="c")
    x = draw(tensors((b, c, *size), dtype=dtype, elements=elements), label="x").build()
    return x, kernel, stride, padding


def check_maxpool2d(sandbox, x, kernel: IntOrPair, stride: IntOrPair | None, padding: IntOrPair, omitted=(), *, hint):
    kwargs = passed(omitted, stride=stride, padding=padding)
    try:
        got = sandbox.call("maxpool2d", x, kernel.passed,
                           **{name: None if value is None else value.passed for name, value in kwargs.items()})
    except SubmissionRaised as error:
        error.add_note(f"maxpool2d was called as maxpool2d(x, {kernel!r}{shown(kwargs)}): {PAIR_HINT}")
        raise
    step = kernel.pair if stride is None else stride.pair
    formulas = [axis_formula(name, x.shape[2 + a], kernel.pair[a], step[a], padding.pair[a])
                for a, name in enumerate("hw")]
    default = left_out(omitted, "stride=None (the kernel size), padding=0")
    expected = F.max_pool2d(x, kernel.pair, stride=step, padding=padding.pair)
    checked_output(got, expected, f"maxpool2d(x, kernel_size={kernel!r}{shown(kwargs)}){default} with x "
                   f"{layout_text(x)}", formulas, hint=hint)


def course_maxpool2d(probe: dict) -> dict:
    """tests.py's test_maxpool2d: float32, the kernel a tuple of np.int64, stride None or a tuple, padding a tuple."""
    x = torch.tensor(exact_values((probe["batch"], probe["channels"], *probe["size"])), dtype=torch.float32)
    kernel, stride, padding = (None if probe[name] is None else
                               IntOrPair(PAIR_FORMS["numpy tuple"](*probe[name]), tuple(probe[name]))
                               for name in ("kernel", "stride", "padding"))
    return {"case": (x, kernel, stride, padding)}


# Defaults by omission: maxpool2d(x, kernel_size), the signature's stride=None (the kernel size) and padding=0.
MAXPOOL2D_DEFAULTS = course_maxpool2d({"batch": 2, "channels": 2, "size": (6, 7), "kernel": (2, 3), "stride": None,
                                       "padding": (0, 0)})["case"] + (("stride", "padding"),)


@requires("maxpool2d")
@probes(course_maxpool2d)
@example(case=MAXPOOL2D_DEFAULTS)
@given(case=maxpool_cases())
def test_maxpool2d(sandbox, case):
    """maxpool2d(x, kernel_size, stride, padding) equals F.max_pool2d; int or pair arguments."""
    check_maxpool2d(sandbox, *case, hint="force_pair the kernel, stride (None means the kernel size) and padding; "
                    "pad with -inf, take strided windows and their max; " + STRIDES_FROM_X)


@requires("maxpool2d")
@given(case=maxpool_cases(kernels=(2, 3), strides=None, paddings=(0, 0), min_windows=2))
def test_maxpool2d_default_stride_is_kernel(sandbox, case):
    """maxpool2d called without a stride uses stride = kernel_size (non-overlapping windows)."""
    x, kernel, stride, padding = case
    check_maxpool2d(sandbox, x, kernel, stride, padding, ("stride",),
                    hint="stride defaults to None, which means the kernel size: `if stride is None: stride = "
                         "kernel_size`")


@requires("maxpool2d")
@given(case=maxpool_cases(kernels=(2, 3), strides=(1, 2), stride_none=False, paddings=(1, None),
                           elements=negative_halves))
def test_maxpool2d_pads_with_minus_infinity(sandbox, case):
    """maxpool2d pads with -inf: on all-negative inputs the padding never wins a window's max."""
    check_maxpool2d(sandbox, *case, hint="pad with -inf (pad2d(..., pad_value=-inf)), not 0: a zero pad "
                    "beats every negative value in the windows at the border")


@item("3")
@requires("maxpool2d")
@given(case=maxpool_cases(strides=(2, 3), stride_none=False, paddings=(0, 0), min_windows=2))
def test_maxpool2d_stride_changes_output_grid(sandbox, case):
    """Stride > 1 changes the output grid: maxpool2d with an explicit stride of 2-3 per axis."""
    check_maxpool2d(sandbox, *case, hint="with stride (sh, sw), window (i, j) starts at row i*sh, column j*sw "
                    "(independently of the kernel size): step the view by sh * x.stride(-2) and sw * x.stride(-1)")


# ---- only as_strided does the work --------------------------------------------------------------

FORBIDDEN = re.compile(r"conv(?!ert)|pool|unfold|im2col|col2im|pad")
MATMUL_OPS = {"mv", "mm", "addmv", "addmm", "dot", "vdot", "matmul", "linear"}
ORACLE_OPS = {"as_strided_trace": {"trace"}, "as_strided_mv": MATMUL_OPS, "as_strided_mm": MATMUL_OPS}
NO_AS_STRIDED_NEEDED = {"pad1d", "pad2d"}


def ops_inputs(name: str) -> tuple[tuple, dict]:
    """Small valid float64 arguments for each from-scratch function (stride and padding > 0 where taken).

    Ranks and argument forms within the course's API, as the strategies above state them (int-or-pair as ints).
    """
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randint(-4, 5, shape, generator=gen).to(torch.float64) / 2

    return {
        "as_strided_trace": ((r(3, 3),), {}),
        "as_strided_mv": ((r(3, 4), r(4)), {}),
        "as_strided_mm": ((r(3, 4), r(4, 2)), {}),
        "conv1d_minimal_simple": ((r(6), r(3)), {}),
        "conv1d_minimal": ((r(2, 2, 6), r(3, 2, 3)), {}),
        "conv2d_minimal": ((r(2, 2, 5, 6), r(3, 2, 2, 3)), {}),
        "pad1d": ((r(2, 2, 5), 1, 2, 0.0), {}),
        "pad2d": ((r(2, 2, 3, 4), 1, 2, 2, 1, 0.0), {}),
        "conv1d": ((r(2, 2, 7), r(3, 2, 3)), {"stride": 2, "padding": 1}),
        "conv2d": ((r(2, 2, 6, 7), r(3, 2, 3, 2)), {"stride": 2, "padding": 1}),
        "maxpool2d": ((r(2, 2, 6, 7), 3), {"stride": 2, "padding": 1}),
    }[name]


FUNCTIONS = ["as_strided_trace", "as_strided_mv", "as_strided_mm", "conv1d_minimal_simple", "conv1d_minimal",
             "conv2d_minimal", "pad1d", "pad2d", "conv1d", "conv2d", "maxpool2d"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=requires(n), id=n) for n in FUNCTIONS])
def test_only_as_strided_does_the_work(sandbox, name):
    """The from-scratch function runs no convolution, pooling, unfold or padding op, and uses as_strided."""
    args, kwargs = ops_inputs(name)
    _, ops = sandbox.call(name, *args, trace=True, **kwargs)
    allowed = "only as_strided, sums, einsum and max reductions may do the work in the from-scratch functions " \
              "(padding is done by writing x into a new tensor made with x.new_full)"
    seen = sorted(op for op in ops if FORBIDDEN.search(op) or op in ORACLE_OPS.get(name, ()))
    if seen:
        fail(f"{name} ran the ATen op(s) {', '.join(seen)} (a torch function that does the exercise's work "
             f"for you, such as F.conv2d, F.max_pool2d, F.pad, Tensor.unfold or the matrix product); {allowed}. "
             f"All ops seen: {', '.join(sorted(ops))}")
    if name not in NO_AS_STRIDED_NEEDED and "as_strided" not in ops:
        fail(f"{name} never called as_strided (ops seen: {', '.join(sorted(ops)) or 'none'}): build the windows "
             f"or the diagonal as an as_strided view of the input instead of Python loops, indexing or numpy; "
             f"{allowed}")
