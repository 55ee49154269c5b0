"""`conformance grade` (CONTRACT section 5) and `conformance check` (the learner's edit loop).

Each submission is graded by its own `pytest` process (the harness), which in turn
runs the submission's code in a sandbox worker. Exit status: 0 when every submission
was graded, whatever the grades; 2 when the harness itself could not run (bad
arguments, unreadable path).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from under_test import sandbox
from under_test.sandbox import DEFAULT_LOAD_TIMEOUT, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT
from under_test.source import SubmissionError, read_submission, submission_name

from . import report
from .areas import AREAS

DEFAULT_SUBMISSION_TIMEOUT = 900.0
_CHILDREN = threading.Lock()  # starting a harness and ending adopted orphans never overlap
PROFILES = ("conformance", "dev", "thorough", "corpus")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conformance", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade submissions; write results.json, feedback and summary.csv")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="a .py file, an .ipynb notebook or a directory")
    grade.add_argument("--out", required=True, metavar="DIR")
    grade.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded at once (default 1)")
    grade.add_argument("--timeout", type=float, default=DEFAULT_SUBMISSION_TIMEOUT, metavar="SECONDS",
                       help=f"wall time for one submission (default {DEFAULT_SUBMISSION_TIMEOUT:g})")
    _common(grade)
    grade.set_defaults(run=_grade)

    check = commands.add_parser("check", help="run the checks on one implementation with pytest's output")
    check.add_argument("path", metavar="PATH")
    check.add_argument("--area", action="append", default=[], choices=list(AREAS), help="only this area (repeatable)")
    _common(check)
    check.set_defaults(run=_check)

    options, extra = parser.parse_known_args(argv)
    if extra and options.command != "check":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for pair in options.alias:
        if "=" not in pair or not all(p.strip() for p in pair.split("=", 1)):
            parser.error(f"--alias takes OLD=NEW, got {pair!r}")
    return options.run(options, extra)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true", help="require PyTorch's conventions where ARENA differs")
    parser.add_argument("--alias", action="append", default=[], metavar="OLD=NEW",
                        help="grade the submission's OLD as NEW (repeatable)")
    parser.add_argument("--profile", default="conformance", choices=PROFILES, help="Hypothesis profile")
    parser.add_argument("--probe-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"wall time of one call into the submission (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                        help=f"memory cap of the submission's worker (default {DEFAULT_MEMORY_MB})")
    parser.add_argument("--load-timeout", type=float, default=DEFAULT_LOAD_TIMEOUT, metavar="SECONDS",
                        help="wall time of one top-level definition while loading the submission "
                             f"(default {DEFAULT_LOAD_TIMEOUT:g})")


def _pytest_command(impl: Path, options: argparse.Namespace, ini: Path) -> list[str]:
    command = [sys.executable, "-m", "pytest", "--pyargs", "conformance.checks", "--impl", str(impl),
               "-c", str(ini), "--rootdir", str(ini.parent), "-p", "no:cacheprovider",
               f"--hypothesis-profile={options.profile}", f"--probe-timeout={options.probe_timeout}",
               f"--memory-mb={options.memory_mb}", f"--load-timeout={options.load_timeout}"]
    command += ["--strict-conventions"] if options.strict else []
    command += [f"--alias={pair}" for pair in options.alias]
    return command


def _isolated_ini(directory: Path) -> Path:
    """An empty pytest configuration, so no conftest or ini of the caller's tree interferes."""
    ini = directory / "pytest.ini"
    ini.write_text("[pytest]\n")
    return ini


def _check(options: argparse.Namespace, extra: list[str]) -> int:
    try:
        source = read_submission(options.path)
    except SubmissionError as error:
        print(f"conformance: {error}", file=sys.stderr)
        return 2
    for problem in source.problems:
        print(f"conformance: {problem}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        command = _pytest_command(Path(options.path).resolve(), options, _isolated_ini(Path(tmp)))
        command += [f"--area={a}" for a in options.area] + extra
        return subprocess.call(command)


# ---- grade -------------------------------------------------------------------------

def _grade(options: argparse.Namespace, extra: list[str]) -> int:
    out = Path(options.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"conformance: cannot create {out}: {error}", file=sys.stderr)
        return 2
    submissions, unreadable = [], []
    names: set[str] = set()
    for raw in options.paths:
        path = Path(raw)
        if not path.exists():  # anything that exists is a submission, however broken (it is graded 0 and told why)
            unreadable.append(f"{path}: no such file or directory")
            continue
        name = submission_name(path.resolve())
        unique, n = name, 2
        while unique in names:
            unique, n = f"{name}-{n}", n + 1
        names.add(unique)
        submissions.append((unique, path.resolve()))
    for message in unreadable:
        print(f"conformance: {message}", file=sys.stderr)

    rows = []
    sandbox.become_subreaper()
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        for row in pool.map(lambda s: _grade_one(s[0], s[1], out / s[0], options), submissions):
            rows.append(row)
            print(f"{row['name']}: {row['score']:g}/{row['max_score']:g}, gate {row['gate']}"
                  + (f" ({row['error']})" if row["error"] else ""), flush=True)
    _write_summary(out / "summary.csv", rows)
    return 2 if unreadable else 0


def _grade_one(name: str, path: Path, directory: Path, options: argparse.Namespace) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    results_path = directory / "results.json"
    results_path.unlink(missing_ok=True)
    error = ""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        checks_path = Path(tmp) / "checks.json"
        command = _pytest_command(path, options, _isolated_ini(Path(tmp))) + \
            ["--checks-json", str(checks_path), "-q", "-p", "no:randomly"]
        with open(directory / "log.txt", "w") as log:
            with _CHILDREN:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                           start_new_session=True,
                                           env=dict(os.environ, PYTHONHASHSEED="0"))
                sandbox.LIVE.add(process.pid)
            try:
                process.wait(timeout=options.timeout)
            except subprocess.TimeoutExpired:
                error = f"grading stopped after the {options.timeout:g} s time limit"
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
                with _CHILDREN:
                    sandbox.LIVE.discard(process.pid)
                    sandbox.kill_adopted()  # the orphans of a harness stopped by the time limit, and of its workers
        try:
            checks = json.loads(checks_path.read_text())
            entries, load = checks["entries"], checks["load"]
        except (OSError, ValueError, KeyError, TypeError):
            entries, load = [], None
            error = error or f"the harness produced no results (see {directory / 'log.txt'})"
    data = report.build(entries, impl=str(path), strict=options.strict, final=True, load=load)
    data["execution_time"] = round(time.monotonic() - started, 1)
    data["timing"]["total"] = data["execution_time"]
    data["timing"]["startup"] = round(max(data["execution_time"] - data["timing"]["checks"], 0.0), 2)
    if error:
        data["output"] = "\n".join(filter(None, [error, data["output"]]))
    results_path.write_text(json.dumps(data, indent=2))
    (directory / "feedback.md").write_text(report.feedback(data, name))
    return {
        "name": name, "path": str(path), "score": data["score"], "max_score": data["max_score"],
        "gate": data["rubric"]["gate"], "items_passed": data["rubric"]["items_passed"],
        "must_pass_failed": " ".join(data["rubric"]["must_pass_failed"]),
        **{area: data["areas"][area]["status"] for area in AREAS},
        "advisories": " | ".join(data["advisories"]), "error": error,
    }


def _write_summary(path: Path, rows: list[dict]) -> None:
    fields = ["name", "path", "score", "max_score", "gate", "items_passed", "must_pass_failed", *AREAS,
              "advisories", "error"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["name"]))


if __name__ == "__main__":
    raise SystemExit(main())
