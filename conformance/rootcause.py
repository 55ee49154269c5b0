"""Blame the root cause: a composite that is right apart from a building block it uses.

A check of a composite area (a residual block, ResNet34, the weight copy, feature extraction;
a Conv2d or MaxPool2d built on the learner's own conv2d / maxpool2d) that fails is graded
again in a fresh sandbox worker where the submission's own building blocks
(`areas.COMPOSITES`, those it defines itself) are replaced by trusted ones: first those whose
own area failed, else all of them. If it passes then, the composite is right: the check passes
with an advisory naming the block whose bug it inherits and that block's area, where the bug is
charged. When several blocks are replaced, each is then tried alone to name the one(s) that matter.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from under_test.sandbox import Sandbox, SubmissionRaised
from under_test.wire import WireError

from .areas import BUILDING_BLOCKS, COMPOSITES


def area_of(item: pytest.Item) -> str:
    return item.get_closest_marker("area").args[0]


def own_blocks(item: pytest.Item) -> list[str]:
    """The blocks the check's composite may use that the submission defines itself (course-given and torch's
    are trusted already)."""
    program = item._request.getfixturevalue("program")
    aliases = item._request.getfixturevalue("aliases")
    return [name for name in COMPOSITES[area_of(item)] if program.status(name, aliases) == "defined"]


def eligible(item: pytest.Item, error: BaseException) -> bool:
    """A composite's check that failed on the submission's behaviour (not a hang or a harness error)."""
    marker = item.get_closest_marker("area")
    if marker is None or marker.args[0] not in COMPOSITES or "sandbox" not in getattr(item, "funcargs", {}):
        return False
    if isinstance(error, BaseExceptionGroup):  # Hypothesis found several distinct failures
        return all(eligible(item, inner) for inner in error.exceptions)
    return isinstance(error, (AssertionError, SubmissionRaised, WireError, pytest.fail.Exception))  # not WorkerDied


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


def culprits(item: pytest.Item, failed_areas: set[str]) -> list[str]:
    """The building blocks whose replacement makes the failed check pass (empty: the composite is at fault).

    The suspects (blocks whose own area has already failed, `failed_areas`) are replaced first, together, and
    if they suffice, each alone: the first that suffices alone is named, else the suspects together. Without
    suspects, or when they do not suffice, all the submission's blocks are replaced; if that suffices, every
    other block alone, else the composite is at fault.
    """
    blocks = own_blocks(item)
    if not blocks:
        return []
    suspects = [name for name in blocks if BUILDING_BLOCKS[name] in failed_areas]
    if suspects and passes_with(item, suspects):
        if len(suspects) == 1:
            return suspects
        return next(([name] for name in suspects if passes_with(item, [name])), suspects)
    if len(suspects) == len(blocks) or not passes_with(item, blocks):
        return []
    if len(blocks) == 1:
        return blocks
    return next(([name] for name in blocks if name not in suspects and passes_with(item, [name])), blocks)


def speculate(item: pytest.Item, known: Callable[[], bool]) -> None:
    """Until `known()` (the failed areas are known), run trials `culprits` may ask for: all the blocks lent, then
    each block alone (a single suspect is the most common case). Their answers are remembered (`passes_with`), so
    `culprits` gives what it would have given without them, sooner."""
    blocks = own_blocks(item)
    if len(blocks) < 2 or known() or not passes_with(item, blocks):
        return
    for name in blocks:
        if known():
            return
        passes_with(item, [name])


def advisory(item: pytest.Item, blocks: list[str]) -> str:
    names = [n for m in item.iter_markers("requires") for n in m.args]
    subject = names[0] if names else area_of(item)
    inherited = " and ".join(f"{name}'s (see the {BUILDING_BLOCKS[name]} area)" for name in blocks)
    trusted = " and ".join(blocks)
    return (f"{item.name}: {subject} is right; it inherits the bug of {inherited}. With torch's {trusted} in place "
            f"of yours, this check passes, so it is not charged here.")
