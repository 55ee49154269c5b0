"""The harness's own helpers: strategies build what they claim, comparisons report what they see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.compare import CheckFailure, assert_close, output_size, tensor_of
from conformance.strategies import LAYOUTS, int_or_pair, make_tensor, tensors
from under_test.wire import Returned


@given(case=tensors((2, 3, 4)))
def test_tensor_cases_hold_their_values_in_their_layout(case):
    tensor = case.build()
    assert np.array_equal(tensor.numpy().astype(np.float64), case.values)
    assert tensor.is_contiguous() == (case.layout in ("contiguous", "offset"))
    if case.layout == "offset":
        assert tensor.storage_offset() == 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_a_view_with_the_same_values(layout):
    values = np.arange(12.0).reshape(3, 4)
    tensor = make_tensor(values, torch.float64, layout)
    assert torch.equal(tensor, torch.tensor(values))


@given(arg=int_or_pair(1, 3))
def test_int_or_pair_forms_mean_their_pair(arg):
    passed = arg.passed
    pair = (int(passed), int(passed)) if np.ndim(passed) == 0 else tuple(int(v) for v in passed)
    assert pair == arg.pair and all(1 <= v <= 3 for v in pair)


@given(size=st.integers(1, 20), kernel=st.integers(1, 5), stride=st.integers(1, 4), padding=st.integers(0, 2))
def test_output_size_matches_torch(size, kernel, stride, padding):
    if size + 2 * padding < kernel:
        return
    out = torch.nn.functional.conv1d(torch.zeros(1, 1, size), torch.zeros(1, 1, kernel), stride=stride,
                                     padding=padding)
    assert out.shape[-1] == output_size(size, kernel, stride, padding)


def test_assert_close_reports_shape_dtype_and_worst_value():
    expected = torch.zeros(2, 3)
    with pytest.raises(CheckFailure, match=r"output shape \(3, 2\), expected \(2, 3\)"):
        assert_close(Returned("torch.Tensor", torch.zeros(3, 2), False), expected, "f(x)")
    with pytest.raises(CheckFailure, match="dtype torch.float64"):
        assert_close(Returned("torch.Tensor", torch.zeros(2, 3, dtype=torch.float64), False), expected, "f(x)")
    got = torch.zeros(2, 3)
    got[1, 2] = 0.5
    with pytest.raises(CheckFailure, match=r"1 of 6 values differ; max abs error 0.5.*index \(1, 2\)"):
        assert_close(Returned("torch.Tensor", got, False), expected, "f(x)")
    nan = torch.full((2, 3), float("nan"))
    with pytest.raises(CheckFailure, match="6 of 6"):
        assert_close(Returned("torch.Tensor", nan, False), expected, "f(x)")
    assert_close(Returned("torch.Tensor", expected + 1e-7, False), expected, "f(x)")


def test_only_plain_tensors_are_accepted():
    with pytest.raises(CheckFailure, match="not a plain torch.Tensor"):
        tensor_of(Returned("learner.Sub", torch.zeros(1), False), "f(x)")
    with pytest.raises(CheckFailure, match="not a tensor"):
        tensor_of(3.0, "f(x)")


def test_a_batch_of_nearly_equal_values_leaves_room_for_rounding(tmp_path):
    """Found by the thorough profile on a correct BatchNorm2d: two values one ulp apart normalise to outputs of a few
    ulps of |x| over sqrt(eps), whose digits depend on the order of the sums. The comparison allows for that and
    still fails a BatchNorm2d with eps outside the square root on the same batches."""
    from conformance.checks.test_batchnorm import check_sequence
    from conformance.strategies import TensorCase
    from corpus import ROOT, load_bugs
    from under_test.sandbox import Sandbox

    (bug,) = [b for b in load_bugs() if b.id == "bn-eps-outside-sqrt"]
    (tmp_path / "eps_outside.py").write_text(bug.source())
    batches = []
    for value, ulps in [(0.4, 1), (-2.5, 3), (100.0, 1), (100.0, 3)]:
        near = np.float32(value)
        for _ in range(ulps):
            near = np.nextafter(near, np.float32(np.inf))
        batches.append([TensorCase(np.array([value, near], dtype=np.float64).reshape(2, 1, 1, 1))] * 2)
    for impl, correct in [(ROOT / "corpus" / "correct" / "course_template.py", True),
                          (tmp_path / "eps_outside.py", False)]:
        with Sandbox(impl, timeout=30) as sandbox:
            for xs in batches:
                sandbox.begin_check()
                if correct:
                    check_sequence(sandbox, False, lambda note: None, 1, 1e-5, 0.1, "float32", [True, True], xs)
                else:
                    with pytest.raises(CheckFailure, match="output of step 0"):
                        check_sequence(sandbox, False, lambda note: None, 1, 1e-5, 0.1, "float32", [True, True], xs)
