"""A grading session: the pytest hooks and fixtures of a harness checking one implementation.

`conformance.plugin` (the `pytest11` entry point) registers this module when pytest is given
`--impl`: the sandbox fixture, the required-names gate, the root-cause deferral, the outcome
of each check and the result files. Without `--impl` nothing here is imported.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.internal.conjecture import engine

from under_test.loader import Program, extract
from under_test.processes import stop_zygote
from under_test.sandbox import Sandbox, WorkerDied
from under_test.source import SubmissionError

from . import budgets, profiles, rootcause
from . import options as grading
from .areas import AREAS, GIVEN, MISSING
from .recorder import Recorder, entry, recorder

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
    config.pluginmanager.register(Recorder(config), "conformance-recorder")
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
    try:
        kwargs = grading.sandbox_kwargs(grading.from_config(config))
    except ValueError as error:  # a malformed --alias: a usage error, said as one
        raise pytest.UsageError(str(error)) from None
    return Sandbox(config.getoption("impl"), **kwargs)


_EARLY = pytest.StashKey[Sandbox]()  # the sandbox launched at configure time, taken by the `sandbox` fixture


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
    recorded = recorder(config)
    for item in checks:
        recorded.results[item.nodeid] = entry(item, "pending", "not run")
        _record_each_example(getattr(item, "obj", None))
    recorded.write()
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


# ---- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def program(pytestconfig: pytest.Config) -> Program:
    try:
        program_ = extract(pytestconfig.getoption("impl"))
    except SubmissionError as error:
        raise pytest.UsageError(str(error)) from error
    load = recorder(pytestconfig).load
    load["notes"].extend(note for note in program_.notes if note not in load["notes"])
    return program_


@pytest.fixture(scope="session")
def aliases(pytestconfig: pytest.Config) -> dict[str, str]:
    return parse_aliases(pytestconfig.getoption("conformance_aliases"))


@pytest.fixture(scope="session")
def sandbox(pytestconfig: pytest.Config, program: Program):
    box = pytestconfig.stash.get(_EARLY, None) or new_sandbox(pytestconfig)
    load = recorder(pytestconfig).load
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
    recorder(pytestconfig).write()
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
    """A composite's failed check is graded again with trusted building blocks (`rootcause.excused`).

    Whatever the outcome, what the submission tried to reach of the harness during the check is reported.
    """
    try:
        return (yield)
    except BaseException as error:
        if not rootcause.excused(item, error):
            raise
        return None
    finally:
        box = getattr(item, "funcargs", {}).get("sandbox")
        if isinstance(box, Sandbox):
            item.user_properties.extend(("advisory", text) for text in refused(box.take_blocked()))
            item.user_properties.extend(("advisory", text) for text in borrowed_layer(item, box))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    if nextitem is None:
        rootcause.judge_deferred(item.config)  # before the session's fixtures (the sandbox) are torn down
    return (yield)


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
