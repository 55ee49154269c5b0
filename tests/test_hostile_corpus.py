"""Hostile and broken submissions: no undue credit, every submission graded (the batch time: CONFORMANCE_HOSTILE_TIMES=1).

All of `corpus/hostile/` is graded in one `conformance grade --jobs 2` batch, from a copy in a
temporary folder, next to a correct submission. `corpus/hostile/MANIFEST.toml` says what each
case does and the outcome a grader must show. The batch must finish with exit status 0, every
submission must get a results.json, the correct one the same grade as when graded alone,
nothing the submissions started may still run, and nothing outside the temporary folders
may change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conformance.areas import AREAS
from corpus import ROOT

pytestmark = pytest.mark.slow  # grades whole submissions: not in the fast lane (`-m 'not slow'`)

FOLDER = ROOT / "corpus" / "hostile"
MANIFEST = tomllib.loads((FOLDER / "MANIFEST.toml").read_text())["case"]
CONTROL = "control_correct_blocks.py"
# Short limits keep the batch fast; the defaults (README) only make hangs cost more.
OPTIONS = ["--profile", "corpus", "--probe-timeout", "3", "--load-timeout", "5", "--timeout", "300"]
# The tools' own folders: the tests running beside this one write Hypothesis's and ruff's caches into the checkout
# (a new constants file for each edited source file).
SKIP_IN_REPO = (".git", ".venv", ".tox", ".hypothesis", ".ruff_cache", ".import_linter_cache", ".pytest_cache",
                "graded", "cnn_conformance.egg-info")
LEFT_RUNNING = ("sleep 3141", "sleep 3142")  # what background_process.py starts


def grade(paths: list[Path], out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "conformance.cli", "grade", *map(str, paths), "--out", str(out), *OPTIONS, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=out.parent)


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file below `folder` (but `skip`ped top-level entries) with its size and modification time."""
    files = {}
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip or "__pycache__" in relative.parts or not path.is_file():
            continue
        stat = path.stat()
        files[str(relative)] = (stat.st_size, stat.st_mtime_ns)
    return files


def running(pattern: str) -> list[str]:
    done = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def test_the_manifest_lists_every_case_and_only_those():
    listed = {case["path"] for case in MANIFEST} | {CONTROL}
    present = {p.name for p in FOLDER.iterdir() if p.name != "MANIFEST.toml" and not p.name.startswith((".", "__"))}
    assert listed == present
    for case in MANIFEST:
        assert set(case.get("failed", [])) | set(case.get("clean", [])) <= set(AREAS), case
        assert case["what"].strip() and ("failed" not in case or case.get("says")), case


def test_hostile_batch(tmp_path):
    work = tmp_path / "class"  # the submissions' folder: the one above the files they may try to vandalise
    submissions = work / "submissions"
    shutil.copytree(FOLDER, submissions, ignore=shutil.ignore_patterns("MANIFEST.toml", "__pycache__"))
    (work / "sentinel.txt").write_text("must survive")
    repo_before = snapshot(ROOT, skip=SKIP_IN_REPO)
    submissions_before = snapshot(submissions)

    started = time.monotonic()
    done = grade(sorted(submissions.iterdir()), work / "out", "--jobs", "2")
    batch_seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]

    problems = []
    for case in MANIFEST:
        name = Path(case["path"]).stem
        results = work / "out" / name / "results.json"
        if not results.exists():
            problems.append(f"{case['path']}: no results.json")
            continue
        data = json.loads(results.read_text())
        feedback = (work / "out" / name / "feedback.md").read_text()
        problems += [f"{case['path']} ({case['what']}): {p}" for p in judge(case, data, feedback)]
    assert not problems, "\n".join(problems)

    # The control, graded in the same batch, gets the grade it gets alone.
    alone = grade([submissions / CONTROL], work / "alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    in_batch, by_itself = (json.loads((work / folder / Path(CONTROL).stem / "results.json").read_text())
                           for folder in ("out", "alone"))
    assert in_batch["score"] == by_itself["score"] > 0
    assert [(t["name"], t["outcome"]) for t in in_batch["tests"]] == [(t["name"], t["outcome"])
                                                                     for t in by_itself["tests"]]

    # Nothing left running, nothing outside the temporary folders changed.
    for pattern in LEFT_RUNNING:
        assert not running(pattern), f"a submission's process outlived grading: {running(pattern)}"
    assert snapshot(submissions) == submissions_before, "a submission changed the submissions' folder"
    assert (work / "sentinel.txt").read_text() == "must survive"
    assert sorted(p.name for p in work.iterdir()) == ["alone", "out", "sentinel.txt", "submissions"]
    assert snapshot(ROOT, skip=SKIP_IN_REPO) == repo_before
    if os.environ.get("CONFORMANCE_HOSTILE_TIMES"):
        print_times(work / "out", batch_seconds)


def judge(case: dict, data: dict, feedback: str) -> list[str]:
    """What is wrong with this case's results (empty: the grader showed what it must)."""
    problems = []
    statuses = {area: data["areas"][area]["status"] for area in AREAS}
    failed_outputs = {area: [t["output"] for t in data["tests"] if t["tags"][0] == area and t["outcome"] == "failed"]
                      for area in AREAS}
    if "score" in case and data["score"] != case["score"]:
        problems.append(f"score {data['score']}, expected {case['score']}")
    if data["score"] >= 100 or data["rubric"]["gate"] == "pass":
        problems.append("undue credit")
    for area in case.get("failed", []):
        if statuses[area] != "failed":
            problems.append(f"area {area} is {statuses[area]}, expected failed")
    said = [text for area in case.get("failed", []) for text in failed_outputs[area]] + [data["output"]]
    if case.get("failed") and not any(case["says"] in text for text in said):
        problems.append(f"no failure says {case['says']!r}: {said[:1]}")
    for area in case.get("clean", []):
        if failed_outputs[area]:
            problems.append(f"area {area} has failed checks, expected none: {failed_outputs[area][:1]}")
    if "output" in case and case["output"] not in data["output"]:
        problems.append(f"output {data['output']!r} does not say {case['output']!r}")
    if "output" in case and case["output"] not in feedback:
        problems.append(f"feedback.md does not say {case['output']!r}")
    if "advice" in case and not any(case["advice"] in a for a in data["advisories"]):
        problems.append(f"no advisory says {case['advice']!r}: {data['advisories']}")
    if harness := data.get("harness_errors"):
        problems.append(f"harness errors: {harness}")
    return problems


def print_times(out: Path, batch_seconds: float) -> None:
    for case in MANIFEST:
        data = json.loads((out / Path(case["path"]).stem / "results.json").read_text())
        print(f"{case['path']}: {data['execution_time']} s, score {data['score']}")
    print(f"batch: {batch_seconds:.0f} s")
