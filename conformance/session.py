"""A grading session: the pytest hooks and fixtures of a harness checking one implementation.

`conformance.plugin` (the `pytest11` entry point) registers this module when pytest is given
`--impl`: the sandbox fixture, the required-names gate, the root-cause deferral, the outcome
of each check and the result files. Without `--impl` nothing here is imported.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import time
from pathlib import Path

import hypothesis.errors
import pytest
from hypothesis import settings
from hypothesis.internal.conjecture import engine

from under_test.loader import Program, extract
from under_test.processes import stop_zygote
from under_test.sandbox import CLOCK, Sandbox, SubmissionRaised, WorkerDied
from under_test.source import SubmissionError
from under_test.wire import WireError

from . import budgets, journal, profiles, provenance, report, repro, rootcause
from . import options as grading
from .areas import AREAS, GIVEN, MISSING, items_of
from .compare import CheckFailure

PROPERTY = "conformance"

profiles.register()


def parse_aliases(pairs: list[str]) -> dict[str, str]:
    try:
        return grading.parse_aliases(pairs)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)  # oracles are small; one thread per process keeps xdist and grading fair
    if config.getoption("hypothesis_profile", None) is None:
        settings.load_profile("conformance")
    engine.MAX_SHRINKING_SECONDS = budgets.SHRINK_SECONDS  # Hypothesis documents it as the knob to set
    config.stash[_RESULTS] = {}
    config.stash[_LOAD] = {"notes": [], "failed": {}}
    impl = config.getoption("impl")
    if impl and Path(impl).exists() and not config.getoption("collectonly") and not hasattr(config, "workerinput"):
        # The worker imports torch and loads the submission while this process collects the checks.
        box = new_sandbox(config)
        box.launch()
        config.stash[_EARLY] = box


def pytest_unconfigure(config: pytest.Config) -> None:
    box = config.stash.get(_EARLY, None)
    if box is not None:
        box.stop()
    rootcause.stop_lending(config)
    stop_zygote()


def new_sandbox(config: pytest.Config) -> Sandbox:
    values = grading.from_config(config)
    parse_aliases(values["aliases"])  # a usage error, said as one
    return Sandbox(config.getoption("impl"), **grading.sandbox_kwargs(values))


_RESULTS = pytest.StashKey[dict]()
_EARLY = pytest.StashKey[Sandbox]()  # the sandbox launched at configure time, taken by the `sandbox` fixture
_PROVENANCE = pytest.StashKey[dict]()  # what grades this session (`provenance.describe`)
_LOAD = pytest.StashKey[dict]()  # what loading the submission said: notes (read problems, skipped imports), failures


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    checks = [i for i in items if i.get_closest_marker("area")]
    if not checks:
        return
    impl = config.getoption("impl")
    if not Path(impl).exists():
        raise pytest.UsageError(f"--impl {impl}: no such file or directory")
    wanted = config.getoption("conformance_areas")
    unknown = sorted(set(wanted) - set(AREAS))
    if unknown:
        raise pytest.UsageError(f"--area {', '.join(unknown)}: unknown; the areas are {', '.join(AREAS)}")
    if wanted:
        deselected = [i for i in checks if i.get_closest_marker("area").args[0] not in wanted]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [i for i in items if i not in deselected]
            checks = [i for i in checks if i not in deselected]
    if len(checks) == len(items):  # building blocks before the composites made of them (`rootcause`)
        order = {area_id: index for index, area_id in enumerate(AREAS)}
        items.sort(key=lambda i: order[i.get_closest_marker("area").args[0]])
    results = config.stash[_RESULTS]
    for item in checks:
        results[item.nodeid] = _entry(item, "pending", "not run")
        _record_each_example(getattr(item, "obj", None))
    _write(config)
    # What is loaded now (torch, Hypothesis, the checks) lives as long as the session: keep it out of every later
    # garbage collection, which then walks only what the checks make.
    gc.freeze()


def _record_each_example(function) -> None:
    """Start the sandbox's record of requests afresh at each Hypothesis example of this check, so that after a
    failure it holds the smallest failing input's (Hypothesis runs it last): `repro.snippet` writes it out."""
    handle = getattr(function, "hypothesis", None)
    if handle is None or getattr(handle.inner_test, "_records_each_example", False):
        return
    inner = handle.inner_test

    @functools.wraps(inner)  # the same name, source and signature: Hypothesis derives its seed from them
    def each_example(*args, **kwargs):
        box = kwargs.get("sandbox")
        if isinstance(box, Sandbox):
            box.calls.clear()
        return inner(*args, **kwargs)

    each_example._records_each_example = True
    handle.inner_test = each_example


def _entry(item: pytest.Item, outcome: str, output: str) -> dict:
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


# ---- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def program(pytestconfig: pytest.Config) -> Program:
    try:
        program_ = extract(pytestconfig.getoption("impl"))
    except SubmissionError as error:
        raise pytest.UsageError(str(error)) from error
    load = pytestconfig.stash[_LOAD]
    load["notes"].extend(note for note in program_.notes if note not in load["notes"])
    return program_


@pytest.fixture(scope="session")
def aliases(pytestconfig: pytest.Config) -> dict[str, str]:
    return parse_aliases(pytestconfig.getoption("conformance_aliases"))


@pytest.fixture(scope="session")
def sandbox(pytestconfig: pytest.Config, program: Program):
    box = pytestconfig.stash.get(_EARLY, None) or new_sandbox(pytestconfig)
    load = pytestconfig.stash[_LOAD]
    try:
        if program.definitions:
            box.start()
        else:
            box.stop()
    except WorkerDied as died:
        load["notes"].append(f"the worker could not start: {died}")  # each check reports it too
    load["failed"].update(box.load_info.failed)
    load["notes"].extend(note for note in box.load_info.notes if note not in load["notes"])
    load["notes"].extend(refused(box.take_blocked()))
    _write(pytestconfig)
    yield box
    box.stop()


def refused(attempts: list[str]) -> list[str]:
    """How an attempt to reach the harness is reported (it was refused; the learner should know why)."""
    if not attempts:
        return []
    return [f"the submission tried to reach the harness ({'; '.join(attempts[:5])}"
            f"{'; ...' if len(attempts) > 5 else ''}) and was refused: submission code sees its own files, the "
            "standard library and installed packages, never the harness's packages, answers or files"]


@pytest.fixture(scope="session")
def strict(pytestconfig: pytest.Config) -> bool:
    return bool(pytestconfig.getoption("conformance_strict"))


class Advise:
    """`advise(text)` records an advisory: a convention the submission follows that is accepted."""

    def __init__(self, node: pytest.Item):
        self.node = node

    def __call__(self, text: str) -> None:
        if ("advisory", text) not in self.node.user_properties:  # once per check, however many examples say it
            self.node.user_properties.append(("advisory", text))

    def __repr__(self) -> str:
        return "advise"


@pytest.fixture
def advise(request: pytest.FixtureRequest) -> Advise:
    return Advise(request.node)


@pytest.fixture(autouse=True)
def _check_names(request: pytest.FixtureRequest):
    """Before a check: are the names it needs there? Then start from a clean worker state."""
    if not request.node.get_closest_marker("area"):
        yield
        return
    names = [n for m in request.node.iter_markers("requires") for n in m.args]
    program_ = request.getfixturevalue("program")
    aliases_ = request.getfixturevalue("aliases")
    box: Sandbox = request.getfixturevalue("sandbox")
    statuses = {name: program_.status(name, aliases_) for name in names}
    absent = [n for n, s in statuses.items() if s == "missing"]
    stubs = [n for n, s in statuses.items() if s == "stub"]
    if absent or stubs:
        parts = ([f"{', '.join(absent)} not defined"] if absent else []) + \
                ([f"{', '.join(stubs)} only the course's stub"] if stubs else [])
        pytest.skip(MISSING + "; ".join(parts))
    subject = names[0] if names else None
    if subject is not None and statuses[subject] == "given":
        pytest.skip(GIVEN + f"{subject} is given by the course and the submission does not define it; "
                    "the course's version is used wherever the submission needs it")
    broken = {n: box.load_info.failed[n] for n in names if n in box.load_info.failed}
    if broken:
        pytest.fail("\n".join(f"{n} is defined but its definition failed to run: {e}" for n, e in broken.items()),
                    pytrace=False)
    box.begin_check()
    yield


# ---- blame the root cause -------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A composite's failed check is graded again with trusted building blocks (`conformance.rootcause`).

    Whatever the outcome, what the submission tried to reach of the harness during the check is reported.
    """
    try:
        return (yield)
    except BaseException as error:
        if not rootcause.eligible(item, error):
            raise
        if not earlier_areas_known(item.config):
            # Judged after the last check (`_deferred`), with what pytest takes from a check once it has run.
            item.config.stash.setdefault(_DEFERRED, []).append((item, item._request, dict(item.funcargs)))
            raise
        blocks = rootcause.culprits(item, *area_verdicts(item.config))
        if not blocks:
            raise
        item.user_properties.append(("advisory", rootcause.advisory(item, blocks)))
        return None
    finally:
        box = getattr(item, "funcargs", {}).get("sandbox")
        if isinstance(box, Sandbox):
            item.user_properties.extend(("advisory", text) for text in refused(box.take_blocked()))
            item.user_properties.extend(("advisory", text) for text in borrowed_layer(item, box))


_DEFERRED = pytest.StashKey[list]()  # failed composite checks whose root cause waits for the earlier areas


def earlier_areas_known(config: pytest.Config) -> bool:
    earlier = config.getoption("earlier_areas_json", None)
    return not earlier or Path(earlier).exists()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    if nextitem is None and item.config.stash.get(_DEFERRED, None):
        _deferred(item.config)  # before the session's fixtures (the sandbox) are torn down
    return (yield)


def _deferred(config: pytest.Config) -> None:
    """Judge the root cause of the composite checks that failed while the earlier areas' harness was still running
    (`grade` with a job to spare): once it has finished, as that check would have been judged in one harness."""
    deferred, config.stash[_DEFERRED] = config.stash[_DEFERRED], []
    spent: dict[str, dict[str, float]] = {}

    def judge(item, request, funcargs, step):  # with what pytest took from the check once it had run
        done = item._request, item.funcargs
        item._request, item.funcargs = request, funcargs
        item.stash[_STARTED] = (time.perf_counter(), CLOCK.read())
        try:
            return step(item)
        finally:
            item._request, item.funcargs = done
            so_far = spent.setdefault(item.nodeid, {})
            for key, value in seconds(item).items():  # the search's time is the check's, as when judged at once
                so_far[key] = so_far.get(key, 0.0) + value

    for entry in deferred:  # while the earlier areas' harness runs: the trials the search will ask for anyway
        judge(*entry, lambda item: rootcause.speculate(item, lambda: earlier_areas_known(config)))
    area_verdicts(config)  # waits for the earlier areas' harness to end
    for item, request, funcargs in deferred:  # in the areas' order, each knowing how the checks before it ended
        blocks = judge(item, request, funcargs, lambda item: rootcause.culprits(item, *area_verdicts(config)))
        failed = config.stash[_RESULTS][item.nodeid]
        total = {key: round(failed.get("seconds", {}).get(key, 0.0) + value, 3)
                 for key, value in spent[item.nodeid].items()}
        if blocks:
            failed = dict(_entry(item, "passed", ""),
                          advisories=[rootcause.advisory(item, blocks), *failed.get("advisories", [])])
        config.stash[_RESULTS][item.nodeid] = dict(failed, seconds=total)
    _write(config)


def area_verdicts(config: pytest.Config) -> tuple[set[str], set[str]]:
    """The areas graded so far without a failure (cleared), and those with a failed check (failed), the earlier areas
    graded by another harness included (waiting for its end): the same sets whether `grade` ran the submission in
    one harness or two."""
    entries = list(config.stash[_RESULTS].values())
    earlier = config.getoption("earlier_areas_json", None)
    if earlier:
        path = Path(earlier)
        while not path.exists():  # `grade` writes it when that harness ends, whatever its end; its timeout bounds this
            time.sleep(0.05)
        try:
            entries += [e for e in json.loads(path.read_text()) if isinstance(e, dict)]
        except (OSError, ValueError):
            pass
    graded = {e.get("area") for e in entries if e.get("outcome") not in ("pending", None)}
    failed = {e.get("area") for e in entries if e.get("outcome") == "failed"}
    return graded - failed - {e.get("area") for e in entries if e.get("outcome") == "pending"}, failed


def borrowed_layer(item: pytest.Item, box: Sandbox) -> list[str]:
    """The check's subject did its work with torch's own layer of the same name (accepted, but said)."""
    names = [n for m in item.iter_markers("requires") for n in m.args]
    if not names or names[0] not in box.torch_layers:
        return []
    subject = names[0]
    if item._request.getfixturevalue("program").status(subject, item._request.getfixturevalue("aliases")) != "defined":
        return []
    return [f"{subject} does its work with torch's own nn.{subject} (its forward is torch's): the course's checks "
            f"accept that, but the exercise is to write {subject} yourself"]


# ---- results -------------------------------------------------------------------------

_STARTED = pytest.StashKey[tuple]()  # when a check's setup began, and the sandboxes' clock then


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED] = (time.perf_counter(), CLOCK.read())
    if item.get_closest_marker("area"):
        budgets.apply(getattr(item, "obj", None))  # its example count, under the profile of this run


def seconds(item: pytest.Item) -> dict[str, float]:
    """Where the check's time went so far: its wall time (setup and call), the part inside the submission's
    code, and the part spent starting sandbox workers (the first check starts the graded one)."""
    wall, (submission, starting) = item.stash.get(_STARTED, (time.perf_counter(), CLOCK.read()))
    now_submission, now_starting = CLOCK.read()
    return {"wall": round(time.perf_counter() - wall, 3), "submission": round(now_submission - submission, 3),
            "worker_start": round(now_starting - starting, 3)}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    if not item.get_closest_marker("area"):
        return rep
    if rep.when == "call" or rep.outcome != "passed":
        if rep.passed:
            outcome, output = "passed", ""
        elif rep.skipped:
            reason = _skip_reason(rep)
            outcome = "given" if reason.startswith(GIVEN) else "missing"
            output = reason.removeprefix(GIVEN).removeprefix(MISSING)
        elif is_harness_error(call):
            outcome, output = "error", _harness_error_text(item, call)
            sys.stderr.write(f"HARNESS ERROR in {item.nodeid} (not charged to the submission):\n{output}\n")
        else:
            outcome, output = "failed", _failure_text(item, call)
        entry = _entry(item, outcome, output)
        entry["advisories"] = [v for k, v in item.user_properties if k == "advisory"]
        entry["seconds"] = seconds(item)
        rep.user_properties.append((PROPERTY, entry))
    return rep


def _skip_reason(rep: pytest.TestReport) -> str:
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def is_harness_error(call: pytest.CallInfo) -> bool:
    """The check failed because the harness's own code raised, not because of the submission.

    The learner's outcomes are: a failed comparison (`CheckFailure`, an assertion, `pytest.fail`), an
    exception of the submission (`SubmissionRaised`), a worker that hung, crashed or exited
    (`WorkerDied`), data the worker should not send (`WireError`), or behaviour that changes from
    one call to the next (Hypothesis's flakiness errors). Anything else is a bug of the harness.
    """
    if call.excinfo is None:
        return False
    return not is_learner_outcome(call.excinfo.value)


LEARNER_OUTCOMES = (AssertionError, SubmissionRaised, WorkerDied, WireError, pytest.fail.Exception,
                    pytest.skip.Exception, hypothesis.errors.Flaky)


def is_learner_outcome(error: BaseException) -> bool:
    """A failure the submission caused; a group of them (Hypothesis found several distinct ones) is one too."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_learner_outcome(inner) for inner in error.exceptions)
    return isinstance(error, LEARNER_OUTCOMES)


def _harness_error_text(item: pytest.Item, call: pytest.CallInfo) -> str:
    return (f"the harness's check {item.name} raised {type(call.excinfo.value).__name__} in its own code; this says "
            f"nothing about the submission.\n{call.excinfo.getrepr(style='short')}")


def _error_text(error: BaseException) -> str:
    """What the learner reads for one failure (each of a group's, when Hypothesis found several)."""
    if isinstance(error, BaseExceptionGroup):
        return "\n\n".join(_error_text(inner) for inner in error.exceptions)
    if isinstance(error, SubmissionRaised):
        text = f"the submission raised {error.type_name}: {error.message}\n{error.traceback}".rstrip()
    elif isinstance(error, (CheckFailure, WorkerDied)):
        text = str(error)
    elif isinstance(error, AssertionError):
        text = str(error) or "assertion failed"
    elif type(error).__name__ == "Failed":  # pytest.fail(...)
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    notes = [n for n in getattr(error, "__notes__", []) if n.strip() and not n.strip().startswith(HARNESS_NOTES)]
    if notes:
        text += "\n\n" + "\n".join(notes)
    return text


# Hypothesis's advice to a test's author (replaying a failure with a decorator), not to a learner.
HARNESS_NOTES = ("You can reproduce this test case by temporarily adding", "You can add @reproduce_failure")


def _failure_text(item: pytest.Item, call: pytest.CallInfo) -> str:
    if call.excinfo is None:
        return "failed"
    text = _error_text(call.excinfo.value)
    impl = item.config.getoption("impl")
    entry = _entry(item, "failed", "")
    header = f"[area {entry['area']}" + (f", rubric item {', '.join(entry['items'])}" if entry["items"] else "") + "]"
    text = f"{header} {entry['description']}\n{text}"
    box = getattr(item, "funcargs", {}).get("sandbox")
    code = repro.snippet(box.calls) if isinstance(box, Sandbox) else ""
    if code:
        text += f"\n\n{repro.HEADING}\n" + "\n".join(f"    {line}" if line else "" for line in code.splitlines())
    text += f"\n\n{repro.RERUN} {impl} -k '{item.name}'"
    return text


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG.get("config")
    if config is None:
        return
    for key, value in report.user_properties:
        if key == PROPERTY:
            config.stash[_RESULTS][report.nodeid] = value
            _write(config, [report.nodeid])


_CONFIG: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config


def _write(config: pytest.Config, changed: list[str] | None = None) -> None:
    """Bring the result files up to date after a check (`changed`: the checks whose entries changed; None: any), so
    a run stopped early is graded as far as it got. results.json is rewritten whole; `grade`'s checks file is a
    journal (`conformance.journal`), so writing it costs the same after the last check as after the first."""
    if hasattr(config, "workerinput"):  # under xdist, only the controller writes
        return
    results = config.stash[_RESULTS]
    load = config.stash.get(_LOAD, None)
    if _PROVENANCE not in config.stash:
        config.stash[_PROVENANCE] = provenance.describe(config)
    graded_by = config.stash[_PROVENANCE]
    path = config.getoption("results_json", None)
    if path:
        document = report.build(list(results.values()), impl=config.getoption("impl"),
                                strict=bool(config.getoption("conformance_strict")), load=load, provenance=graded_by)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(document, indent=2))
        os.replace(tmp, path)
    path = config.getoption("checks_json", None)
    if path:
        first = _JOURNALED_LOAD not in config.stash
        lines = [{"provenance": graded_by}] if first else []
        lines += [{"entry": [nodeid, results[nodeid]]} for nodeid in (results if changed is None else changed)]
        if config.stash.get(_JOURNALED_LOAD, None) != json.dumps(load):
            config.stash[_JOURNALED_LOAD] = json.dumps(load)
            lines.append({"load": load})
        journal.append(Path(path), lines, new=first)


_JOURNALED_LOAD = pytest.StashKey[str]()  # the last `load` the checks journal holds (absent: no journal yet)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, {})
    if not results or not config.getoption("impl"):
        return
    data = report.build(list(results.values()), impl=config.getoption("impl"),
                        strict=bool(config.getoption("conformance_strict")), load=config.stash.get(_LOAD, None))
    terminalreporter.write_sep("=", "conformance")
    left_out = config.stash.get(_LEFT_OUT, 0)
    lines = report.selected_lines(data, {e["name"] for e in results.values()}, left_out) if left_out else \
        report.summary_lines(data, ran={e["area"] for e in results.values()})
    for line in lines:
        terminalreporter.write_line(line)


_LEFT_OUT = pytest.StashKey[int]()  # checks left out by a selection of pytest's own (`-k`, `-m`)


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Checks deselected after their entries were made (by `-k`): not run, so neither pending nor graded."""
    if not items:
        return
    config = items[0].config
    results = config.stash.get(_RESULTS, {})
    dropped = [item.nodeid for item in items if item.nodeid in results]
    for nodeid in dropped:
        del results[nodeid]
    if dropped:
        config.stash[_LEFT_OUT] = config.stash.get(_LEFT_OUT, 0) + len(dropped)
