"""Area `conv` (rubric item 1, locality: one shared filter at every position): the Conv2d module.

Oracle: `torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding)` computed
in the harness with the submission's own `weight` (read back from its state_dict), so
the forward check does not depend on the random initialisation. The initialisation
is judged on its own, statistically, on layers large enough that a correct
U(-1/sqrt(in*k*k), +1/sqrt(in*k*k)) init passes for every seed. Locality is checked
as a property of the submission alone: shifting the picture shifts the feature map.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from conformance.areas import area, requires
from conformance.compare import assert_close, assert_equal, fail, output_size, tensor_of
from conformance.course import probes
from conformance.probing import advise_on_repr, describe_state, printable, set_dtype, state_entries, state_tensors
from conformance.strategies import DTYPE, DTYPES, SEEDS, TensorCase, exact_values, least_size, make_tensor, tensors
from under_test.sandbox import SubmissionRaised

pytestmark = [area("conv"), requires("Conv2d")]

# Layers with >= 4096 weights: a correct init puts a weight within 2% of each end of
# its range with probability 1 - 1e-17, so the statistical checks below cannot flake.
INIT_LAYERS = [(32, 16, 3), (16, 32, 3), (8, 24, 5), (64, 64, 1)]  # course: Conv2d(100, 100, 3) in tests.py


# course: Conv2d(in_channels, out_channels, kernel_size: int, stride: int = 1, padding: int = 0), int arguments, square
# kernel; tests.py's runs: k 1-9, stride 1-4, padding 0-4, keyword; the ResNet: Conv2d(3, 64, 7, 2, 3), 3x3 padding 1,
# 1x1; forward (given: F.conv2d) gets (B, C, H, W), float32 (float64 here through .double()).
@st.composite
def conv_cases(draw, dtype: str | None = None, max_stride: int = 3):
    """(arguments, input) for one Conv2d call; the input is never smaller than the kernel."""
    kernel = draw(st.integers(1, 4), label="kernel_size")
    stride = draw(st.integers(1, max_stride), label="stride")
    padding = draw(st.integers(0, 2), label="padding")
    low = least_size(kernel, padding)
    h = draw(st.integers(low, low + 3), label="H")
    w = draw(st.integers(low, low + 3), label="W")
    batch = draw(st.integers(1, 2), label="batch")
    in_channels = draw(st.integers(1, 3), label="in_channels")
    out_channels = draw(st.integers(1, 3), label="out_channels")
    chosen = dtype or draw(DTYPE, label="dtype")
    x = draw(tensors((batch, in_channels, h, w), dtype=chosen), label="x")
    return dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                padding=padding), x


def conv_text(args: dict) -> str:
    return "Conv2d(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


def conv_weight(sandbox, handle, args: dict) -> torch.Tensor:
    """The submission's `weight`, checked to have the (out, in, k, k) shape F.conv2d expects."""
    what = conv_text(args)
    state = state_tensors(sandbox, handle, what)
    if "weight" not in state:
        fail(f"{what} has no `weight` in its state_dict (it has {sorted(state)}): register the kernel as "
             "self.weight = nn.Parameter(...), as torch.nn.Conv2d names it")
    weight = state["weight"]
    expected = (args["out_channels"], args["in_channels"], args["kernel_size"], args["kernel_size"])
    if tuple(weight.shape) != expected:
        fail(f"{what}.weight has shape {tuple(weight.shape)}; expected (out_channels, in_channels, kernel_size, "
             f"kernel_size) = {expected}, the layout F.conv2d and torchvision's weights use")
    return weight


def build(sandbox, args: dict, dtype: str, seed: int = 0, positional: bool = False):
    if positional:
        handle = sandbox.construct("Conv2d", *args.values(), seed=seed)
    else:
        handle = sandbox.construct("Conv2d", **args, seed=seed)
    set_dtype(sandbox, handle, dtype)
    return handle


def check_forward(sandbox, handle, args: dict, x: torch.Tensor, how: str = "") -> None:
    weight = conv_weight(sandbox, handle, args)
    got = sandbox.call(handle, x)
    expected = F.conv2d(x, weight.to(x.dtype), stride=args["stride"], padding=args["padding"])
    assert_close(got, expected, f"{conv_text(args)}{how} on an input of shape {tuple(x.shape)}",
                 hint="forward is F.conv2d(x, self.weight, stride=self.stride, padding=self.padding): "
                      "pass stride and padding by keyword (F.conv2d's third positional argument is the bias)")


@probes(lambda p: {"in_channels": p["in_channels"], "out_channels": p["out_channels"], "kernel": p["kernel_size"],
                   "stride": 1, "padding": 0})
@given(in_channels=st.integers(1, 4), out_channels=st.integers(1, 4), kernel=st.integers(1, 5),
       stride=st.integers(1, 3), padding=st.integers(0, 2))  # course: int arguments by keyword (conv_cases)
def test_conv2d_parameters_only_weight(sandbox, in_channels, out_channels, kernel, stride, padding):
    """Conv2d registers exactly one trainable parameter, `weight` of shape (out, in, k, k), and no bias."""
    args = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                padding=padding)
    what = conv_text(args)
    handle = sandbox.construct("Conv2d", **args)
    entries = state_entries(sandbox, handle, what)
    got = [(e.name, e.kind) for e in entries]
    if got != [("weight", "parameter")]:
        fail(f"{what} has state_dict entries [{describe_state(entries)}]; expected only the parameter `weight` "
             "(the course's Conv2d has no bias: the BatchNorm after each conv in a ResNet supplies the shift, "
             "and torchvision's resnet34 has no conv biases to copy)")
    conv_weight(sandbox, handle, args)
    if entries[0].tensor.dtype != torch.float32:
        fail(f"{what}.weight has dtype {entries[0].tensor.dtype}; expected torch.float32 (torch's default)")
    parameters = dict(sandbox.state(handle)["parameters"])
    if not parameters.get("weight"):
        fail(f"{what}.weight must be trainable (an nn.Parameter with requires_grad=True); got {parameters}")


def init_problems(weight: torch.Tensor, bound: float) -> list[str]:
    """What is wrong with `weight` as a sample of U(-bound, bound); empty when nothing is.

    For n >= 4096 independent U(-b, b) values: every value lies in [-b, b]; the largest is
    above 0.98 b and the smallest below -0.98 b except with probability < 1e-17; the
    sample standard deviation is within 5% of b / sqrt(3) (its relative spread is about
    0.7%, so 7 standard errors) and the mean within 0.1 b of 0 (11 standard errors).
    """
    w = weight.detach().to(torch.float64).flatten()
    problems = []
    slack = bound * (1 + 1e-5)  # float32 rounding of the bound
    if float(w.abs().max()) > slack:
        problems.append(f"{int((w.abs() > slack).sum())} of {w.numel()} values lie outside [-bound, bound] "
                        f"(largest magnitude {float(w.abs().max()):.4g})")
    if float(w.max()) < 0.98 * bound or float(w.min()) > -0.98 * bound:
        problems.append(f"the values span only [{float(w.min()):.4g}, {float(w.max()):.4g}]: a uniform init on "
                        f"[-bound, bound] reaches within 2% of both ends")
    std, expected_std = float(w.std()), bound / math.sqrt(3)
    if abs(std - expected_std) > 0.05 * expected_std:
        problems.append(f"standard deviation {std:.4g}, expected bound / sqrt(3) = {expected_std:.4g} (uniform)")
    if abs(float(w.mean())) > 0.1 * bound:
        problems.append(f"mean {float(w.mean()):.4g}, expected about 0 (the range is symmetric)")
    return problems


@probes(lambda p: {"layer": (p["in_channels"], p["out_channels"], p["kernel_size"]), "seed": 0})
@given(layer=st.sampled_from(INIT_LAYERS), seed=SEEDS)
def test_conv2d_weight_initialisation(sandbox, layer, seed):
    """weight starts uniform on [-1/sqrt(in*k*k), 1/sqrt(in*k*k)], like torch.nn.Conv2d's default init."""
    in_channels, out_channels, kernel = layer
    args = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel)
    handle = sandbox.construct("Conv2d", **args, seed=seed)
    weight = conv_weight(sandbox, handle, args)
    fan_in = in_channels * kernel * kernel
    bound = 1 / math.sqrt(fan_in)
    problems = init_problems(weight, bound)
    if problems:
        fail(f"{conv_text(args)}.weight (constructed after torch.manual_seed({seed})) is not uniform on "
             f"[-bound, bound] with bound = 1/sqrt(in_channels * kernel_size**2) = 1/sqrt({fan_in}) = {bound:.4g}: "
             + "; ".join(problems)
             + ". Initialise with bound * (2 * t.rand(shape) - 1); fan_in counts every input a kernel reads "
               "(in_channels * kernel_size * kernel_size), not in_channels alone nor out_channels")


def course_forward(probe: dict) -> dict:
    """One of tests.py's forward runs: Conv2d(in_channels=..., out_channels=..., kernel_size=..., stride=...,
    padding=...) by keyword on a float32 batch."""
    args = {name: probe[name] for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding")}
    x = TensorCase(exact_values((probe["batch"], probe["in_channels"], *probe["size"])))
    return {"case": (args, x), "seed": 0}


@probes(course_forward)
@given(case=conv_cases(), seed=SEEDS)
def test_conv2d_forward_matches_functional_conv2d(sandbox, case, seed):
    """forward equals F.conv2d(x, weight, stride=stride, padding=padding) with the module's own weight."""
    args, x = case
    handle = build(sandbox, args, x.dtype, seed)
    check_forward(sandbox, handle, args, x.build(), " after .double()" if x.dtype == "float64" else "")


# course: positional Conv2d(3, 64, 7, 2, 3) in the ResNet's stem, keyword in tests.py and the template's blocks.
@given(data=st.data(), in_channels=st.integers(1, 3), out_channels=st.integers(1, 3), kernel=st.integers(1, 3),
       stride=st.integers(1, 3), padding=st.integers(0, 2), seed=SEEDS)
def test_conv2d_positional_and_keyword_construction(sandbox, data, in_channels, out_channels, kernel, stride,
                                                    padding, seed):
    """Conv2d(in, out, k, stride, padding) given positionally means the same as given by keyword."""
    args = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                padding=padding)
    low = least_size(kernel, padding)
    x = data.draw(tensors((1, in_channels, low + 3, low + 2), dtype="float32"), label="x").build()
    for positional in (True, False):
        handle = build(sandbox, args, "float32", seed, positional=positional)
        how = (f" constructed positionally as Conv2d({in_channels}, {out_channels}, {kernel}, {stride}, {padding})"
               if positional else " constructed by keyword")
        try:
            check_forward(sandbox, handle, args, x, how)
        except (AssertionError, SubmissionRaised) as error:
            if positional:
                error.add_note("Called positionally, Conv2d takes its arguments in the course's order: in_channels, "
                               "out_channels, kernel_size, stride=1, padding=0 (a ResNet writes Conv2d(64, 64, 3, 1, 1))")
            raise


# course: stride and padding omitted in tests.py's Conv2d(4, 5, 3) and Conv2d(100, 100, 3).
@given(data=st.data(), in_channels=st.integers(1, 3), out_channels=st.integers(1, 3), kernel=st.integers(1, 5),
       seed=SEEDS)
def test_conv2d_defaults_are_stride_1_padding_0(sandbox, data, in_channels, out_channels, kernel, seed):
    """Conv2d(in, out, k) with stride and padding omitted means stride=1, padding=0 (the course's signature)."""
    x = data.draw(tensors((1, in_channels, kernel + 2, kernel + 1), dtype="float32"), label="x").build()
    handle = sandbox.construct("Conv2d", in_channels, out_channels, kernel, seed=seed)
    args = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=1, padding=0)
    weight = conv_weight(sandbox, handle, args)
    got = sandbox.call(handle, x)
    assert_close(got, F.conv2d(x, weight), f"Conv2d({in_channels}, {out_channels}, {kernel}) (stride and padding "
                 f"omitted) on an input of shape {tuple(x.shape)}",
                 hint="the defaults are part of the API: Conv2d(in_channels, out_channels, kernel_size, stride=1, "
                      "padding=0), as in torch; a ResNet that writes Conv2d(c, c, 3) means an unpadded 3x3 conv")


@given(data=st.data(), kernel=st.integers(1, 5), stride=st.integers(1, 4), padding=st.integers(0, 3),
       out_channels=st.integers(1, 2))  # course: as conv_cases; float32 (B, 1, H, W) inputs
def test_conv2d_output_shape(sandbox, data, kernel, stride, padding, out_channels):
    """The output is (B, out, floor((H + 2p - k) / s) + 1, floor((W + 2p - k) / s) + 1)."""
    low = least_size(kernel, padding)
    h = data.draw(st.integers(low, low + 9), label="H")
    w = data.draw(st.integers(low, low + 9), label="W")
    batch = data.draw(st.integers(1, 2), label="batch")
    args = dict(in_channels=1, out_channels=out_channels, kernel_size=kernel, stride=stride, padding=padding)
    handle = sandbox.construct("Conv2d", **args)
    x = torch.linspace(-1, 1, batch * h * w).reshape(batch, 1, h, w)
    got = tensor_of(sandbox.call(handle, x), conv_text(args))
    expected = (batch, out_channels, output_size(h, kernel, stride, padding), output_size(w, kernel, stride, padding))
    assert_equal(tuple(got.shape), expected,
                 f"output shape of {conv_text(args)} on an input of shape {(batch, 1, h, w)}",
                 hint="each spatial size is (size + 2 * padding - kernel_size) // stride + 1")


def test_conv2d_repr_shows_arguments(sandbox, advise):
    """print(Conv2d(6, 11, 5, stride=3, padding=2)) works (what it shows is advised on, never failed)."""
    args = dict(in_channels=6, out_channels=11, kernel_size=5, stride=3, padding=2)
    what = conv_text(args)
    text = printable(sandbox, sandbox.construct("Conv2d", **args), what)
    advise_on_repr(advise, text, what, args)


NONZERO_HALVES = st.sampled_from([v / 2 for v in range(-8, 9) if v])
SHIFTS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]


def interior(y: torch.Tensor, dy: int, dx: int, shifted: bool) -> torch.Tensor:
    """The part of an output map that both the original and the shifted picture determine."""
    h, w = y.shape[-2:]
    rows = slice(max(dy, 0), h + min(dy, 0)) if shifted else slice(max(-dy, 0), h - max(dy, 0))
    cols = slice(max(dx, 0), w + min(dx, 0)) if shifted else slice(max(-dx, 0), w - max(dx, 0))
    return y[..., rows, cols]


# course: as conv_cases, stride 1 (int arguments by keyword, (B, C, H, W) inputs).
@given(data=st.data(), kernel=st.integers(1, 3), padding=st.integers(0, 2), shift=st.sampled_from(SHIFTS),
       in_channels=st.integers(1, 2), out_channels=st.integers(1, 2), dtype=DTYPE,
       seed=SEEDS)
def test_conv2d_translation_equivariance(sandbox, data, kernel, padding, shift, in_channels, out_channels, dtype, seed):
    """One shared filter at every position: the same picture shifted a few pixels gives the same map, shifted."""
    dy, dx = shift
    h0 = data.draw(st.integers(kernel, kernel + 2), label="picture height")
    w0 = data.draw(st.integers(kernel, kernel + 2), label="picture width")
    batch = data.draw(st.integers(1, 2), label="batch")
    picture = data.draw(st.lists(NONZERO_HALVES, min_size=batch * in_channels * h0 * w0,
                                 max_size=batch * in_channels * h0 * w0), label="picture")
    layout = data.draw(st.sampled_from(["contiguous", "transposed", "strided"]), label="layout")
    content = np.array(picture, dtype=np.float64).reshape(batch, in_channels, h0, w0)
    frame = np.zeros((batch, in_channels, h0 + abs(dy), w0 + abs(dx)))
    top, left = max(-dy, 0), max(-dx, 0)  # the shifted copy sits at (top + dy, left + dx), still in the frame
    original, moved = frame.copy(), frame.copy()
    original[..., top:top + h0, left:left + w0] = content
    moved[..., top + dy:top + dy + h0, left + dx:left + dx + w0] = content
    args = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=1, padding=padding)
    handle = build(sandbox, args, dtype, seed)
    what = conv_text(args)
    x, x_moved = make_tensor(original, DTYPES[dtype], layout), make_tensor(moved, DTYPES[dtype], layout)
    y = tensor_of(sandbox.call(handle, x), what)
    y_moved = tensor_of(sandbox.call(handle, x_moved), what)
    if y.shape != y_moved.shape or y.ndim != 4:
        fail(f"{what} gave outputs of shapes {tuple(y.shape)} and {tuple(y_moved.shape)} for two inputs of shape "
             f"{tuple(x.shape)}; expected (B, out_channels, H_out, W_out) both times")
    assert_close(interior(y_moved, dy, dx, True), interior(y, dy, dx, False),
                 f"{what}: output for the picture shifted by (dy, dx) = ({dy}, {dx}) pixels, compared with the "
                 f"output for the unshifted picture moved by the same amount (interior region; inputs of shape "
                 f"{tuple(x.shape)}, zero border)",
                 hint="a convolution slides ONE filter over the image, so moving the picture moves the feature map "
                      "and changes nothing else; here the result depends on where the picture is, i.e. a different "
                      "filter is applied at different positions (a separate weight per position, or patches and "
                      "positions mixed up by a reshape/view where a transpose/permute was needed)")
