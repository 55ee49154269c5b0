"""Blame the root cause: a composite that is right apart from a part it is built from.

A check of a composite area (a residual block, ResNet34, the weight copy, feature extraction;
a Conv2d or MaxPool2d built on the learner's own conv2d / maxpool2d) that fails is graded
again in a fresh sandbox worker where the submission's own parts (`areas.COMPOSITES`, those
it defines itself, found by name wherever its code refers to them) that an area judging them
(`areas.PARTS`) has not cleared are replaced by trusted ones (`under_test.trusted`): all
together, then each alone, leaves first, to name the culprit. If it passes then, the composite
is right: the check passes with an advisory naming the part whose bug it inherits and the area
where that bug is charged. A part every judging area passed is never blamed: its bug would then
be charged nowhere.

It also owns when that is judged (`excused`, called by the session when a check fails): at once,
or, while `grade` runs the earlier areas in another harness, after the last check of this one
(`judge_deferred`), once it knows which of those areas failed (`area_verdicts`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from under_test.sandbox import CLOCK, Sandbox, SubmissionRaised, WorkerDied
from under_test.wire import WireError

from .areas import BUILDING_BLOCKS, COMPOSITES, PARTS
from .recorder import STARTED, entry, recorder, seconds


def area_of(item: pytest.Item) -> str:
    return item.get_closest_marker("area").args[0]


def own_blocks(item: pytest.Item) -> list[str]:
    """The parts the check's composite may use that the submission defines itself (course-given and torch's
    are trusted already), leaves first."""
    program = item._request.getfixturevalue("program")
    aliases = item._request.getfixturevalue("aliases")
    return [name for name in COMPOSITES[area_of(item)] if program.status(name, aliases) == "defined"]


def eligible(item: pytest.Item, error: BaseException) -> bool:
    """A composite's check that failed on the submission's behaviour, a hang or a crash included (not a harness
    error): a part that hung or crashed in its own area is refused at once elsewhere (`Sandbox.request`), and a
    trusted part in its place does not hang."""
    marker = item.get_closest_marker("area")
    if marker is None or marker.args[0] not in COMPOSITES or "sandbox" not in getattr(item, "funcargs", {}):
        return False
    if isinstance(error, BaseExceptionGroup):  # Hypothesis found several distinct failures
        return all(eligible(item, inner) for inner in error.exceptions)
    return isinstance(error, (AssertionError, SubmissionRaised, WireError, WorkerDied, pytest.fail.Exception))


KEPT = 4  # lending workers kept warm for the next composite check (all blocks, the suspects, each suspect)
_LENDING = pytest.StashKey[dict]()


def lending(item: pytest.Item, trusted: list[str]) -> Sandbox:
    """The session's worker with these `trusted` blocks lent (started once; the least recently used of more than
    `KEPT` is stopped). Never the graded worker: that one runs the submission's blocks only."""
    pool = item.config.stash.setdefault(_LENDING, {})
    key = tuple(sorted(trusted))
    box = pool.pop(key, None)
    if box is None:
        own: Sandbox = item.funcargs["sandbox"]
        box = Sandbox(own.impl, aliases=own.aliases, timeout=own.timeout, memory_mb=own.memory_mb, trusted=trusted,
                      load_timeout=own.load_timeout, skipped=own.skipped)
    pool[key] = box  # the most recently used last
    while len(pool) > KEPT:
        pool.pop(next(iter(pool))).stop()
    return box


def stop_lending(config: pytest.Config) -> None:
    for box in config.stash.get(_LENDING, {}).values():
        box.stop()
    config.stash[_LENDING] = {}


_TRIED = pytest.StashKey[dict]()  # (check, blocks lent) -> whether it passed: each is run once per session


def passes_with(item: pytest.Item, trusted: list[str]) -> bool:
    """Run the check again, its sandbox a worker with `trusted` blocks lent; does it pass? (Remembered: the same
    check with the same blocks lent gives the same answer.)"""
    tried = item.config.stash.setdefault(_TRIED, {})
    key = (item.nodeid, tuple(sorted(trusted)))
    if key not in tried:
        tried[key] = _run_with(item, trusted)
    return tried[key]


def _run_with(item: pytest.Item, trusted: list[str]) -> bool:
    own: Sandbox = item.funcargs["sandbox"]
    saved = list(item.user_properties)
    try:
        box = lending(item, trusted)
        if box.process is None:
            box.start()
        box.begin_check()
        item.funcargs["sandbox"] = box
        item.runtest()
        return True
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - any way of not passing (a failure, pytest.fail, a dead worker)
        return False
    finally:
        item.funcargs["sandbox"] = own
        item.user_properties[:] = saved


def charged_area(item: pytest.Item, name: str, cleared: set[str]) -> str | None:
    """Where a bug of the part `name` would be charged: the first area judging it (its own, then the weight copy
    for the order of what ResNet34 is made of) that is not the check's own and has not been cleared in this run."""
    return next((a for a in PARTS[name] if a != area_of(item) and a not in cleared), None)


def culprits(item: pytest.Item, cleared: set[str], failed: set[str] = frozenset()) -> dict[str, str]:
    """The parts whose replacement makes the failed check pass, each with the area charged with its bug (empty: the
    composite is at fault).

    Only suspects are replaced: the submission's own parts with an area judging them that has not been cleared
    (`cleared`: the areas graded in this run without a failure), so that in a full grade a bug is always charged
    somewhere, and a run of one area still learns where the bug is. A suspect whose area has failed in this run
    (`failed`) is the likeliest culprit: each such is tried alone first, leaves first, and the first that suffices
    is named. Then all the suspects together; if that suffices, each other suspect alone, leaves first: the first
    that suffices alone is named, else the suspects together. If together they do not suffice, a composite alone
    still may (a lent composite is whole: a trusted ResNet34 does not need the submission's blocks); a building
    block alone does not, where all of them together did not.
    """
    suspects = {name: area for name in own_blocks(item) if (area := charged_area(item, name, cleared))}
    shown = [name for name, area in suspects.items() if area in failed]
    named = next((name for name in shown if passes_with(item, [name])), None)
    if named is not None:
        return {named: suspects[named]}
    if not suspects or (len(suspects) == 1 and shown):
        return {}
    names = list(suspects)
    together = passes_with(item, names)
    if len(names) == 1:
        return suspects if together else {}
    alone = (name for name in names if name not in shown and (together or name not in BUILDING_BLOCKS)
             and passes_with(item, [name]))
    return next(({name: suspects[name]} for name in alone), suspects if together else {})


def speculate(item: pytest.Item, known: Callable[[], bool]) -> None:
    """Until `known()` (the earlier areas' verdicts are known), run trials `culprits` may ask for: each of the chain's
    composites the submission defines, alone, the nearest first (a part one level down is the most common
    culprit of a composite's failure). Their answers are remembered (`passes_with`), so `culprits` gives what it
    would have given without them, sooner."""
    for name in reversed([name for name in own_blocks(item) if name not in BUILDING_BLOCKS]):
        if known():
            return
        passes_with(item, [name])


def trusted_word(name: str) -> str:
    """Whose version of the part is lent (`under_test.trusted`)."""
    if name in BUILDING_BLOCKS:
        return f"torch's {name}"
    return f"the course's {name}" if name == "copy_weights" else f"the reference's {name}"


def advisory(item: pytest.Item, blocks: dict[str, str]) -> str:
    """`blocks`: the culprits, each with the area charged with its bug (`culprits`)."""
    names = [n for m in item.iter_markers("requires") for n in m.args if n not in blocks]
    inherited = " and ".join(f"{name}'s bug (see the {area} area)" for name, area in blocks.items())
    trusted = " and ".join(trusted_word(name) for name in blocks)
    said = f"{names[0]} is right; it inherits {inherited}" if names else f"the failure comes from {inherited}"
    return f"{item.name}: {said}. With {trusted} in place of yours, this check passes, so it is not charged here."


# ---- when a composite's check fails ----------------------------------------------------

_DEFERRED = pytest.StashKey[list]()  # failed composite checks whose root cause waits for the earlier areas


def excused(item: pytest.Item, error: BaseException) -> bool:
    """Whether a failed check of a composite is right apart from a part it inherits a bug from: then it passes with
    an advisory naming that part. A check that failed while the earlier areas' harness still runs (`grade` with a
    job to spare) is judged after the last check (`judge_deferred`), with what pytest takes from a check once it has
    run; it stays failed until then."""
    if not eligible(item, error):
        return False
    if not earlier_areas_known(item.config):
        item.config.stash.setdefault(_DEFERRED, []).append((item, item._request, dict(item.funcargs)))
        return False
    blocks = culprits(item, *area_verdicts(item.config))
    if not blocks:
        return False
    item.user_properties.append(("advisory", advisory(item, blocks)))
    return True


def earlier_areas_known(config: pytest.Config) -> bool:
    earlier = config.getoption("earlier_areas_json", None)
    return not earlier or Path(earlier).exists()


def judge_deferred(config: pytest.Config) -> None:
    """Judge the root cause of the composite checks that failed while the earlier areas' harness was still running:
    once it has finished, as each check would have been judged in one harness. Each is judged with the request and
    fixtures it ran with (put back on the item for the search, then taken away again)."""
    deferred, config.stash[_DEFERRED] = config.stash.get(_DEFERRED, []), []
    if not deferred:
        return
    spent: dict[str, dict[str, float]] = {}

    def judge(item, request, funcargs, step):  # with what pytest took from the check once it had run
        done = item._request, item.funcargs
        item._request, item.funcargs = request, funcargs
        item.stash[STARTED] = (time.perf_counter(), CLOCK.read())
        try:
            return step(item)
        finally:
            item._request, item.funcargs = done
            so_far = spent.setdefault(item.nodeid, {})
            for key, value in seconds(item).items():  # the search's time is the check's, as when judged at once
                so_far[key] = so_far.get(key, 0.0) + value

    for waiting in deferred:  # while the earlier areas' harness runs: the trials the search will ask for anyway
        judge(*waiting, lambda item: speculate(item, lambda: earlier_areas_known(config)))
    area_verdicts(config)  # waits for the earlier areas' harness to end
    results = recorder(config).results
    for item, request, funcargs in deferred:  # in the areas' order, each knowing how the checks before it ended
        blocks = judge(item, request, funcargs, lambda item: culprits(item, *area_verdicts(config)))
        failed = results[item.nodeid]
        total = {key: round(failed.get("seconds", {}).get(key, 0.0) + value, 3)
                 for key, value in spent[item.nodeid].items()}
        if blocks:
            failed = dict(entry(item, "passed", ""),
                          advisories=[advisory(item, blocks), *failed.get("advisories", [])])
        results[item.nodeid] = dict(failed, seconds=total)
    recorder(config).write()


def area_verdicts(config: pytest.Config) -> tuple[set[str], set[str]]:
    """The areas graded so far without a failure (cleared), and those with a failed check (failed), the earlier areas
    graded by another harness included (waiting for its end): the same sets whether `grade` ran the submission in
    one harness or two."""
    entries = list(recorder(config).results.values())
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
