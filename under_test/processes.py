"""The harness's processes: the workers' default limits, the pids it runs, the orphans it adopts, its zygote.

Imports neither torch nor the harness: `conformance grade` uses it before it has imported either.
"""

from __future__ import annotations

import os
import signal
from . import zygote

DEFAULT_TIMEOUT = 10.0  # one call into the submission
DEFAULT_MEMORY_MB = 2048
DEFAULT_LOAD_TIMEOUT = 20.0  # one top-level definition of the submission (an import, a class, a function)
START_TIMEOUT = 120.0  # a worker's start from scratch (importing torch), before its first definition

_SUBREAPER: list[bool] = []  # set once this process adopts the orphans of its descendants
LIVE: set[int] = set()  # the pids of this process's running workers (and of `conformance grade`'s harnesses)


def become_subreaper() -> bool:
    """Orphans of this process's descendants (a submission's daemons) are adopted by this process, not by init,
    so `kill_adopted` can end them whatever session or environment they gave themselves."""
    if not _SUBREAPER:
        try:
            import ctypes

            _SUBREAPER.append(ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            _SUBREAPER.append(False)
    return _SUBREAPER[0]


def forget_subreaper() -> None:
    """In a forked child: the parent's subreaper flag is not inherited, so `become_subreaper` must ask again."""
    _SUBREAPER.clear()


def kill_adopted() -> int:
    """Kill and reap every child of this process that is not one of its live workers (adopted orphans).

    Repeated until none is left: killing an adopted process orphans its own children, adopted in turn.
    """
    if not (_SUBREAPER and _SUBREAPER[0]):
        return 0
    if _ZYGOTE and _ZYGOTE[0].owner == os.getpid():
        LIVE.update(_ZYGOTE[0].settle())  # workers cloned a moment ago are live, not orphans
    killed = 0
    while True:
        found = [pid for pid in _children() if pid not in LIVE]
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (OSError, ChildProcessError):
                pass
        killed += len(found)
        if not found:
            return killed


def _children() -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid():
            children.append(int(entry))
    return children


_ZYGOTE: list[zygote.Zygote] = []  # this process's worker template, started with its first worker


def own_zygote() -> zygote.Zygote | None:
    """This process's zygote (started now if need be); None when workers start from scratch."""
    if os.environ.get(zygote.DISABLE_ENV) == "0":
        return None
    if _ZYGOTE and _ZYGOTE[0].owner != os.getpid():  # inherited through a fork: the parent's, not ours
        _ZYGOTE.pop().sock.close()
    if not _ZYGOTE:
        template = zygote.Zygote(zygote.base_env())
        LIVE.add(template.process.pid)
        _ZYGOTE.append(template)
    return None if _ZYGOTE[0].dead else _ZYGOTE[0]


def stop_zygote() -> None:
    if _ZYGOTE and _ZYGOTE[0].owner == os.getpid():
        template = _ZYGOTE.pop()
        template.stop()
        LIVE.discard(template.process.pid)


def adopt_zygote(pid: int, sock) -> None:
    """This process's zygote is its child `pid`, forked by itself, reached through `sock` (`zygote._become_harness`)."""
    _ZYGOTE[:] = [zygote.Zygote.adopt(pid, sock)]
    LIVE.add(pid)
