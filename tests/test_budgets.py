"""Budgets: each check's example count follows the profile of the run, not the one active when it was imported."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import budgets


def test_counts_carry_a_margin_over_what_the_corpus_needed():
    assert budgets.with_margin(1) == 9 and budgets.with_margin(10) == 20
    assert budgets.with_margin(25) == budgets.PROFILE_EXAMPLES
    for name, needed in budgets.NEEDED.items():
        assert needed < budgets.EXAMPLES[name] <= budgets.PROFILE_EXAMPLES


def test_a_check_runs_its_budget_scaled_by_the_active_profile():
    ran = []

    @given(st.integers())
    def test_relu_values(x):  # named after a budgeted check
        ran.append(x)

    budget = budgets.EXAMPLES["test_relu_values"]
    for profile, expected in ((budgets.PROFILE_EXAMPLES, budget), (10 * budgets.PROFILE_EXAMPLES, 10 * budget)):
        settings.register_profile("budget-test", max_examples=profile, database=None, derandomize=True)
        settings.load_profile("budget-test")
        try:
            budgets.apply(test_relu_values)
            ran.clear()
            test_relu_values()
        finally:
            settings.load_profile("default")  # the project's tests run under Hypothesis's default profile
        assert 0 < len(ran) <= expected
        assert test_relu_values._hypothesis_internal_use_settings.max_examples == expected


def test_an_unlisted_check_runs_the_profiles_count():
    assert budgets.examples("test_not_budgeted") == settings.default.max_examples


def test_the_static_feature_extraction_checks_draw_the_same_class_counts():
    """Both read the same builds (`test_feature_extraction.built`): a draw of one that the other lacks costs a build."""
    from conformance.checks import test_feature_extraction as fe

    checks = (fe.test_feature_extraction_backbone_pretrained_and_frozen,
              fe.test_feature_extraction_head_is_a_fresh_trainable_linear)
    drawn = []
    for profile in ("conformance", "thorough"):
        settings.load_profile(profile)
        try:
            for check in checks:
                seen: list[int] = []
                budgets.apply(check)
                inner = check.hypothesis.inner_test
                check.hypothesis.inner_test = lambda sandbox, n_classes, seen=seen: seen.append(n_classes)
                try:
                    check(sandbox=None)
                finally:
                    check.hypothesis.inner_test = inner
                drawn.append((profile, seen))
        finally:
            settings.load_profile("default")
    assert drawn[0][1] == drawn[1][1] and drawn[2][1] == drawn[3][1], drawn
    # The explicit examples first (the course's fn(10), then ResNet34's default 1000 classes), then the drawn ones.
    assert drawn[0][1][:2] == [10, 1000] and len(drawn[0][1]) == 2 + budgets.EXAMPLES[checks[0].__name__], drawn
