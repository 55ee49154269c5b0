"""Area `pooling` (and rubric item 3, stride > 1 changes the output grid): MaxPool2d and AveragePool.

Oracles: `torch.nn.functional.max_pool2d(x, kernel_size, stride, padding)` (which pads
with -inf) and `x.mean(dim=(2, 3))`, computed in the harness. MaxPool2d follows the
course's convention, `MaxPool2d(kernel_size, stride=None, padding=1)`: padding defaults
to 1 (torch's nn.MaxPool2d defaults to 0) and a stride of None means the kernel size.
MaxPool2d is given by the course: a submission that does not define it is not graded
on it (its checks are reported `given`).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.areas import area, item, requires
from conformance.compare import assert_close, fail, output_size, tensor_of
from conformance.course import probes
from conformance.probing import advise_on_repr, printable
from conformance.strategies import DTYPE, TensorCase, exact_values, least_size, tensors

pytestmark = [area("pooling")]



# course: MaxPool2d(kernel_size, stride=None, padding=1) is given, int arguments: the template's stem writes
# MaxPool2d(kernel_size=3, stride=2), the reference MaxPool2d(3, 2, 1); it pools (B, 64, H, W) float32 activations.
# AveragePool gets (B, C, H, W): tests.py's (1, 2, 3, 4), the ResNet's (B, 512, 7, 7).
@st.composite
def pool_inputs(draw, kernel: int, padding: int, dtype: str, extra: int = 4):
    """A (B, C, H, W) input at least as large as the kernel once padded."""
    low = least_size(kernel, padding)
    h = draw(st.integers(low, low + extra), label="H")
    w = draw(st.integers(low, low + extra), label="W")
    batch = draw(st.integers(1, 2), label="batch")
    channels = draw(st.integers(1, 3), label="channels")
    return draw(tensors((batch, channels, h, w), dtype=dtype), label="x")


def construct_maxpool(sandbox, passed: dict, positional: bool):
    """MaxPool2d with these arguments (a prefix of kernel_size, stride, padding when positional)."""
    if positional:
        return sandbox.construct("MaxPool2d", *passed.values())
    return sandbox.construct("MaxPool2d", **passed)


def call_text(passed: dict, positional: bool) -> str:
    inside = ", ".join(repr(v) for v in passed.values()) if positional else \
        ", ".join(f"{k}={v!r}" for k, v in passed.items())
    return f"MaxPool2d({inside})"


def check_maxpool(sandbox, passed: dict, positional: bool, x: torch.Tensor, stride: int, padding: int,
                  hint: str) -> None:
    """The submission's MaxPool2d(**passed) on x equals F.max_pool2d with the meant stride and padding."""
    kernel = passed["kernel_size"]
    handle = construct_maxpool(sandbox, passed, positional)
    got = sandbox.call(handle, x)
    expected = F.max_pool2d(x, kernel, stride, padding)
    what = f"{call_text(passed, positional)} on an input of shape {tuple(x.shape)}"
    out = tensor_of(got, what)
    grid = (output_size(x.shape[-2], kernel, stride, padding), output_size(x.shape[-1], kernel, stride, padding))
    if tuple(out.shape[-2:]) != grid:
        fail(f"{what}: output grid {tuple(out.shape[-2:])} (full shape {tuple(out.shape)}); with kernel_size={kernel}, "
             f"stride={stride}, padding={padding} the grid is {grid}, each side (size + 2 * padding - kernel_size) "
             f"// stride + 1\n{hint}")
    assert_close(out, expected, what, hint=hint)


# course: int kernel_size, stride and padding (p <= k // 2), positional or keyword (see pool_inputs).
@st.composite
def maxpool_cases(draw):
    """(kernel_size, padding, positional, x) for MaxPool2d(kernel_size, stride=1, padding=padding)."""
    kernel, positional = draw(st.integers(1, 4), label="kernel"), draw(st.booleans(), label="positional")
    dtype = draw(DTYPE, label="dtype")
    padding = draw(st.integers(0, kernel // 2), label="padding")
    return kernel, padding, positional, draw(pool_inputs(kernel, padding, dtype), label="x")


def course_maxpool(probe: dict) -> dict:
    """The old tests.py's test_maxpool2d_module shapes and windows, by keyword, with the ints the course's MaxPool2d
    takes now (its tuples were the old era's)."""
    x = TensorCase(exact_values((probe["batch"], probe["channels"], *probe["size"])))
    return {"case": (probe["kernel"], probe["padding"], False, x)}


@requires("MaxPool2d")
@probes(course_maxpool)
@given(case=maxpool_cases())
def test_maxpool_forward_matches_max_pool2d(sandbox, case):
    """MaxPool2d(k, stride=1, padding=p) takes the max of each window, padding with -inf (p <= k // 2)."""
    kernel, padding, positional, x = case
    x = x.build()
    passed = dict(kernel_size=kernel, stride=1, padding=padding)
    check_maxpool(sandbox, passed, positional, x, 1, padding,
                  hint="forward is F.max_pool2d(x, self.kernel_size, self.stride, self.padding); the padding counts "
                       "as -inf (never as 0, which would beat every negative value)")


# course: int kernel_size, stride and padding (p <= k // 2), positional or keyword (see pool_inputs).
@given(data=st.data(), kernel=st.integers(1, 4), stride=st.integers(2, 4), positional=st.booleans(), dtype=DTYPE)
@requires("MaxPool2d")
@item("3")
def test_maxpool_stride_changes_output_grid(sandbox, data, kernel, stride, positional, dtype):
    """MaxPool2d(k, stride=s, padding=p) with s > 1 moves the window s pixels at a time: a coarser output grid."""
    padding = data.draw(st.integers(0, kernel // 2), label="padding")
    x = data.draw(pool_inputs(kernel, padding, dtype, extra=6), label="x").build()
    passed = dict(kernel_size=kernel, stride=stride, padding=padding)
    check_maxpool(sandbox, passed, positional, x, stride, padding,
                  hint="pass self.stride on to F.max_pool2d: the window moves `stride` pixels at a time, so the output "
                       "grid shrinks by that factor")


# course: the signature's stride=None, omitted or passed (the old tests.py's test_maxpool2d_module passed stride=None).
@st.composite
def default_stride_cases(draw):
    """(kernel, form, padding, x) for MaxPool2d(kernel) with its stride omitted or None."""
    kernel = draw(st.integers(2, 4), label="kernel")
    form = draw(st.sampled_from(["omitted", "None positional", "None keyword"]), label="form")
    padding = draw(st.integers(0, kernel // 2), label="padding")
    return kernel, form, padding, draw(pool_inputs(kernel, padding, draw(DTYPE, label="dtype"), extra=6), label="x")


# MaxPool2d(2) with its stride left out, on a 4x4 image: a 2x2 grid, 3x3 with a stride of 1 (whatever the draws).
STRIDE_OMITTED = (2, "omitted", 0, TensorCase(exact_values((1, 1, 4, 4))))


@example(case=STRIDE_OMITTED)
@given(case=default_stride_cases())
@requires("MaxPool2d")
@item("3")
def test_maxpool_default_stride_is_kernel_size(sandbox, case):
    """MaxPool2d(k) (or stride=None) uses stride k: non-overlapping windows, an output grid k times coarser."""
    kernel, form, padding, x = case
    x = x.build()
    if form == "omitted":
        passed, positional = dict(kernel_size=kernel, padding=padding), False
    else:
        passed, positional = dict(kernel_size=kernel, stride=None, padding=padding), form == "None positional"
    check_maxpool(sandbox, passed, positional, x, kernel, padding,
                  hint="a stride of None (the default) means stride = kernel_size, as in torch; do not default "
                       "the stride to 1")


# course: padding omitted, MaxPool2d(k) or MaxPool2d(k, s) positional, as the stem's MaxPool2d(3, 2) relies on.
@given(data=st.data(), kernel=st.integers(2, 4), stride=st.sampled_from([None, 1, 2, 3]), dtype=DTYPE)
@requires("MaxPool2d")
def test_maxpool_default_padding_is_one(sandbox, data, kernel, stride, dtype):
    """MaxPool2d(k, s) pads by 1 (the course's default, unlike torch's 0): MaxPool2d(3, 2) maps 112x112 to 56x56."""
    x = data.draw(pool_inputs(kernel, 0, dtype, extra=6), label="x").build()  # >= kernel: valid unpadded too
    passed = dict(kernel_size=kernel) if stride is None else dict(kernel_size=kernel, stride=stride)
    check_maxpool(sandbox, passed, True, x, stride or kernel, 1,
                  hint="the course's MaxPool2d is MaxPool2d(kernel_size, stride=None, padding=1): a ResNet stem "
                       "written MaxPool2d(3, 2) relies on that padding to turn 112x112 into 56x56 (55x55 without it)")


@requires("MaxPool2d")
def test_maxpool_repr_shows_arguments(sandbox, advise):
    """print(MaxPool2d(kernel_size=5, stride=3, padding=2)) works (what it shows is advised on, never failed)."""
    args = dict(kernel_size=5, stride=3, padding=2)
    what = "MaxPool2d(kernel_size=5, stride=3, padding=2)"
    text = printable(sandbox, sandbox.construct("MaxPool2d", **args), what)
    advise_on_repr(advise, text, what, args)


@requires("AveragePool")
def test_averagepool_fixed_example(sandbox):
    """A fixed example anyone can reproduce: AveragePool()(arange(24).view(1, 2, 3, 4)) is [[5.5, 17.5]]."""
    x = torch.arange(24, dtype=torch.float32).view(1, 2, 3, 4)
    got = sandbox.call(sandbox.construct("AveragePool"), x)
    assert_close(got, torch.tensor([[5.5, 17.5]]), "AveragePool() on t.arange(24.0).view(1, 2, 3, 4)",
                 hint="average each channel over height and width: x.mean(dim=(2, 3)), giving shape (B, C)")


@given(x=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))
       .flatmap(lambda shape: tensors(shape)))  # course: (B, C, H, W), see pool_inputs
@requires("AveragePool")
def test_averagepool_means_over_height_and_width(sandbox, x):
    """AveragePool maps (B, C, H, W) to (B, C), each value the mean of its channel's H x W map."""
    inp = x.build()
    got = sandbox.call(sandbox.construct("AveragePool"), inp)
    assert_close(got, inp.mean(dim=(2, 3)), f"AveragePool() on an input of shape {tuple(inp.shape)}",
                 hint="global average pooling is x.mean(dim=(2, 3)): the mean (not the sum) over height and width "
                      "only, without keepdim, so the result is (B, C) and feeds Linear(512, n_classes) directly")


@requires("AveragePool")
def test_averagepool_repr(sandbox):
    """print(AveragePool()) works."""
    printable(sandbox, sandbox.construct("AveragePool"), "AveragePool()")
