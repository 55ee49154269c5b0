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


# ---- probing's oracle side, and the diagnosis of usual mistakes -------------------------------------------------

def test_oracle_grad_is_the_gradient_of_the_output_against_the_cotangent():
    from conformance.probing import oracle_grad

    x = torch.tensor([[1.0, -2.0, 3.0]])
    weight = torch.tensor([[2.0, 0.0, 1.0]], requires_grad=True)
    out, grad = oracle_grad(lambda v: (v * weight).relu(), x, torch.tensor([[1.0, 1.0, 2.0]]))
    assert torch.equal(out, torch.tensor([[2.0, 0.0, 3.0]])) and not out.requires_grad
    assert torch.equal(grad, torch.tensor([[2.0, 0.0, 2.0]]))
    assert torch.equal(weight.grad, torch.tensor([[1.0, 0.0, 6.0]]))
    assert not x.requires_grad  # the caller's input is left alone
    assert oracle_grad(lambda v: v.sum(), x, torch.ones(3))[1] is None  # another shape: no gradient to take


@pytest.mark.parametrize("change, phrase", [
    (dict(skip=False), "the skip connection is missing"),
    (dict(final_relu=False), "the ReLU after the addition is missing"),
    (dict(relu_left_only=True), "the ReLU is applied to the left branch before the addition"),
    (dict(stride_second=True), "first_stride belongs to the first 3x3 conv"),
    (dict(projection_bn=False), "the projection's BatchNorm is not applied"),
])
def test_a_block_computed_with_a_usual_mistake_is_diagnosed_as_that_mistake(change, phrase):
    from conformance.diagnosis import block_output, diagnose_block
    from conformance.structure import oracle_block, random_state

    oracle = oracle_block(3, 4, 2).eval()
    oracle.load_state_dict(random_state(oracle, 1))
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = block_output(oracle, x, **change)
    assert phrase in diagnose_block(got, oracle, x, train=False)
    with torch.no_grad():
        right = block_output(oracle, x)
    assert diagnose_block(right, oracle, x, train=False) == ""  # the right answer matches no mistake
    assert diagnose_block(right + 1.0, oracle, x, train=False) == ""  # nor does a wrong answer of another kind


def test_a_mistake_the_input_cannot_show_is_never_named():
    """On an input where a mistake computes the right answer, naming it would be a guess."""
    from conformance.diagnosis import BLOCK_MISTAKES, matching

    expected = torch.ones(3)
    shown, hidden = BLOCK_MISTAKES[0], BLOCK_MISTAKES[1]
    got = torch.zeros(3)
    assert matching(got, expected, [(hidden, expected.clone()), (shown, torch.zeros(3))]) == [shown]
    assert matching(got, expected, [(shown, None), (hidden, torch.zeros(2))]) == []


def test_a_resnet34_with_a_softmax_at_the_end_is_diagnosed():
    from conformance.diagnosis import diagnose_network
    from conformance.structure import Config, reference_model

    model = reference_model(Config((1, 1, 1, 1), (4, 4, 4, 4), (1, 1, 1, 1), 5)).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    assert "a softmax at the end" in diagnose_network(expected.softmax(-1), model, x, expected)
    assert diagnose_network(expected, model, x, expected) == ""


@given(kernel=st.integers(1, 5), padding=st.integers(0, 2), stride=st.integers(1, 3), windows=st.integers(1, 3),
       extra=st.integers(0, 3))
def test_a_side_from_least_size_up_fits_the_windows_asked_for(kernel, padding, stride, windows, extra):
    from conformance.strategies import least_size

    least = least_size(kernel, padding, stride, windows)
    assert least >= 1 and output_size(least + extra, kernel, stride, padding) >= windows
    if least > 1:  # and it is the least: one less fits fewer windows
        assert output_size(least - 1, kernel, stride, padding) < windows
