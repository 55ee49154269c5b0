"""Scores, area statuses, rubric items and the gate, all derived from areas.py."""

from __future__ import annotations

import pytest

from conformance.areas import AREAS, RUBRIC
from conformance.report import NOT_REACHED, build


def entry(area, outcome, name=None, items=None):
    return {"name": name or f"{area}: check", "area": area, "items": items or list(AREAS[area].items),
            "outcome": outcome, "output": ""}


def all_passing():
    return [entry(area, "passed") for area in AREAS] + [
        entry("strided", "passed", "strided: stride", ["3"]),
        entry("residual", "passed", "residual: projection", ["4"]),
        entry("residual", "passed", "residual: identity path", ["5"]),
    ]


def test_every_area_and_item_appears_and_scores_add_up():
    data = build(all_passing())
    assert set(data["areas"]) == set(AREAS) and set(data["rubric"]["items"]) == set(RUBRIC)
    assert data["score"] == data["max_score"] == 100.0
    assert data["rubric"] == {"items": {i: "passed" for i in RUBRIC}, "items_passed": 8, "gate": "pass",
                              "must_pass_failed": []}


def test_areas_without_checks_are_missing_and_keep_their_weight():
    data = build([entry("conv", "passed")])
    assert data["areas"]["conv"]["status"] == "passed"
    assert data["areas"]["residual"]["status"] == "missing"
    assert data["max_score"] == 100.0 and data["score"] == AREAS["conv"].weight


@pytest.mark.parametrize("outcomes, status", [
    (["passed", "passed"], "passed"),
    (["passed", "failed"], "failed"),
    (["passed", "missing"], "missing"),
    (["missing", "failed"], "failed"),
    (["given", "passed"], "passed"),
    (["given"], "missing"),
    (["error", "passed"], "passed"),
    (["error"], "missing"),
])
def test_area_status(outcomes, status):
    data = build([entry("pooling", o, f"pooling: {i}") for i, o in enumerate(outcomes)])
    assert data["areas"]["pooling"]["status"] == status


def test_given_checks_carry_no_points():
    data = build([entry("modules", "given", "modules: flatten"), entry("modules", "passed", "modules: relu")])
    weights = {t["name"]: t["max_score"] for t in data["tests"]}
    assert weights["modules: flatten"] == 0 and weights["modules: relu"] == AREAS["modules"].weight


def test_gate_needs_six_items_and_every_must_pass_item():
    entries = [e for e in all_passing() if e["area"] != "batchnorm"] + [entry("batchnorm", "failed")]
    data = build(entries)
    assert data["rubric"]["items_passed"] == 7 and data["rubric"]["gate"] == "fail"
    assert data["rubric"]["must_pass_failed"] == ["6"]
    entries = [e for e in all_passing() if e["area"] not in ("conv", "modules", "strided")]
    data = build(entries + [entry("conv", "failed"), entry("modules", "failed")])
    assert data["rubric"]["items_passed"] == 5 and data["rubric"]["gate"] == "fail"
    assert data["rubric"]["must_pass_failed"] == []


def test_pending_checks_fail_when_grading_stopped_early():
    data = build([entry("conv", "pending")], final=True)
    (conv,) = [t for t in data["tests"] if t["tags"][0] == "conv"]
    assert conv["status"] == "failed" and conv["output"] == NOT_REACHED
    assert build([entry("conv", "pending")])["complete"] is False


def test_gradescope_fields():
    data = build([entry("conv", "failed")])
    test = next(t for t in data["tests"] if t["tags"][0] == "conv")
    assert set(test) >= {"name", "score", "max_score", "status", "output", "tags"}
    assert test["status"] == "failed" and test["tags"] == ["conv", "item:1"]


def test_harness_errors_are_not_charged_and_are_listed():
    data = build([entry("modules", "error", "modules: flatten"), entry("modules", "passed", "modules: relu")])
    tests = {t["name"]: t for t in data["tests"]}
    assert tests["modules: flatten"]["max_score"] == 0 and tests["modules: flatten"]["status"] == "passed"
    assert "harness error" in tests["modules: flatten"]["output"]
    assert tests["modules: relu"]["score"] == AREAS["modules"].weight
    assert data["harness_errors"] == ["modules: flatten"] and data["areas"]["modules"]["status"] == "passed"


def test_timing_says_where_the_checks_time_went_per_area():
    timed = [dict(entry("conv", "passed", "conv: a"), seconds={"wall": 2.0, "submission": 0.5, "worker_start": 1.0}),
             dict(entry("conv", "failed", "conv: b"), seconds={"wall": 3.0, "submission": 1.0, "worker_start": 0.0}),
             dict(entry("batchnorm", "passed"), seconds={"wall": 0.5, "submission": 0.25, "worker_start": 0.0}),
             entry("residual", "pending")]  # not run: no time
    timing = build(timed)["timing"]
    assert (timing["checks"], timing["submission"], timing["worker_start"], timing["harness"]) == (5.5, 1.75, 1.0, 2.75)
    assert timing["areas"] == {"conv": {"wall": 5.0, "submission": 1.5},
                               "batchnorm": {"wall": 0.5, "submission": 0.25}}
    assert [check["name"] for check in timing["slowest"]] == ["conv: b", "conv: a", "batchnorm: check"]


def test_a_run_of_some_areas_summarises_only_those_and_leaves_the_gate_undecided():
    from conformance.report import summary_lines

    entries = [entry("conv", "passed"), entry("pooling", "failed")]
    lines = summary_lines(build(entries), ran={"conv", "pooling"})
    text = "\n".join(lines)
    assert lines[0].startswith("checked 2 of 9 areas: conv, pooling.") and "gate: FAIL" not in text
    weights = AREAS["conv"].weight, AREAS["conv"].weight + AREAS["pooling"].weight
    assert lines[1] == f"score in these areas {weights[0]:g} / {weights[1]:g}"
    assert lines[2] == "areas: conv=passed  pooling=failed" and "missing" not in text
    areas_of = {i: {a for a in AREAS if i in AREAS[a].items} for i in RUBRIC}
    deciders = {i for i, areas in areas_of.items() if areas and areas <= {"conv", "pooling"}}
    shown = lines[3].removeprefix("items decided by these areas alone: ").split()
    assert {s.partition("=")[0] for s in shown} == deciders
    assert summary_lines(build(all_passing()), ran=set(AREAS))[0].startswith("score 100 / 100    gate: PASS")


FAILED_OUTPUT = """[area conv, rubric item 1] forward equals F.conv2d with the module's own weight.
Conv2d(1, 1, 1, padding=1) on an input of shape (1, 1, 1, 1): output shape (1, 1, 1, 1), expected (1, 1, 3, 3)
pass stride and padding by keyword

Failing test case: test_conv2d_forward(
    case=<b>1</b>,
)

reproduce it in your notebook, after your definitions:
    import torch

    model = Conv2d(1, 1, 1, padding=1)
    out = model(torch.tensor([[[[0.0]]]], dtype=torch.float32))

reproduce: conformance check sub.py -k 'test_conv2d_forward'"""


def failing_conv():
    entries = [e for e in all_passing() if e["area"] != "conv"]
    entries.append(dict(entry("conv", "failed", "conv: test_conv2d_forward"), output=FAILED_OUTPUT,
                        advisories=["an advisory, not a failure"]))
    return build(entries)


def test_feedback_puts_the_gate_first_then_what_to_revisit_then_each_failure_in_pieces():
    from conformance.areas import REMEDIATION
    from conformance.report import feedback

    data = failing_conv()
    text = feedback(data, "sub")
    lines = text.splitlines()
    assert lines[2].startswith("**Gate: PASS.** 7 of the 8 items passed")
    assert "| 1 | locality: one shared filter at every position | failed |" in text
    revisit = text.split("## What to revisit\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    locality = next(b for b in REMEDIATION if "1" in b.items)
    assert revisit == [f"- **{locality.name}** (item 1 failed): reread {locality.material}. In `reference/`: "
                       f"{'; '.join(locality.reference)}."]  # only the branch of the item that failed
    failure = text.split("#### test_conv2d_forward\n", 1)[1]
    assert failure.index("What differed:") < failure.index("The smallest input found:") \
        < failure.index("Reproduce it in your notebook") < failure.index("Run this check again")
    assert "```python\nimport torch\n\nmodel = Conv2d(1, 1, 1, padding=1)\n" in failure
    assert "output shape (1, 1, 1, 1), expected (1, 1, 3, 3)" in failure.split("The smallest input")[0]
    assert "## Advisories (not failures)\n\n- an advisory, not a failure" in text
    assert text.index("## Failed checks") < text.index("## Advisories")


def test_feedback_html_renders_the_markdown_and_escapes_what_the_submission_said():
    from conformance.report import feedback, feedback_html

    page = feedback_html(feedback(failing_conv(), "sub"), "sub<script>")
    assert page.startswith("<!DOCTYPE html>") and "<title>Feedback for sub&lt;script&gt;</title>" in page
    assert "<table>" in page and "<h4>test_conv2d_forward</h4>" in page
    assert "<b>1</b>" not in page and "&lt;b&gt;1&lt;/b&gt;" in page  # a submission's text is never markup
