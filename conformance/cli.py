"""`conformance grade` (docs/interface.md, section 5) and `conformance check` (the learner's edit loop).

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
from dataclasses import dataclass
from pathlib import Path

from under_test import processes
from under_test.source import SubmissionError, read_submission, submission_name

from . import classreport, journal, launch, progress, provenance, report
from . import options as grading
from .areas import AREAS
from .profiles import PROFILES

DEFAULT_SUBMISSION_TIMEOUT = 900.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conformance", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade submissions; write results.json, feedback and summary.csv")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="a .py file, an .ipynb notebook or a directory")
    grade.add_argument("--out", required=True, metavar="DIR")
    grade.add_argument("--jobs", type=int, default=available_cores(), metavar="N",
                       help="harnesses run at once (default: the cores this process may use, here "
                            f"{available_cores()})")
    grade.add_argument("--timeout", type=float, default=DEFAULT_SUBMISSION_TIMEOUT, metavar="SECONDS",
                       help=f"wall time for one submission (default {DEFAULT_SUBMISSION_TIMEOUT:g})")
    grade.add_argument("--each", action="store_true",
                       help="a PATH that is a folder holds one submission per entry (file, notebook or directory), "
                            "rather than being one submission")
    grade.add_argument("--force", action="store_true",
                       help="grade again submissions whose results.json is newer than them and was graded the same way")
    _common(grade)
    grade.set_defaults(run=_grade)

    check = commands.add_parser("check", help="run the checks on one implementation with pytest's output")
    check.add_argument("path", metavar="PATH")
    check.add_argument("--area", action="append", default=[], choices=list(AREAS), help="only this area (repeatable)")
    _common(check)
    check.set_defaults(run=_check)

    bundle = commands.add_parser("gradescope", help="build a Gradescope autograder bundle (setup.sh, run_autograder, "
                                 "this harness and its pinned libraries)")
    bundle.add_argument("--out", default="autograder.zip", metavar="ZIP", help="where (default autograder.zip)")
    bundle.set_defaults(run=_gradescope)

    if argv is None and sys.argv[1:2] == ["grade"] and os.environ.get("PYTHONHASHSEED") != "0":
        # Same submission, same installation, same results.json: string hashing (set order) fixed for the harnesses.
        os.execve(sys.executable, [sys.executable, "-m", "conformance.cli", *sys.argv[1:]],
                  dict(os.environ, PYTHONHASHSEED="0"))
    options, extra = parser.parse_known_args(argv)
    if extra and options.command != "check":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        grading.parse_aliases(getattr(options, "aliases", []))
    except ValueError as error:
        parser.error(str(error))
    return options.run(options, extra)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as pytest-xdist's `-n auto` counts them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _common(parser: argparse.ArgumentParser) -> None:
    grading.add_to_argparse(parser)
    parser.add_argument("--profile", default="conformance", choices=PROFILES, help="Hypothesis profile")


def _options(options: argparse.Namespace) -> list[str]:
    """The grading options of the command line as the harness's pytest options."""
    return grading.pytest_argv(grading.from_namespace(options))


def _check(options: argparse.Namespace, extra: list[str]) -> int:
    try:
        source = read_submission(options.path)
    except SubmissionError as error:
        print(f"conformance: {error}", file=sys.stderr)
        return 2
    for problem in source.problems:
        print(f"conformance: {problem}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        argv = launch.harness_argv(Path(options.path).resolve(), areas=options.area, profile=options.profile,
                                   ini=launch.isolated_ini(Path(tmp)), options=_options(options), extra=extra)
        return subprocess.call([sys.executable, "-m", "pytest", *argv])


def _gradescope(options: argparse.Namespace, extra: list[str]) -> int:
    from . import gradescope

    path = gradescope.build(Path(options.out))
    print(f"wrote {path}: upload it as the autograder of a Gradescope programming assignment (Ubuntu base image)")
    return 0


# ---- grade -------------------------------------------------------------------------

def _grade(options: argparse.Namespace, extra: list[str]) -> int:
    out = Path(options.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"conformance: cannot create {out}: {error}", file=sys.stderr)
        return 2
    submissions, unreadable = _submissions(options)
    for message in unreadable:
        print(f"conformance: {message}", file=sys.stderr)
    chosen = grading.provenance(grading.from_namespace(options))
    rows, waiting = [], []
    for name, path in submissions:
        kept = None if options.force else _kept(name, path, out / name, options.profile, chosen)
        if kept:
            rows.append(kept)
        else:
            waiting.append((name, path))

    processes.become_subreaper()
    template = processes.own_zygote() if waiting else None  # it imports torch now, and clones every harness
    running: list[_Running] = []
    jobs = max(1, options.jobs)
    if template is not None and len(waiting) > jobs:
        template.warm()  # once for the class: what each harness would compute alike
    interrupted = False
    with progress.Board(len(submissions)) as board:
        for row in rows:
            board.finished(row)
        try:
            while waiting or running:
                while waiting and sum(len(job.live) for job in running) < jobs:
                    free = jobs - sum(len(job.live) for job in running)
                    name, path = waiting.pop(0)
                    running.append(_launch(name, path, out / name, options, split=free > len(waiting) + 1))
                    board.started(name)
                for job in list(running):
                    if not _poll(job, options.timeout):
                        continue
                    running.remove(job)
                    row = _finish(job, options)
                    rows.append(row)
                    board.finished(row)
                if running:
                    time.sleep(0.05)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stopped = bool(running) or interrupted  # no harness (nor what it started) outlives the command
            if stopped:
                # The zygote first: a harness it was cloning when Ctrl-C came is then a child like any other (no
                # reply to wait for, however busy the zygote was), killed with the rest below.
                processes.stop_zygote()
            for job in running:
                for part in job.live:
                    _end(part.pid)
                shutil.rmtree(job.directory, ignore_errors=True)  # half-graded: graded again next time
            if stopped:
                processes.LIVE.clear()
            processes.kill_adopted()
    _write_summary(out / "summary.csv", rows)
    if len(rows) > 1:
        classreport.write(out, [row["name"] for row in rows])  # class.png and report.md
    print(f"conformance: {board.summary() or 'nothing graded'}; results in {out}", file=sys.stderr)
    if interrupted:
        left = len(submissions) - len(rows)
        print(f"conformance: interrupted; {len(rows)} submissions graded, {left} not: run the same command again to "
              "grade those (the graded ones are kept)", file=sys.stderr)
        return 130
    return 2 if unreadable else 0


def _submissions(options: argparse.Namespace) -> tuple[list[tuple[str, Path]], list[str]]:
    """The submissions to grade, each with a unique name (its results folder), and the paths that are none."""
    paths, unreadable = [], []
    for raw in options.paths:
        path = Path(raw)
        if not path.exists():  # anything that exists is a submission, however broken (it is graded 0 and told why)
            unreadable.append(f"{path}: no such file or directory")
        elif options.each and path.is_dir():
            entries = sorted(p for p in path.iterdir() if not p.name.startswith((".", "__"))
                             and p.resolve() != Path(options.out).resolve())  # the results may be kept beside them
            inside = [p for p in entries if p.is_dir() or p.suffix in (".py", ".ipynb")]
            for entry in entries:
                if entry not in inside:  # said, but no reason to fail the command: the folder's own business
                    print(f"conformance: {entry}: not a .py file, an .ipynb notebook or a directory, so not a "
                          "submission", file=sys.stderr)
            if not inside:
                unreadable.append(f"{path}: --each, but the folder holds no submission")
            paths += inside
        else:
            paths.append(path)
    submissions, names = [], set()
    for path in paths:
        name = submission_name(path.resolve())
        unique, n = name, 2
        while unique in names:
            unique, n = f"{name}-{n}", n + 1
        names.add(unique)
        submissions.append((unique, path.resolve()))
    return submissions, unreadable


def _kept(name: str, path: Path, directory: Path, profile: str, chosen: dict) -> dict | None:
    """The summary row of an earlier grade that grading again would repeat: its results.json is newer than every
    file of the submission and was graded by this installation, profile and options. None otherwise."""
    results = directory / "results.json"
    try:
        written = results.stat().st_mtime
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        if any(p.stat().st_mtime >= written for p in files):
            return None
        data = json.loads(results.read_text())
        if not provenance.same_grading(data.get("provenance"), profile, chosen):
            return None
        return dict(_row(name, path, data, ""), kept=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class _Part:
    """One harness grading some of a submission's areas (all of them unless the submission was split)."""

    pid: int
    tmp: Path  # its working folder: pytest.ini, checks.jsonl, Hypothesis's storage
    log: Path
    error: str | None = None  # None while it runs; "" once finished; why it was stopped


@dataclass
class _Running:
    name: str
    path: Path
    directory: Path
    started: float
    parts: list[_Part]

    @property
    def live(self) -> list[_Part]:
        return [part for part in self.parts if part.error is None]


def _launch(name: str, path: Path, directory: Path, options: argparse.Namespace, split: bool = False) -> _Running:
    """Start the harness(es) for one submission: pytest sessions of their own, each in its own process group.

    A `split` submission is graded by two harnesses at once, the second taking `budgets.APART`.
    """
    from .budgets import APART

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").unlink(missing_ok=True)
    groups = [[a for a in AREAS if a not in APART], list(APART)] if split else [[]]
    parts: list[_Part] = []
    for index, areas in enumerate(groups):
        tmp = Path(tempfile.mkdtemp(prefix="conformance-grade-"))
        extra = ["--checks-json", str(tmp / "checks.jsonl"), "-q", *launch.HARNESS_PLUGINS]
        if index:
            extra.append(f"--earlier-areas-json={tmp / 'earlier.json'}")
        arguments = launch.harness_argv(path, areas=areas, profile=options.profile, ini=launch.isolated_ini(tmp),
                                        options=_options(options), extra=extra)
        log = directory / ("log.txt" if not index else f"log-{'-'.join(areas)}.txt")
        pid = launch.start_harness(arguments, log, tmp)
        processes.LIVE.add(pid)
        parts.append(_Part(pid, tmp, log))
    return _Running(name, path, directory, time.monotonic(), parts)


def _poll(job: _Running, timeout: float) -> bool:
    """Whether every harness of the submission has finished (or has been stopped by the time limit)."""
    for part in job.live:
        done, _ = os.waitpid(part.pid, os.WNOHANG)
        if done:
            _end(part.pid, reaped=True)
            part.error = ""
        elif time.monotonic() - job.started > timeout:
            _end(part.pid)
            part.error = f"grading stopped after the {timeout:g} s time limit"
        if part.error is not None and part is job.parts[0]:
            for later in job.parts[1:]:  # what the earlier areas' harness found, for the later ones' root causes
                earlier = later.tmp / "earlier.json"
                tmp = earlier.with_suffix(".tmp")
                tmp.write_text(json.dumps(_checks(part)[0]))
                os.replace(tmp, earlier)
    return not job.live


def _checks(part: _Part) -> tuple[list[dict], dict | None, dict | None]:
    """A harness's entries, what loading said, and its provenance; ([], None, None) when it wrote nothing readable."""
    try:
        return journal.read(part.tmp / "checks.jsonl")
    except (OSError, ValueError, KeyError, TypeError):
        return [], None, None


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


def _finish(job: _Running, options: argparse.Namespace) -> dict:
    entries: list[dict] = []
    load = None
    errors = []
    longest = 0.0  # the checks' time of the harness that took longest (the others ran beside it)
    graded_by = None
    for part in job.parts:
        got, loaded, said = _checks(part)
        entries += got
        longest = max(longest, report.timing(got)["checks"])
        load = load if load is not None else loaded
        graded_by = graded_by or said
        if part.error:
            errors.append(part.error)
        elif loaded is None:
            errors.append(f"the harness produced no results (see {part.log})")
        shutil.rmtree(part.tmp, ignore_errors=True)
    error = "; ".join(dict.fromkeys(errors))
    data = report.build(entries, impl=str(job.path), strict=options.strict, final=True, load=load,
                        provenance=graded_by or provenance.installed())
    data["execution_time"] = round(time.monotonic() - job.started, 1)
    data["timing"]["total"] = data["execution_time"]
    data["timing"]["startup"] = round(max(data["execution_time"] - longest, 0.0), 2)
    if error:
        data["output"] = "\n".join(filter(None, [error, data["output"]]))
    feedback = report.feedback(data, job.name)
    (job.directory / "feedback.md").write_text(feedback)
    (job.directory / "feedback.html").write_text(report.feedback_html(feedback, job.name))
    (job.directory / "results.json").write_text(json.dumps(data, indent=2))  # last: a finished grade (`_kept`)
    return _row(job.name, job.path, data, error)


def _row(name: str, path: Path, data: dict, error: str) -> dict:
    """summary.csv's row of one submission."""
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
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["name"]))


if __name__ == "__main__":
    raise SystemExit(main())
