"""How long grading takes: one correct submission, one with bugs in three areas, a class of 30.

    python -m benchmarks.run [--only single,three,class] [--jobs 2] [--out benchmarks/results.json]

Each run is `conformance grade --jobs 2` (the machine's two cores) at the default profile, as an
instructor runs it, from a fresh process: one submission with a job to spare is graded in two
harnesses at once (`budgets.APART`). The figures come from the results.json files: wall time, the time spent
inside the submission's code (its definitions, then every call the checks make into it)
against the rest (starting the harness and the workers, oracles, comparisons, Hypothesis),
per area, and the slowest checks. The targets are issue 9's, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import EXAMPLES, ROOT, load_bugs

HERE = Path(__file__).resolve().parent
CORRECT = EXAMPLES / "learner_submission.py"
# One bug in each of three areas, each a patch on the same correct submission: a Conv2d that ignores its padding
# (inherited by every composite built on it), a BatchNorm2d that keeps the batch statistics in eval mode, and a
# residual block whose ReLU sits on its left branch only.
THREE_BUGS = ("conv-ignores-padding", "bn-batch-stats-in-eval", "res-relu-on-left-only")
CLASS_SIZE = 30
TARGETS = {"single": 10.0, "three": 20.0, "class": 180.0}  # seconds, on 2 cores


def three_bug_source() -> str:
    bugs = {bug.id: bug for bug in load_bugs()}
    text = CORRECT.read_text()
    for bug_id in THREE_BUGS:
        for old, new in bugs[bug_id].patches:
            if text.count(old) != 1:
                raise ValueError(f"{bug_id}: its patch no longer applies once the others are in")
            text = text.replace(old, new)
    return text


def class_of(folder: Path, size: int = CLASS_SIZE) -> list[Path]:
    """`size` submissions: every correct one of the corpus, then bugs of every area in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in sorted((ROOT / "corpus" / "correct").iterdir()):
        if entry.name == "MANIFEST.toml" or entry.name.startswith((".", "__")):
            continue
        target = folder / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(entry, target)
        paths.append(target)
    bugs = [bug for bug in load_bugs() if not bug.advisory]
    by_area: dict[str, list] = {}
    for bug in bugs:
        by_area.setdefault(bug.area, []).append(bug)
    round_robin = [queue.pop(0) for _ in range(max(map(len, by_area.values())))
                   for queue in by_area.values() if queue]
    for bug in round_robin[:max(0, size - len(paths))]:
        paths.append(bug.write(folder))
    return paths[:size]


def grade(paths: list[Path], out: Path, jobs: int) -> tuple[float, list[dict]]:
    command = [sys.executable, "-m", "conformance.cli", "grade", *map(str, paths), "--out", str(out),
               "--jobs", str(jobs)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.monotonic() - started
    results = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        data = json.loads((folder / "results.json").read_text())
        results.append({"name": folder.name, "score": data["score"], "timing": data["timing"],
                        "failed_areas": [a for a, v in data["areas"].items() if v["status"] == "failed"]})
    return wall, results


def describe(title: str, wall: float, results: list[dict], target: float) -> dict:
    submission = sum(r["timing"]["submission"] for r in results)
    # A submission's own time: its checks (summed over its harnesses when it was graded in two) and the start.
    busy = sum(r["timing"]["checks"] + r["timing"]["startup"] for r in results)
    areas: dict[str, dict[str, float]] = {}
    slowest = []
    for result in results:
        for area_id, spent in result["timing"]["areas"].items():
            row = areas.setdefault(area_id, {"wall": 0.0, "submission": 0.0})
            row["wall"] += spent["wall"]
            row["submission"] += spent["submission"]
        slowest += [dict(check, submission_name=result["name"]) for check in result["timing"]["slowest"]]
    slowest.sort(key=lambda check: -check["wall"])
    print(f"\n== {title}: {wall:.1f} s wall ({'within' if wall <= target else 'OVER'} the {target:g} s target)")
    print(f"   {len(results)} submission(s); {busy:.1f} s of grading work in all (summed over harnesses running at "
          f"once), {submission:.1f} s of it inside the submissions' code, {busy - submission:.1f} s in the harness "
          "(start, workers, oracles, comparisons)")
    for result in results[:3] if len(results) > 3 else results:
        timing = result["timing"]
        print(f"   {result['name']}: score {result['score']:g}, failed {result['failed_areas'] or 'nothing'}; "
              f"{timing['total']} s from its launch; checks {timing['checks']} s (submission {timing['submission']}, "
              f"worker start {timing['worker_start']}, harness {timing['harness']}), startup {timing['startup']} s")
    print("   per area (wall / inside the submission): " + ", ".join(
        f"{a} {v['wall']:.1f}/{v['submission']:.1f}" for a, v in areas.items()))
    print("   slowest checks: " + "; ".join(f"{c['name']} {c['wall']:.1f} s" for c in slowest[:5]))
    return {"wall": round(wall, 1), "target": target, "submissions": len(results), "busy": round(busy, 1),
            "submission": round(submission, 1), "areas": {a: {k: round(v, 2) for k, v in row.items()}
                                                         for a, row in areas.items()},
            "slowest": slowest[:5], "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="single,three,class", help="which runs (comma-separated)")
    parser.add_argument("--jobs", type=int, default=2, help="--jobs of every run (default 2)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    options = parser.parse_args(argv)
    chosen = options.only.split(",")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "single" in chosen:
            path = work / "single" / "learner_submission.py"
            path.parent.mkdir()
            shutil.copy(CORRECT, path)
            report["single"] = describe(f"one correct submission (--jobs {options.jobs})",
                                        *grade([path], work / "single-out", options.jobs), TARGETS["single"])
        if "three" in chosen:
            path = work / "three" / "three_bugs.py"
            path.parent.mkdir()
            path.write_text(three_bug_source())
            report["three"] = describe(f"bugs in three areas ({', '.join(THREE_BUGS)}; --jobs {options.jobs})",
                                       *grade([path], work / "three-out", options.jobs), TARGETS["three"])
        if "class" in chosen:
            paths = class_of(work / "class")
            report["class"] = describe(f"a class of {len(paths)} (the correct corpus and bugs; --jobs {options.jobs})",
                                       *grade(paths, work / "class-out", options.jobs), TARGETS["class"])
    Path(options.out).write_text(json.dumps(report, indent=1))
    print(f"\nwritten to {options.out}")
    return 0 if all(run["wall"] <= run["target"] for run in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
