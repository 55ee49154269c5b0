"""`conformance grade` (CONTRACT section 5) and `conformance check` (the learner's edit loop).

Each submission is graded by its own harness process (a pytest session), forked from
the command once it has imported the harness and built its oracles; the harness runs
the submission's code in a sandbox worker. Exit status: 0 when every submission
was graded, whatever the grades; 2 when the harness itself could not run (bad
arguments, unreadable path).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from under_test import processes
from under_test.processes import DEFAULT_LOAD_TIMEOUT, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT
from under_test.source import SubmissionError, read_submission, submission_name

from . import report
from .areas import AREAS

DEFAULT_SUBMISSION_TIMEOUT = 900.0
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

    if argv is None and sys.argv[1:2] == ["grade"] and os.environ.get("PYTHONHASHSEED") != "0":
        # Same submission, same installation, same results.json: string hashing (set order) fixed for the harnesses.
        os.execve(sys.executable, [sys.executable, "-m", "conformance.cli", *sys.argv[1:]],
                  dict(os.environ, PYTHONHASHSEED="0"))
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
    return [sys.executable, "-m", "pytest", *_pytest_arguments(impl, options, ini)]


def _pytest_arguments(impl: Path, options: argparse.Namespace, ini: Path) -> list[str]:
    command = ["--pyargs", "conformance.checks", "--impl", str(impl),
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
    processes.become_subreaper()
    waiting = list(submissions)
    running: dict[int, _Running] = {}
    imported = warm = False
    try:
        while waiting or running:
            while waiting and len(running) < max(1, options.jobs):
                name, path = waiting.pop(0)
                job = _launch(name, path, out / name, options, warm=imported)
                running[job.pid] = job
            if not imported and waiting:  # while the first harnesses import it themselves, beside their zygotes
                _import_harness()
                imported = True
            if not warm and waiting:  # while the first harnesses run: those forked later find the oracles built
                _warm_oracles()
                warm = True
            for job in list(running.values()):
                error = _poll(job, options.timeout)
                if error is None:
                    continue
                del running[job.pid]
                row = _finish(job, error, options)
                rows.append(row)
                print(f"{row['name']}: {row['score']:g}/{row['max_score']:g}, gate {row['gate']}"
                      + (f" ({row['error']})" if row["error"] else ""), flush=True)
            if running:
                time.sleep(0.05)
    finally:
        for job in running.values():  # interrupted: no harness (nor what it started) outlives the command
            _end(job.pid)
        processes.kill_adopted()
    _write_summary(out / "summary.csv", rows)
    return 2 if unreadable else 0


def _import_harness() -> None:
    """Import the harness once: each submission's harness is a fork of this process and starts in milliseconds."""
    import importlib

    import torch

    torch.set_num_threads(1)  # before any fork: one thread per harness, and no thread pool to inherit
    import pytest  # noqa: F401

    from under_test import sandbox

    from . import plugin  # noqa: F401 - registers the Hypothesis profiles
    for area_id in AREAS:
        importlib.import_module(f"conformance.checks.test_{area_id}")
    sandbox.standin_cache()


def _warm_oracles() -> None:
    """Build what every harness builds (the pretrained stand-in's entries and model, the digits), once."""
    from .checks import test_feature_extraction, test_weight_copy

    test_feature_extraction.pretrained_entries()
    test_feature_extraction.feature_oracle()
    test_feature_extraction.digits()
    test_weight_copy.torchvision_entries()
    test_weight_copy.pretrained_state()


@dataclass
class _Running:
    pid: int
    name: str
    path: Path
    directory: Path
    tmp: Path
    started: float


def _launch(name: str, path: Path, directory: Path, options: argparse.Namespace, warm: bool = True) -> _Running:
    """Fork a harness for one submission: a pytest session of its own, in its own process group.

    A `warm` fork has the harness imported already (this process's). A cold one (the first `--jobs` harnesses,
    forked before this process imports anything heavy) starts its workers' zygote first: the zygote imports
    torch while the harness imports itself, instead of after.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="conformance-grade-"))
    arguments = _pytest_arguments(path, options, _isolated_ini(tmp)) + \
        ["--checks-json", str(tmp / "checks.json"), "-q", "-p", "no:randomly"]
    pid = fork_harness(lambda: _pytest_main(arguments, cold=not warm), directory / "log.txt", tmp)
    processes.LIVE.add(pid)
    return _Running(pid, name, path, directory, tmp, time.monotonic())


def _pytest_main(arguments: list[str], cold: bool = False) -> int:
    if cold:
        processes.own_zygote()
    import pytest

    return int(pytest.main(arguments))


def fork_harness(run: Callable[[], int], log: Path, cwd: Path) -> int:
    """Run `run()` (a pytest session) in a fork of this process, which has imported the harness already; return
    the child's pid. The child has its own process group, writes its output to `log`, works in `cwd` (Hypothesis's
    storage too), adopts its own workers' orphans, and exits with `run()`'s status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(cwd)
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(Path(cwd) / ".hypothesis")  # not the caller's folder
        processes.LIVE.clear()
        processes.forget_subreaper()  # the flag is not inherited: ask again
        code = run()
    finally:
        os._exit(code)


def _poll(job: _Running, timeout: float) -> str | None:
    """None while the harness runs; "" when it has finished; the reason when it was stopped."""
    done, _ = os.waitpid(job.pid, os.WNOHANG)
    if done:
        _end(job.pid, reaped=True)
        return ""
    if time.monotonic() - job.started > timeout:
        _end(job.pid)
        return f"grading stopped after the {timeout:g} s time limit"
    return None


def _end(pid: int, reaped: bool = False) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the harness and whatever stayed in its group
    except (ProcessLookupError, PermissionError):
        pass
    if not reaped:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    processes.LIVE.discard(pid)
    processes.kill_adopted()  # the orphans of a harness stopped by the time limit, and of its workers


def _finish(job: _Running, error: str, options: argparse.Namespace) -> dict:
    try:
        checks = json.loads((job.tmp / "checks.json").read_text())
        entries, load = checks["entries"], checks["load"]
    except (OSError, ValueError, KeyError, TypeError):
        entries, load = [], None
        error = error or f"the harness produced no results (see {job.directory / 'log.txt'})"
    shutil.rmtree(job.tmp, ignore_errors=True)
    data = report.build(entries, impl=str(job.path), strict=options.strict, final=True, load=load)
    data["execution_time"] = round(time.monotonic() - job.started, 1)
    data["timing"]["total"] = data["execution_time"]
    data["timing"]["startup"] = round(max(data["execution_time"] - data["timing"]["checks"], 0.0), 2)
    if error:
        data["output"] = "\n".join(filter(None, [error, data["output"]]))
    (job.directory / "results.json").write_text(json.dumps(data, indent=2))
    (job.directory / "feedback.md").write_text(report.feedback(data, job.name))
    return {
        "name": job.name, "path": str(job.path), "score": data["score"], "max_score": data["max_score"],
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
