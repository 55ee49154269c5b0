"""Budgets: each check's example count follows the profile of the run, not the one active when it was imported."""

from __future__ import annotations

import ast
from contextlib import contextmanager
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import budgets


@contextmanager
def profile_active(name: str, **registered):
    """Hypothesis's profile `name` (registered first with `registered`, if given) while the block runs; then the default
    profile again, the one the project's tests run under."""
    if registered:
        settings.register_profile(name, **registered)
    settings.load_profile(name)
    try:
        yield
    finally:
        settings.load_profile("default")


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
        with profile_active("budget-test", max_examples=profile, database=None, derandomize=True):
            budgets.apply(test_relu_values)
            ran.clear()
            test_relu_values()
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
        with profile_active(profile):
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
    assert drawn[0][1] == drawn[1][1] and drawn[2][1] == drawn[3][1], drawn
    # The explicit examples first (the course's fn(10), then ResNet34's default 1000 classes), then the drawn ones.
    assert drawn[0][1][:2] == [10, 1000] and len(drawn[0][1]) == 2 + budgets.EXAMPLES[checks[0].__name__], drawn


# ---- each fact once: budgets, thresholds, time bounds and tolerances by name -------------------------------------

HARNESS = Path(__file__).resolve().parent.parent / "conformance"
JUDGING_MODULES = sorted([*HARNESS.glob("checks/test_*.py"), *(HARNESS / f"{name}.py" for name in (
    "training", "structure", "probing", "rootcause", "course"))])
NAMED_ONLY = {"rtol", "atol", "timeout", "limit"}  # a keyword that must take a named figure, never a literal


def hypothesis_checks() -> dict[str, object]:
    import importlib

    found = {}
    for path in sorted(HARNESS.glob("checks/test_*.py")):
        module = importlib.import_module(f"conformance.checks.{path.stem}")
        found.update({name: value for name, value in vars(module).items()
                      if name.startswith("test_") and callable(value) and value.__module__ == module.__name__})
    return found


def test_every_budget_names_a_hypothesis_check_that_exists():
    checks = hypothesis_checks()
    for name in {*budgets.NEEDED, *budgets.EXAMPLES}:
        assert name in checks, f"budgets names {name}, which no check module defines (renamed or removed?)"
        assert getattr(checks[name], "hypothesis", None) is not None, f"{name} draws no examples: it needs no budget"


def literal_figures(path: Path) -> list[str]:
    """Where `path` writes a tolerance or a time bound as a number, not a name of budgets or compare."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg in NAMED_ONLY and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, (int, float)) and not isinstance(node.value.value, bool):
            found.append(f"{path.name}:{node.value.lineno}: {node.arg}={node.value.value!r}")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("allclose", "isclose") \
                and len(node.args) > 2:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node.func)} with positional tolerances")
    return found


def test_tolerances_and_time_bounds_are_written_by_name():
    assert len(JUDGING_MODULES) > 9
    found = [line for path in JUDGING_MODULES for line in literal_figures(path)]
    assert not found, "name these in conformance/compare.py (tolerances) or conformance/budgets.py (time):\n" + \
        "\n".join(found)


def test_the_name_check_sees_a_literal_tolerance(tmp_path):
    path = tmp_path / "test_sample.py"
    path.write_text("import torch\nok = torch.allclose(a, b, **MISTAKE.at())\n"
                    "bad = torch.allclose(a, b, rtol=1e-4, atol=1e-5)\nsandbox.fit(h, x, y, timeout=60)\n")
    assert literal_figures(path) == ["test_sample.py:3: rtol=0.0001", "test_sample.py:3: atol=1e-05",
                                     "test_sample.py:4: timeout=60"]


def test_every_trusted_block_is_declared_once():
    from conformance.areas import BUILDING_BLOCKS, CHAIN, COMPOSITES, PARTS
    from under_test import trusted

    assert not set(BUILDING_BLOCKS) & set(CHAIN), "a part is both a building block and a link of the chain"
    for area_id, parts in COMPOSITES.items():
        assert len(parts) == len(set(parts)), f"{area_id}'s parts list one twice: {parts}"
        assert set(parts) <= set(PARTS), f"{area_id} is built from parts no area judges: {set(parts) - set(PARTS)}"
    lent = {part for parts in COMPOSITES.values() for part in parts}
    assert set(trusted.BLOCKS) == lent, (
        f"trusted versions without a composite using them: {set(trusted.BLOCKS) - lent}; parts a composite uses "
        f"without a trusted version: {lent - set(trusted.BLOCKS)}")


def test_a_check_draws_the_same_inputs_whatever_its_source_says(tmp_path):
    """Rewording a check (a message, a helper's name) must not change what it draws: the seed comes from its name."""
    import importlib.util

    def make(folder: str, body: str, name: str = "test_relu_values"):
        module = "test_sample"  # one check module, before and after an edit
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / f"{module}.py"
        path.write_text("from hypothesis import given, strategies as st\nDRAWN = []\n\n"
                        f"@given(st.integers(0, 10**9))\ndef {name}(x):\n    {body}\n")
        spec = importlib.util.spec_from_file_location(f"conformance.checks.{module}", path)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return getattr(loaded, name), loaded.DRAWN

    with profile_active("seed-test", max_examples=budgets.PROFILE_EXAMPLES, database=None, derandomize=True):
        runs = []
        for folder, body in (("before", "DRAWN.append(x)"), ("after", "DRAWN.append(int(x))")):
            check, drawn = make(folder, body)
            budgets.apply(check)
            check()
            runs.append(drawn)
        assert runs[0] == runs[1] and len(set(runs[0])) > 1
        other, drawn = make("renamed", "DRAWN.append(x)", name="test_linear_forward")  # another name, other inputs
        budgets.apply(other)
        other()
        assert drawn != runs[0]
