"""Proof that the checks work: correct implementations pass, every known bug fails in its area.

Every check of the harness must fail on at least one bug kept in `corpus/`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conformance.launch import harness_argv
from corpus import ROOT, grade, load_bugs

pytestmark = pytest.mark.slow  # grades whole submissions: not in the fast lane (`-m 'not slow'`)

BUGS = load_bugs()


def function_of(test_name: str) -> str:
    """'batchnorm: test_x[param]' -> 'test_x' (bugs name the check functions they fail)."""
    return test_name.split(": ", 1)[-1].split("[")[0]

# Which areas each correct implementation covers (the notebook stops before the bonus and ResNet).
CORRECT = {
    "reference": None,
    "examples/learner_submission.py": None,
    "examples/learner_notebook.ipynb": {"modules", "conv", "pooling", "batchnorm"},
}


def checked_areas() -> set[str]:
    return {bug.area for bug in BUGS}


@pytest.mark.parametrize("impl", list(CORRECT))
def test_correct_implementations_pass(impl, tmp_path):
    data = grade(ROOT / impl, [], tmp_path, profile="conformance", fork=True)
    failed = {t["name"]: t["output"] for t in data["tests"] if t["outcome"] in ("failed", "error")}
    assert not failed, failed
    covered = CORRECT[impl] if CORRECT[impl] is not None else checked_areas()
    for area in covered:
        assert data["areas"][area]["status"] == "passed", (area, data["areas"])


FAILING = [bug for bug in BUGS if not bug.advisory]
ADVISORY = [bug for bug in BUGS if bug.advisory]


@pytest.mark.parametrize("bug", FAILING, ids=[b.id for b in FAILING])
def test_bug_is_charged_to_its_own_area_only(bug, tmp_path):
    """A loss equals its bug: the bug fails its own area (the checks it claims, with its diagnosis), and every other
    area it reaches (`Bug.reach`: those whose checks exercise what the patch changed) passes, told where the bug is."""
    areas = bug.reach()
    data = grade(bug.write(tmp_path), areas, tmp_path, fork=True)
    failed_tests = [t["name"] for t in data["tests"] if t["outcome"] == "failed"]
    failed = {function_of(n) for n in failed_tests} | {n.split(": ", 1)[-1] for n in failed_tests}
    assert data["areas"][bug.area]["status"] == "failed", f"{bug.id} ({bug.description}) was not caught"
    for check in bug.checks:
        assert check in failed, f"{bug.id}: expected {check} to fail; failed: {sorted(failed)}"
    assert not data["harness_errors"], [t["output"] for t in data["tests"] if t["outcome"] == "error"]
    also = {t["name"]: t["output"][:1500] for t in data["tests"]
            if t["outcome"] == "failed" and t["name"].split(": ", 1)[0] != bug.area}
    assert not also, f"{bug.id} is a bug of {bug.area}, yet it is charged to other areas too:\n" + "\n\n".join(
        f"{name}:\n{output}" for name, output in also.items())
    inherited = [a for a in data["advisories"] if "inherits" in a or "comes from" in a]
    assert all(f"see the {bug.area} area" in a for a in inherited), (bug.area, inherited)
    outputs = [t["output"] for t in data["tests"] if t["outcome"] == "failed"]
    for output in outputs:
        assert output.strip() and "reproduce: conformance check" in output
    assert bug.expect, f"{bug.id}: name the phrase of the diagnosis its feedback must contain (expect = ...)"
    assert any(bug.expect in output for output in outputs), \
        f"{bug.id}: no failed check's feedback says {bug.expect!r}:\n" + "\n---\n".join(outputs)


def test_reach_follows_the_definitions_that_use_what_a_patch_changed():
    """`Bug.reach` (which areas the test above grades) is conservative: a ResidualBlock bug reaches every area built
    on it, a bug of a function no check names reaches every area, and a bug of a leaf only its own."""
    bugs = {bug.id: bug for bug in BUGS}
    assert bugs["res-stride-on-second-conv"].reach() == ["residual", "resnet34", "weight_copy", "feature_extraction"]
    assert bugs["bn-eps-outside-sqrt"].reach() == ["batchnorm", "residual", "resnet34", "weight_copy",
                                                    "feature_extraction"]
    assert bugs["trace-contiguous-stride"].reach() == ["strided"]
    assert len(bugs["mlp-train-zero-grad-before-step"].reach()) == len(checked_areas())


@pytest.mark.parametrize("bug", ADVISORY, ids=[b.id for b in ADVISORY])
def test_defect_of_form_gets_an_advisory_not_a_failure(bug, tmp_path):
    data = grade(bug.write(tmp_path), [bug.area], tmp_path, "-k", " or ".join(bug.checks), fork=True)
    ran = [t for t in data["tests"] if t["outcome"] != "pending" and function_of(t["name"]) in bug.checks]
    assert ran and all(t["outcome"] == "passed" for t in ran), [t["output"] for t in ran]
    assert any(bug.expect in advisory for advisory in data["advisories"]), (bug.expect, data["advisories"])


def test_every_check_fails_on_some_bug():
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", *harness_argv("reference", extra=["--collect-only", "-q"])],
        capture_output=True, text=True, cwd=ROOT, check=True).stdout
    checks = {line.split("::")[1].split("[")[0] for line in listing.splitlines() if "::" in line}
    assert checks, listing
    claimed = {function_of(c) for bug in FAILING for c in bug.checks}  # a check, or one parametrized case of it
    uncaught = sorted(checks - claimed)
    assert not uncaught, f"checks that no bug in corpus/ is shown to fail: {uncaught}"
    unknown = sorted(claimed - checks)
    assert not unknown, f"bugs in corpus/ name checks that do not exist: {unknown}"


def test_patches_apply_exactly_once():
    for bug in BUGS:
        assert bug.source() != (ROOT / "examples" / bug.base).read_text(), bug.id
