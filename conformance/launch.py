"""Starting a harness: its pytest arguments, its environment, and the ways it is started.

A harness is one pytest session running the checks on one submission (`--impl`). Every caller
builds its arguments with `harness_argv`, then runs it here (`run_harness`), in a fork of this
already warm process (`fork_harness`), or in a clone of a zygote (`under_test.zygote`), which is
told what to run by name (`ENTRY`) and knows nothing else of the harness.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from under_test import processes

ENTRY = "conformance.launch:run_harness"  # what a zygote's harness clone runs, with the arguments

#: The only pytest plugins a grade's harness loads (by entry-point name): importing every other installed one costs
#: half a second per harness.
HARNESS_PLUGINS = ("--disable-plugin-autoload", "-p", "conformance", "-p", "hypothesispytest")


def harness_argv(impl: Path | str, *, modules: Iterable[str] = ("conformance.checks",), areas: Iterable[str] = (),
                 profile: str = "conformance", results_json: Path | None = None, ini: Path | None = None,
                 options: Iterable[str] = (), extra: Iterable[str] = ()) -> list[str]:
    """pytest's arguments for a harness checking `impl`: the check modules (or files), the areas, the Hypothesis
    profile, where results.json goes, an isolated ini, the grading options (`--strict-conventions`, ...) and any
    `extra` (e.g. `-k`)."""
    argv = ["--pyargs", *modules, "--impl", str(impl), "-p", "no:cacheprovider", "-p", "no:randomly",
            "-p", "no:unraisableexception",  # its closing garbage collections cost half a second
            "--assert=plain",  # the checks report through `fail`, never a bare assert: nothing to rewrite
            f"--hypothesis-profile={profile}", *options]
    if ini is not None:
        argv += ["-c", str(ini), "--rootdir", str(ini.parent)]
    if results_json is not None:
        argv += ["--results-json", str(results_json)]
    return argv + [f"--area={a}" for a in areas] + list(extra)


def isolated_ini(directory: Path) -> Path:
    """An empty pytest configuration, so no conftest or ini of the caller's tree interferes."""
    ini = directory / "pytest.ini"
    ini.write_text("[pytest]\n")
    return ini


def harness_env(cwd: Path) -> dict[str, str]:
    """A harness's environment: the caller's, with Hypothesis's storage in the harness's own folder."""
    return dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=str(Path(cwd) / ".hypothesis"))


def run_harness(arguments: list[str]) -> int:
    """A harness's pytest session, in this process (a clone or a fork of `conformance grade`, or a caller's own)."""
    import torch

    torch.set_num_threads(1)
    import pytest

    return int(pytest.main(arguments))


@functools.cache
def import_harness() -> None:
    """Import the harness once, before forking harnesses from this process (no zygote to clone them)."""
    import importlib

    import torch

    torch.set_num_threads(1)  # before any fork: one thread per harness, and no thread pool to inherit
    import pytest  # noqa: F401

    from under_test import sandbox

    from . import profiles, session  # noqa: F401 - the session's hooks, imported now for every fork to inherit
    from .areas import AREAS

    profiles.register()

    for area_id in AREAS:
        importlib.import_module(f"conformance.checks.test_{area_id}")
    sandbox.standin_cache()


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
        os.environ.update(harness_env(cwd))
        processes.LIVE.clear()
        processes.forget_subreaper()  # the flag is not inherited: ask again
        code = run()
    finally:
        os._exit(code)


def start_harness(arguments: list[str], log: Path, cwd: Path) -> int:
    """A harness running pytest with `arguments`, its output on `log`; its pid (a child of this process).

    Cloned by this process's zygote: it starts with torch and torchvision imported, imports the rest of the harness
    (0.7 s), and forks its own workers' zygote from itself before that, for free. Without a zygote, it is a fork of
    this process, which then imports the harness once.
    """
    from under_test import zygote

    template = processes.own_zygote()
    if template is not None:
        try:
            return template.harness(ENTRY, arguments, harness_env(cwd), str(cwd), str(log.resolve()))
        except zygote.Unavailable:
            pass
    import_harness()
    return fork_harness(lambda: run_harness(arguments), log, cwd)


def run_forked(arguments: list[str], log: Path, cwd: Path) -> int:
    """A harness in a fork of this process, waited for: its exit status."""
    import pytest

    _, status = os.waitpid(fork_harness(lambda: int(pytest.main(arguments)), log, cwd), 0)
    return os.waitstatus_to_exitcode(status)
