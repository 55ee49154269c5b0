"""Hypothesis strategies for small, valid-by-construction inputs.

Values are half-integers in [-4, 4]: exact in float32 and float64, so a difference is
a bug and not rounding, and a shrunk example is readable. Tensors come in several
memory layouts (contiguous, transposed view, every-other-element view, storage
offset): the from-scratch functions must read strides from `x.stride()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# course: float32 in tests.py and the notebook, float64 in tests.py's conv2d_minimal and conv2d; the template's
# Float[Tensor, ...] hints take either. Non-contiguous views: tests.py's test_mv2/test_mm2 (the exercise reads
# x.stride()); nothing in the course promises a module a contiguous input.
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# course: every module's float32; float64 through `.double()`, which the course's modules survive
DTYPE = st.sampled_from(list(DTYPES))
SEEDS = st.integers(0, 2**16)  # the seed of a check's own random weights (a generator's, never the global one)
LAYOUTS = ("contiguous", "transposed", "strided", "offset")
SENTINEL = 1000.0  # what lies in memory around non-contiguous views


@dataclass(frozen=True)
class TensorCase:
    """A tensor described by its values, dtype and memory layout."""

    values: np.ndarray
    dtype: str = "float32"
    layout: str = "contiguous"

    def __repr__(self) -> str:
        values = np.array2string(self.values, separator=",", threshold=200).replace("\n", "")
        return f"TensorCase(shape={self.values.shape}, dtype={self.dtype}, layout={self.layout!r}, values={values})"

    def _repr_pretty_(self, printer, cycle) -> None:  # how Hypothesis prints a falsifying example
        printer.text(repr(self))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def build(self) -> torch.Tensor:
        return make_tensor(self.values, DTYPES[self.dtype], self.layout)


@dataclass(frozen=True)
class ViewCase:
    """A view into a 1-D base tensor, as `base.as_strided(size, stride, offset)` makes it (tests.py's test_mv2 and
    test_mm2 feed such views of one randn(30))."""

    base: np.ndarray
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: str = "float32"

    def __repr__(self) -> str:
        return f"ViewCase(base of {len(self.base)}, size={self.size}, stride={self.stride}, offset={self.offset})"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    def build(self) -> torch.Tensor:
        base = torch.tensor(np.asarray(self.base, dtype=np.float64), dtype=DTYPES[self.dtype])
        return base.as_strided(self.size, self.stride, self.offset)


def make_tensor(values: np.ndarray, dtype: torch.dtype, layout: str = "contiguous") -> torch.Tensor:
    """A tensor with exactly `values`, laid out in memory as `layout` says."""
    base = torch.tensor(np.asarray(values, dtype=np.float64), dtype=dtype)
    if layout == "contiguous" or base.ndim == 0:
        return base
    if layout == "transposed":
        if base.ndim < 2:
            return base
        return base.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided":
        wide = torch.full((*base.shape[:-1], base.shape[-1] * 2), SENTINEL, dtype=dtype)
        wide[..., ::2] = base
        return wide[..., ::2]
    if layout == "offset":
        flat = torch.cat([torch.full((3,), SENTINEL, dtype=dtype), base.flatten()])
        return flat[3:].view(base.shape)
    raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")


half_integers = st.integers(-8, 8).map(lambda v: v / 2)  # course: randn / arange values; these are exact


def exact_values(shape: tuple[int, ...]) -> np.ndarray:
    """Fixed half-integers of both signs in `shape`, for an explicit example (the course's randn inputs stand-in)."""
    return (np.arange(int(np.prod(shape)), dtype=np.float64) % 17 / 2 - 4).reshape(shape)


def arrays(shape: tuple[int, ...], elements: st.SearchStrategy[float] = half_integers) -> st.SearchStrategy:
    return hnp.arrays(np.float64, shape, elements=elements)


# The caller chooses the shape: each check states the ranks the course feeds its name.
@st.composite
def tensors(draw, shape: tuple[int, ...], *, dtypes=tuple(DTYPES), layouts=LAYOUTS, dtype: str | None = None,
            elements: st.SearchStrategy[float] = half_integers) -> TensorCase:
    values = draw(arrays(shape, elements), label="values")
    chosen = dtype or draw(st.sampled_from(dtypes), label="dtype")
    layout = draw(st.sampled_from(layouts), label="layout")
    return TensorCase(values, chosen, layout)


@dataclass(frozen=True)
class IntOrPair:
    """An int-or-pair argument as passed (int or tuple) and its (h, w) meaning."""

    passed: object
    pair: tuple[int, int]

    def __repr__(self) -> str:
        return repr(self.passed)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


# The forms the course's API promises for an int-or-pair argument: a Python int (when both sides
# agree), or a tuple of two ints whose elements may be numpy integers (the course's own tests pass
# `tuple(np.random.randint(...))`). A bare numpy scalar is not among them: the course's `force_pair`
# rejects it (`isinstance(np.int64(2), int)` is False).
PAIR_FORMS = {
    "int": lambda h, w: h,
    "tuple": lambda h, w: (h, w),
    "numpy tuple": lambda h, w: (np.int64(h), np.int64(w)),
}


def passed_as(pair: tuple[int, int]) -> st.SearchStrategy[IntOrPair]:
    """The ways a caller within the course's API passes this (h, w) pair."""
    h, w = pair
    forms = [name for name in PAIR_FORMS if name != "int" or h == w]
    return st.sampled_from(forms).map(lambda name: IntOrPair(PAIR_FORMS[name](h, w), (h, w)))


@st.composite
def int_or_pair(draw, low: int, high: int, *, square: bool = False) -> IntOrPair:
    """Draws (h, w) in [low, high] and the form it is passed in (see `PAIR_FORMS`)."""
    h = draw(st.integers(low, high))
    w = h if square else draw(st.integers(low, high))
    return draw(passed_as((h, w)))


def least_size(kernel: int, padding: int = 0, stride: int = 1, windows: int = 1) -> int:
    """The smallest input side on which a kernel fits `windows` times with this padding and stride (at least 1):
    sides drawn from it upwards are valid by construction, never filtered."""
    return max(1, kernel + (windows - 1) * stride - 2 * padding)


def positive(low: int = 1, high: int = 4) -> st.SearchStrategy[int]:
    return st.integers(low, high)
