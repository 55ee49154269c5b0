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
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from under_test.sandbox import Sandbox, SubmissionRaised, WorkerDied
from under_test.wire import WireError

from .areas import BUILDING_BLOCKS, COMPOSITES, PARTS


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
