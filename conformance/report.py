"""From per-check outcomes to results.json: scores, area statuses, rubric items, the gate.

Everything here is derived from `areas.py` and the list of check entries; nothing is
stored twice. A check entry is a dict with `name`, `area`, `items`, `outcome`
(`passed`, `failed`, `missing`, `given`, `error`, or `pending` while not yet run) and `output`.
`given` (a course-given name the submission does not define) and `error` (the harness's own
code raised: never the learner's fault) carry no points and do not decide an area.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from . import repro
from .areas import AREAS, GATE_MIN_ITEMS, REMEDIATION, RUBRIC

UNGRADED = ("given", "error")  # outcomes that carry no points and decide nothing
NOT_REACHED = "not reached: grading stopped before this check ran (time limit or crash of the harness)"


def build(entries: list[dict], *, impl: str | None = None, strict: bool = False, final: bool = False,
          load: dict | None = None, provenance: dict | None = None) -> dict:
    """The results.json document for these check entries.

    With `final=True`, checks still `pending` count as failed (grading stopped early). `load` is what
    reading and loading the submission said (`notes`: files that could not be read, cells skipped,
    imports that failed, attempts to reach the harness; `failed`: names whose definition failed);
    its notes are the document's top-level `output`, which Gradescope shows above the tests. `provenance`: what
    graded it (`conformance.provenance`).
    """
    document = _build(entries, impl=impl, strict=strict, final=final, load=load, provenance=provenance)
    return localised(document, impl) if impl else document


def localised(document: dict, impl: str) -> dict:
    """The document as the learner knows their files: each path under the submission's folder on the grading
    machine (`/tmp/.../answers.ipynb[cell 8]:14`) written relative to it (`answers.ipynb[cell 8]:14`). The
    provenance, which describes the grading machine, is left as it is."""
    folder = Path(impl).absolute().parent
    prefixes = sorted({f"{folder}{os.sep}", f"{Path(os.path.realpath(folder))}{os.sep}"}, key=len, reverse=True)

    def local(value):
        if isinstance(value, str):
            for prefix in prefixes:
                value = value.replace(prefix, "")
            return value
        if isinstance(value, list):
            return [local(v) for v in value]
        if isinstance(value, dict):
            return {k: (v if k == "provenance" else local(v)) for k, v in value.items()}
        return value

    return local(document)


def _build(entries: list[dict], *, impl: str | None, strict: bool, final: bool, load: dict | None,
           provenance: dict | None) -> dict:
    entries = [dict(e) for e in entries]
    for entry in entries:
        if final and entry["outcome"] == "pending":
            entry["outcome"], entry["output"] = "failed", NOT_REACHED
    tests = []
    for area in AREAS.values():
        own = [e for e in entries if e["area"] == area.id]
        graded = [e for e in own if e["outcome"] not in UNGRADED]
        if not own:
            tests.append(_test(f"{area.id}: not checked by this version of the harness", area.id,
                               list(area.items), "missing", "this area has no checks yet", area.weight))
            continue
        share = area.weight / len(graded) if graded else 0.0
        for e in own:
            tests.append(_test(e["name"], area.id, e["items"], e["outcome"], _output(e),
                               0.0 if e["outcome"] in UNGRADED else share))
    areas = {a: {"status": _status([t for t in tests if t["area"] == a])} for a in AREAS}
    items = {i: _status([t for t in tests if i in t["items"]]) for i in RUBRIC}
    passed = [i for i, s in items.items() if s == "passed"]
    must_fail = [i for i, item in RUBRIC.items() if item.must_pass and items[i] != "passed"]
    gate = "pass" if len(passed) >= GATE_MIN_ITEMS and not must_fail else "fail"
    order = {area_id: index for index, area_id in enumerate(AREAS)}  # the areas' order, however many harnesses ran
    advisories = list(dict.fromkeys(a for e in sorted(entries, key=lambda e: order.get(e["area"], len(order)))
                                    for a in e.get("advisories", [])))
    harness_errors = [e["name"] for e in entries if e["outcome"] == "error"]
    load = {"notes": list((load or {}).get("notes", [])), "failed": dict((load or {}).get("failed", {}))}
    return {
        "output": "\n".join(load["notes"]),
        "score": round(sum(t["score"] for t in tests), 2),
        "max_score": round(sum(t["max_score"] for t in tests), 2),
        "tests": [_gradescope(t) for t in tests],
        "areas": areas,
        "rubric": {"items": items, "items_passed": len(passed), "gate": gate, "must_pass_failed": must_fail},
        "advisories": advisories,
        "harness_errors": harness_errors,
        "load": load,
        "impl": impl,
        "strict": strict,
        "complete": not any(e["outcome"] == "pending" for e in entries),
        "provenance": provenance,
        "timing": timing(entries),
    }


SLOWEST = 5  # checks listed in results.json's timing


def timing(entries: list[dict]) -> dict:
    """Where grading time went (seconds): per check as measured by the plugin, summed per area.

    `checks`: the checks' wall time; `submission`: the part inside the submission's code; `worker_start`:
    starting sandbox workers; `harness`: the rest (oracles, comparisons, Hypothesis, sending data).
    `conformance grade` adds `total` and `startup` (the harness process starting and collecting).
    """
    timed = [(e, e["seconds"]) for e in entries if isinstance(e.get("seconds"), dict)]

    def total(key: str, chosen=timed) -> float:
        return round(sum(s.get(key, 0.0) for _, s in chosen), 2)

    checks, submission, start = total("wall"), total("submission"), total("worker_start")
    areas = {}
    for area_id in AREAS:
        own = [(e, s) for e, s in timed if e["area"] == area_id]
        if own:
            areas[area_id] = {"wall": total("wall", own), "submission": total("submission", own)}
    slowest = sorted(timed, key=lambda pair: -pair[1].get("wall", 0.0))[:SLOWEST]
    return {"checks": checks, "submission": submission, "worker_start": start,
            "harness": round(max(checks - submission - start, 0.0), 2), "areas": areas,
            "slowest": [{"name": e["name"], "wall": s.get("wall", 0.0), "submission": s.get("submission", 0.0)}
                        for e, s in slowest]}


def _test(name, area, items, outcome, output, weight) -> dict:
    return {"name": name, "area": area, "items": list(items), "outcome": outcome, "output": output,
            "score": weight if outcome == "passed" else 0.0, "max_score": weight}


def _output(entry: dict) -> str:
    if entry["outcome"] == "missing":
        return f"missing (not attempted): {entry['output']}"
    if entry["outcome"] == "given":
        return f"not graded: {entry['output']}"
    if entry["outcome"] == "error":
        return f"not graded, harness error (not your code's fault, not charged): {entry['output']}"
    return entry["output"]


def _gradescope(test: dict) -> dict:
    """A Gradescope test entry; `outcome` keeps the finer status, `status` is passed/failed."""
    return {
        "name": test["name"],
        "score": round(test["score"], 4),
        "max_score": round(test["max_score"], 4),
        "status": "passed" if test["outcome"] in ("passed", *UNGRADED) else "failed",
        "outcome": test["outcome"],
        "output": test["output"],
        "tags": [test["area"], *[f"item:{i}" for i in test["items"]]],
    }


def _status(tests: list[dict]) -> str:
    """failed if any check failed; passed if every check ran and passed; otherwise missing."""
    outcomes = [t["outcome"] for t in tests if t["outcome"] not in UNGRADED]
    if any(o == "failed" for o in outcomes):
        return "failed"
    if outcomes and all(o == "passed" for o in outcomes):
        return "passed"
    return "missing"


def summary_lines(data: dict, ran: set[str] | None = None) -> list[str]:
    """The summary a terminal shows. `ran`: the areas this run checked, when not all of them (`check --area`): only
    those are summarised, and the gate, which needs every area, is left undecided rather than failed."""
    if ran is not None and not set(AREAS) <= set(ran):
        return _partial_summary(data, [a for a in AREAS if a in ran])
    lines = [f"score {data['score']:g} / {data['max_score']:g}    gate: {data['rubric']['gate'].upper()} "
             f"({data['rubric']['items_passed']}/8 items"
             + (f"; must-pass not passed: {', '.join(data['rubric']['must_pass_failed'])}"
                if data["rubric"]["must_pass_failed"] else "") + ")"]
    lines.append("areas: " + "  ".join(f"{a}={v['status']}" for a, v in data["areas"].items()))
    lines.append("items: " + "  ".join(f"{i}={s}" for i, s in data["rubric"]["items"].items()))
    lines.extend(f"advisory: {a}" for a in data["advisories"])
    lines.extend(f"HARNESS ERROR (not charged; please report it): {name}" for name in data.get("harness_errors", []))
    return lines


def _partial_summary(data: dict, ran: list[str]) -> list[str]:
    tests = [t for t in data["tests"] if t["tags"][0] in ran]
    deciders: dict[str, set[str]] = {i: set() for i in RUBRIC}
    for test in data["tests"]:
        for tag in test["tags"][1:]:
            deciders[tag.removeprefix("item:")].add(test["tags"][0])
    decided = {i: s for i, s in data["rubric"]["items"].items() if deciders[i] and deciders[i] <= set(ran)}
    lines = [f"checked {len(ran)} of {len(AREAS)} areas: {', '.join(ran)}. The gate needs every area: run without "
             "--area to decide it",
             f"score in these areas {sum(t['score'] for t in tests):g} / {sum(t['max_score'] for t in tests):g}",
             "areas: " + "  ".join(f"{a}={data['areas'][a]['status']}" for a in ran),
             "items decided by these areas alone: " + ("  ".join(f"{i}={s}" for i, s in decided.items()) or "none")]
    lines.extend(f"advisory: {a}" for a in data["advisories"])
    lines.extend(f"HARNESS ERROR (not charged; please report it): {name}" for name in data.get("harness_errors", []))
    return lines


def selected_lines(data: dict, names: set[str], left_out: int) -> list[str]:
    """The summary of a run that selected some checks (`conformance check PATH -k NAME`): the outcomes of those
    (`names`) only. An area and the gate need every check, so neither is decided."""
    ran = [t for t in data["tests"] if t["name"] in names]
    lines = [f"ran {len(ran)} selected check{'s' if len(ran) != 1 else ''} ({left_out} left out): an area and the "
             "gate need every check, so neither is decided here; run without -k to decide them"]
    lines += [f"{t['name']}: {t['outcome']}" for t in ran]
    lines.extend(f"advisory: {a}" for a in data["advisories"])
    lines.extend(f"HARNESS ERROR (not charged; please report it): {name}" for name in data.get("harness_errors", []))
    return lines


EXAMPLE_MARKS = ("Failing test case", "Falsifying example", "Failing explicit example", "Falsifying explicit example")


def parts(output: str) -> dict[str, str]:
    """A failed check's output in the pieces feedback shows apart: what differed, the smallest input found, the
    reproduction snippet and the command that runs the check again."""
    text, _, rerun = output.partition(f"\n\n{repro.RERUN}")
    text, _, snippet = text.partition(f"\n\n{repro.HEADING}\n")
    lines = text.splitlines()[1:]  # the first line is the check's heading, shown as the section's title
    cut = next((i for i, line in enumerate(lines) if line.startswith(EXAMPLE_MARKS)), len(lines))
    return {"differed": "\n".join(lines[:cut]).strip(), "example": "\n".join(lines[cut:]).strip(),
            "snippet": "\n".join(line.removeprefix("    ") for line in snippet.splitlines()).strip(),
            "rerun": f"{repro.RERUN}{rerun}".strip() if rerun else ""}


def feedback(data: dict, name: str) -> str:
    """The learner's feedback beside results.json (markdown): the gate first, what to revisit, then each failed
    area's checks with what differed, the smallest input, a reproduction to paste into a notebook; advisories
    apart."""
    rubric = data["rubric"]
    must = [i for i, item in RUBRIC.items() if item.must_pass]
    verdict = (f"**Gate: {rubric['gate'].upper()}.** {rubric['items_passed']} of the {len(RUBRIC)} items passed "
               f"(the gate needs {GATE_MIN_ITEMS}, and items {', '.join(must)} must pass)")
    if rubric["must_pass_failed"]:
        verdict += f"; must-pass items not passed: {', '.join(rubric['must_pass_failed'])}"
    out = [f"# Feedback for {name}", "", verdict + ".", "", "| item | question | |", "|---|---|---|"]
    out += [f"| {i} | {item.question} | {rubric['items'][i]} |" for i, item in RUBRIC.items()]
    out += ["", f"Score {data['score']:g} / {data['max_score']:g}.", "", "| area | status | points |", "|---|---|---|"]
    for area in AREAS.values():
        got = sum(t["score"] for t in data["tests"] if t["tags"][0] == area.id)
        out.append(f"| `{area.id}` | {data['areas'][area.id]['status']} | {got:.3g} / {area.weight:g} |")
    notes = data.get("load", {}).get("notes", [])
    extra = [line for line in data.get("output", "").splitlines() if line and line not in notes]
    if notes or extra:  # early: a learner whose file could not be read should see why before anything else
        out += ["", "## Reading and loading your submission", ""] + [f"- {n}" for n in [*extra, *notes]]
    missed = [i for i, status in rubric["items"].items() if status != "passed"]
    branches = [b for b in REMEDIATION if any(i in missed for i in b.items)]
    if branches:
        out += ["", "## What to revisit", ""]
        for branch in branches:
            items = [i for i in branch.items if i in missed]
            out.append(f"- **{branch.name}** (item{'s' if len(items) > 1 else ''} {', '.join(items)} "
                       f"{rubric['items'][items[0]]}): reread {branch.material}. In `reference/`: "
                       f"{'; '.join(branch.reference)}.")
    failed = [t for t in data["tests"] if t["outcome"] == "failed"]
    if failed:
        out += ["", "## Failed checks", ""]
    for area in AREAS.values():
        own = [t for t in failed if t["tags"][0] == area.id]
        if not own:
            continue
        items = f"; decides item{'s' if len(area.items) > 1 else ''} {', '.join(area.items)}" if area.items else ""
        out += [f"### {area.id} ({area.weight:g} points{items})", ""]
        for test in own:
            piece = parts(test["output"])
            heading = test["output"].splitlines()[0] if test["output"] else ""
            out += [f"#### {test['name'].partition(': ')[2]}", "", heading.partition("] ")[2] or heading, ""]
            out += ["What differed:", "", "```", piece["differed"] or "(no message)", "```", ""]
            if piece["example"]:
                out += ["The smallest input found:", "", "```", piece["example"], "```", ""]
            if piece["snippet"]:
                out += ["Reproduce it in your notebook, after your definitions:", "", "```python", piece["snippet"],
                        "```", ""]
            if piece["rerun"]:
                out += [f"Run this check again: `{piece['rerun'].removeprefix('reproduce: ')}`", ""]
    missing = [t for t in data["tests"] if t["outcome"] == "missing"]
    if missing:
        out += ["", "## Not attempted (missing)", ""] + [f"- {t['name']}: {t['output']}" for t in missing]
    if data["advisories"]:
        out += ["", "## Advisories (not failures)", ""] + [f"- {a}" for a in data["advisories"]]
    errors = [t for t in data["tests"] if t["outcome"] == "error"]
    if errors:
        out += ["", "## Harness errors (not charged; the harness's fault, please report them)", ""]
        out += [f"- {t['name']}:\n\n```\n{t['output']}\n```" for t in errors]
    passed = [t["name"] for t in data["tests"] if t["outcome"] == "passed"]
    if passed:
        out += ["", "## Passed", ""] + [f"- {n}" for n in passed]
    return "\n".join(out).rstrip() + "\n"


def feedback_html(markdown: str, name: str) -> str:
    """The feedback as a page for a browser: the same markdown, rendered (markdown-it, CommonMark with tables)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return HTML_PAGE.format(title=html.escape(name), body=body)


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback for {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; }}
pre {{ background: #f6f8fa; padding: 0.8rem; white-space: pre-wrap; overflow-wrap: anywhere; }}
code {{ font-size: 0.9em; }}
h3 {{ border-top: 1px solid #ddd; padding-top: 1rem; }}
</style></head><body>
{body}</body></html>
"""
