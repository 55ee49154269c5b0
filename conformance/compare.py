"""Comparisons made in the harness, with messages that say what differed and where.

Every value coming back from the sandbox is a `Returned` (the type the submission
really returned plus a plain copy of the data). `tensor_of` refuses anything but an
exact `torch.Tensor`; `assert_close` checks shape, dtype, then values, and reports
the count of mismatches, the largest absolute error and its index.

Every tolerance the checks use is named here (`Tolerance`), with why it is what it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fixtures import snapshots
from under_test.wire import Handle, Returned


class CheckFailure(AssertionError):
    """A check failed; the message is what the learner reads."""


def fail(message: str) -> None:
    raise CheckFailure(message)


PARAMETER_TYPES = ("torch.Tensor", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer")


def tensor_of(value: object, what: str, allowed: tuple[str, ...] = ("torch.Tensor",)) -> torch.Tensor:
    """The plain tensor behind a submission's result, or a failure saying what came back."""
    if isinstance(value, Returned):
        require_plain(value.type, what, allowed)
        return value.tensor
    if type(value) is torch.Tensor:  # already checked (e.g. a state entry) or computed by the harness
        return value
    if isinstance(value, Handle):
        fail(f"{what} returned a {value.type} object, not a tensor")
    fail(f"{what} returned {type(value).__name__} {value!r:.80}, not a tensor")
    raise AssertionError  # unreachable


def require_plain(type_name: str, what: str, allowed: tuple[str, ...] = ("torch.Tensor",)) -> None:
    """Fail unless a returned tensor's type is one of `allowed` (no subclass, no wrapper)."""
    if type_name not in allowed:
        fail(f"{what} returned a {type_name}, not a plain torch.Tensor "
             "(return an ordinary tensor; subclasses and wrappers are not accepted)")


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol + rtol * |expected|, everywhere."""

    rtol: float
    atol: float

    def at(self, scale: float = 1.0) -> dict[str, float]:
        """rtol and atol as keywords, atol grown with the magnitude `scale` of the values compared (when above 1)."""
        return {"rtol": self.rtol, "atol": self.atol * max(1.0, scale)}

    def close(self, actual: torch.Tensor, expected: torch.Tensor, scale: float = 1.0) -> bool:
        return torch.allclose(actual, expected, **self.at(scale))


# A submission's result against the oracle's, per dtype. Sums of a few hundred float32 terms stay well inside.
FLOAT32 = Tolerance(1e-4, 1e-5)
FLOAT64 = Tolerance(1e-7, 1e-9)
TOLERANCES = {torch.float32: FLOAT32, torch.float64: FLOAT64}
# A wrong result matched against what a known mistake computes (`diagnosis`): a hint is chosen, never a verdict.
# Values of order one; probabilities and a shift by eps, smaller, are matched with SMALL_MISTAKE.
MISTAKE = FLOAT32
SMALL_MISTAKE = Tolerance(1e-4, 1e-6)
# A float64 running buffer after one update, against each convention's update (PyTorch's unbiased, ARENA's biased).
BUFFER_UPDATE = Tolerance(1e-6, 1e-8)
# In eval mode, an image alone against its row of the batch: another reduction order, perhaps another convolution
# algorithm for another batch size (atol scaled by the logits' magnitude).
BATCH_ROW = Tolerance(1e-4, 1e-4)
# The same batch through the same model twice: only nondeterministic kernels could differ (atol scaled likewise).
REPEAT = Tolerance(1e-5, 1e-6)
# BatchNorm's train-mode output statistics of a fixed float64 batch: per-channel mean 0 and biased variance 1.
NORMALISED_MEAN = Tolerance(1e-7, 1e-6)
NORMALISED_VARIANCE = Tolerance(1e-7, 1e-4)
# ResNet34 logits against the stored snapshots, or two ResNet34 forwards of the same weights: the snapshots' own
# tolerance, measured and explained in `fixtures.snapshots` (which the project's tests hold the snapshots to).
LOGITS = Tolerance(snapshots.LOGITS_RTOL, snapshots.LOGITS_ATOL)


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> tuple[float, float]:
    found = TOLERANCES.get(dtype, FLOAT32).at(scale)
    return found["rtol"], found["atol"]


# A difference like x - mean(x), computed in another order, is off by a few ulps of |x|: where the result is then
# divided by something small (a batch's standard deviation), that error grows with it.
ROUNDING_ULPS = 8


def rounding_slack(dtype: torch.dtype, magnitude: float) -> float:
    """The absolute error float rounding of `dtype` values of this magnitude can reach: a few ulps of it."""
    return ROUNDING_ULPS * torch.finfo(dtype).eps * magnitude


def assert_close(actual: object, expected: torch.Tensor, what: str, *, rtol: float | None = None,
                 atol: float | None = None, check_dtype: bool = True, hint: str = "") -> torch.Tensor:
    """`actual` (a submission's result) equals `expected` (the oracle's) within tolerance."""
    got = tensor_of(actual, what)
    suffix = f"\n{hint}" if hint else ""
    if tuple(got.shape) != tuple(expected.shape):
        fail(f"{what}: output shape {tuple(got.shape)}, expected {tuple(expected.shape)}{suffix}")
    if check_dtype and got.dtype != expected.dtype:
        fail(f"{what}: dtype {got.dtype}, expected {expected.dtype} (keep the input's dtype){suffix}")
    if expected.numel() == 0:
        return got
    default_rtol, default_atol = tolerance(expected.dtype, float(expected.abs().max()) if expected.numel() else 1.0)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    e = expected.to(torch.float64)
    g = got.to(torch.float64)
    nan_mismatch = torch.isnan(g) != torch.isnan(e)
    inf_mismatch = (torch.isinf(g) | torch.isinf(e)) & (g != e)
    diff = (g - e).abs().nan_to_num(nan=0.0, posinf=0.0)
    bad = nan_mismatch | inf_mismatch | (diff > atol + rtol * e.abs().nan_to_num(nan=0.0, posinf=0.0))
    if bool(bad.any()):
        count = int(bad.sum())
        flat = int(torch.argmax(torch.where(bad, diff + 1.0, torch.zeros_like(diff))))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), e.shape))
        worst = float(diff.max())
        fail(
            f"{what}: {count} of {e.numel()} values differ; max abs error {_fmt(worst)}; "
            f"first worst at index {index}: got {_fmt(float(g[index]))}, expected {_fmt(float(e[index]))} "
            f"(rtol={rtol:g}, atol={atol:g}){suffix}"
        )
    return got


def assert_equal(actual: object, expected: object, what: str, hint: str = "") -> None:
    if actual != expected:
        fail(f"{what}: got {actual!r}, expected {expected!r}" + (f"\n{hint}" if hint else ""))


def _fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """The convolution / pooling output-size formula: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1
