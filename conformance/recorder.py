"""The results of a grading session: one entry per check, kept up to date in results.json and `grade`'s journal.

`Recorder` is a plugin object (`conformance.session` registers one per session): it times each
check, turns its report into an entry (`outcome`, the learner's `output`, advisories, seconds),
writes the result files after every check (a run stopped early is graded as far as it got),
and prints the terminal summary. `recorder(config)` finds a session's own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from under_test.sandbox import CLOCK, Sandbox

from . import budgets, journal, outcomes, provenance, report, repro
from .areas import GIVEN, MISSING, items_of

PROPERTY = "conformance"  # the key of a check's entry among its report's user properties
STARTED = pytest.StashKey[tuple]()  # when a check's setup began, and the sandboxes' clock then
_RECORDER = pytest.StashKey["Recorder"]()


def recorder(config: pytest.Config) -> Recorder:
    return config.stash[_RECORDER]


def entry(item: pytest.Item, outcome: str, output: str) -> dict:
    """A check's entry: its name, description, area, rubric items, outcome and output."""
    area_id = item.get_closest_marker("area").args[0]
    extra = tuple(i for m in item.iter_markers("item") for i in m.args)
    doc = (getattr(item, "function", None).__doc__ or "").strip().splitlines()
    return {
        "name": f"{area_id}: {item.name}",
        "description": doc[0] if doc else "",
        "area": area_id,
        "items": list(items_of(area_id, extra)),
        "outcome": outcome,
        "output": output,
    }


def seconds(item: pytest.Item) -> dict[str, float]:
    """Where the check's time went so far: its wall time (setup and call), the part inside the submission's
    code, and the part spent starting sandbox workers (the first check starts the graded one)."""
    wall, (submission, starting) = item.stash.get(STARTED, (time.perf_counter(), CLOCK.read()))
    now_submission, now_starting = CLOCK.read()
    return {"wall": round(time.perf_counter() - wall, 3), "submission": round(now_submission - submission, 3),
            "worker_start": round(now_starting - starting, 3)}


def failure_text(item: pytest.Item, call: pytest.CallInfo) -> str:
    """What the learner reads of a failed check: its area and items, what went wrong, a reproduction to paste into
    a notebook, and the command that runs the check again."""
    if call.excinfo is None:
        return "failed"
    text = outcomes.error_text(call.excinfo.value)
    impl = item.config.getoption("impl")
    failed = entry(item, "failed", "")
    header = f"[area {failed['area']}" + (f", rubric item {', '.join(failed['items'])}" if failed["items"] else "") + "]"
    text = f"{header} {failed['description']}\n{text}"
    box = getattr(item, "funcargs", {}).get("sandbox")
    code = repro.snippet(box.calls) if isinstance(box, Sandbox) else ""
    if code:
        text += f"\n\n{repro.HEADING}\n" + "\n".join(f"    {line}" if line else "" for line in code.splitlines())
    text += f"\n\n{repro.RERUN} {impl} -k '{item.name}'"
    return text


class Recorder:
    """One grading session's results (see the module's docstring)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.results: dict[str, dict] = {}  # nodeid -> the check's entry (`pending` until it has run)
        self.load: dict = {"notes": [], "failed": {}}  # what loading the submission said
        self.graded_by: dict | None = None  # `provenance.of_session`, once
        self.journaled_load: str | None = None  # the last `load` the checks journal holds (None: no journal yet)
        self.left_out = 0  # checks deselected by a selection of pytest's own (`-k`, `-m`) after their entries
        config.stash[_RECORDER] = self

    # ---- a check's time and outcome ----

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        item.stash[STARTED] = (time.perf_counter(), CLOCK.read())
        if item.get_closest_marker("area"):
            budgets.apply(getattr(item, "obj", None))  # its example count, under the profile of this run

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        rep = yield
        if not item.get_closest_marker("area"):
            return rep
        if rep.when == "call" or rep.outcome != "passed":
            if rep.passed:
                outcome, output = "passed", ""
            elif rep.skipped:
                reason = outcomes.skip_reason(rep)
                outcome = "given" if reason.startswith(GIVEN) else "missing"
                output = reason.removeprefix(GIVEN).removeprefix(MISSING)
            elif outcomes.is_harness_error(call):
                outcome, output = "error", outcomes.harness_error_text(item, call)
                sys.stderr.write(f"HARNESS ERROR in {item.nodeid} (not charged to the submission):\n{output}\n")
            else:
                outcome, output = "failed", failure_text(item, call)
            made = entry(item, outcome, output)
            made["advisories"] = [v for k, v in item.user_properties if k == "advisory"]
            made["seconds"] = seconds(item)
            rep.user_properties.append((PROPERTY, made))
        return rep

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == PROPERTY:
                self.results[report.nodeid] = value
                self.write([report.nodeid])

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """Checks deselected after their entries were made (by `-k`): not run, so neither pending nor graded."""
        dropped = [item.nodeid for item in items if item.nodeid in self.results]
        for nodeid in dropped:
            del self.results[nodeid]
        self.left_out += len(dropped)

    # ---- the files and the summary ----

    def write(self, changed: list[str] | None = None) -> None:
        """Bring the result files up to date after a check (`changed`: the checks whose entries changed; None: any),
        so a run stopped early is graded as far as it got. results.json is rewritten whole; `grade`'s checks file
        is a journal (`conformance.journal`), so writing it costs the same after the last check as after the
        first."""
        config = self.config
        if hasattr(config, "workerinput"):  # under xdist, only the controller writes
            return
        if self.graded_by is None:
            self.graded_by = provenance.of_session(config)
        path = config.getoption("results_json", None)
        if path:
            document = report.build(list(self.results.values()), impl=config.getoption("impl"),
                                    strict=bool(config.getoption("conformance_strict")), load=self.load,
                                    provenance=self.graded_by)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(f"{path}.tmp")
            tmp.write_text(json.dumps(document, indent=2))
            os.replace(tmp, path)
        path = config.getoption("checks_json", None)
        if path:
            first = self.journaled_load is None
            lines = [{"provenance": self.graded_by}] if first else []
            lines += [{"entry": [nodeid, self.results[nodeid]]}
                      for nodeid in (self.results if changed is None else changed)]
            if self.journaled_load != json.dumps(self.load):
                self.journaled_load = json.dumps(self.load)
                lines.append({"load": self.load})
            journal.append(Path(path), lines, new=first)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config: pytest.Config) -> None:
        if not self.results:
            return
        data = report.build(list(self.results.values()), impl=config.getoption("impl"),
                            strict=bool(config.getoption("conformance_strict")), load=self.load)
        terminalreporter.write_sep("=", "conformance")
        lines = report.selected_lines(data, {e["name"] for e in self.results.values()}, self.left_out) \
            if self.left_out else report.summary_lines(data, ran={e["area"] for e in self.results.values()})
        for line in lines:
            terminalreporter.write_line(line)
