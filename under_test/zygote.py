"""A worker template: one process that has imported what every worker imports, and clones fresh workers.

Starting a worker from scratch costs about 2.5 s here, most of it importing torch and torchvision.
The zygote pays that once per harness process; each worker is then a clone of it, ready in
milliseconds, and loads the submission's definitions as a freshly started one would (`worker.main`).

The zygote holds nothing of the harness: it is a fresh interpreter (`python -m under_test.zygote`)
that imports the worker's own modules and the libraries a course script imports, never the
reference, the checks or the fixtures' snapshots, so a submission searching its worker's memory
finds no more than in a worker started from scratch.

Each clone is made with CLONE_PARENT: its parent is the harness, not the zygote. The harness
waits for it, reads its exit status and adopts its orphans exactly as for a worker it started
itself, and the worker dies with the harness (`PR_SET_PDEATHSIG`). Anything that goes wrong with
the zygote (it died, the kernel refuses the clone, an architecture without a known clone call)
makes the sandbox start its worker from scratch instead: slower, never a different verdict.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CLONE_PARENT = 0x00008000
SIGCHLD = 17
SYS_CLONE = {"x86_64": 56, "aarch64": 220}  # clone(flags, stack=0, ...): the remaining arguments are unused
DISABLE_ENV = "CONFORMANCE_ZYGOTE"  # "0": start every worker from scratch


def base_env() -> dict[str, str]:
    """The environment every worker starts from (its private folders and caches are added per worker).

    One thread, and no GPU: the grade must not depend on the machine (a submission that moves its model to cuda
    when available runs on the CPU everywhere). These are read when torch is imported, so the zygote has them too.
    """
    root = str(Path(__file__).resolve().parent.parent)
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
                CUDA_VISIBLE_DEVICES="", HIP_VISIBLE_DEVICES="", ROCR_VISIBLE_DEVICES="",
                PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


def widen(fd: int) -> None:
    """Give a pipe the largest buffer an unprivileged process may (1 MB by default, against 64 kB): a model's
    state then crosses in a few hundred writes instead of a few thousand, a third faster."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as handle:
            fcntl.fcntl(fd, 1031, int(handle.read()))  # F_SETPIPE_SZ
    except (OSError, ValueError, ImportError):
        pass


class Unavailable(Exception):
    """The zygote cannot clone a worker; the caller starts one from scratch."""


class Cloned:
    """A worker cloned by the zygote, with the part of `subprocess.Popen`'s interface the sandbox uses.

    Its pid is known once the zygote has replied (`pid` waits for that); until then the worker may be
    a few milliseconds from existing, or the zygote may still be importing torch.
    """

    def __init__(self, zygote: Zygote, stdin, stdout):
        self.zygote = zygote
        self.stdin, self.stdout = stdin, stdout
        self._pid: int | None = None
        self.failure: str | None = None
        self.returncode: int | None = None

    @property
    def settled(self) -> bool:
        return self._pid is not None or self.failure is not None

    @property
    def pid(self) -> int:
        """The worker's pid; `Unavailable` when the zygote could not clone it."""
        while not self.settled:
            self.zygote.settle_one()
        if self._pid is None:
            raise Unavailable(self.failure)
        return self._pid

    def poll(self) -> int | None:
        if self.returncode is None and self.settled:
            self.returncode = _reap(self._pid, os.WNOHANG) if self._pid is not None else -1
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            try:
                self.returncode = _reap(self.pid, 0)
            except Unavailable:
                self.returncode = -1
        return self.returncode


class _Forked:
    """A zygote forked by the harness itself (`Zygote.adopt`), with the part of Popen's interface used here."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _reap(self.pid, os.WNOHANG)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = _reap(self.pid, 0)
        return self.returncode


def _reap(pid: int, flags: int) -> int | None:
    """A child's exit code once it has ended (-1 if it was reaped elsewhere); None while it runs (os.WNOHANG)."""
    try:
        done, status = os.waitpid(pid, flags)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status) if done else None


class Zygote:
    """The harness's end: start the zygote, ask it for workers (or, `conformance grade`'s, for harnesses), read
    back their pids (in order)."""

    def __init__(self, env: dict[str, str]):
        self.owner = os.getpid()
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Its stderr is this process's (a harness's log, or grade's terminal): where a clone that fails before it
        # has a log of its own says why.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "under_test.zygote", str(theirs.fileno()), str(os.getpid())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, cwd="/")
        theirs.close()
        self.pending: collections.deque[Cloned] = collections.deque()
        self.dead: str | None = None

    @classmethod
    def adopt(cls, pid: int, sock: socket.socket) -> Zygote:
        """The zygote a harness cloned by `conformance grade`'s zygote forked for itself (`_become_harness`)."""
        template = cls.__new__(cls)
        template.owner, template.sock, template.process = os.getpid(), sock, _Forked(pid)
        template.pending, template.dead = collections.deque(), None
        return template

    def harness(self, entry: str, argv: list[str], env: dict[str, str], cwd: str, log: str) -> int:
        """Clone a process that runs `entry(argv)` (a "module:function" its caller names, which imports what it
        needs), its output on `log`; its pid, once it leads its own process group. It is this process's child, and
        starts with torch imported."""
        if self.dead:
            raise Unavailable(self.dead)
        try:
            self.sock.send(json.dumps({"kind": "harness", "entry": entry, "argv": argv, "env": env, "cwd": cwd,
                                       "log": log}).encode())
        except OSError as error:
            self._died(f"the zygote is gone ({error})")
            raise Unavailable(self.dead) from None
        cloned = Cloned(self, None, None)
        self.pending.append(cloned)
        return cloned.pid

    def warm(self) -> None:
        """Have the zygote compute what every harness of a class grade needs alike (`_warm`), before cloning more."""
        if not self.dead:
            try:
                self.sock.send(WARM)
            except OSError as error:
                self._died(f"the zygote is gone ({error})")

    def clone(self, argv: list[str], env: dict[str, str], cwd: str, log: int, bulk: int | None = None) -> Cloned:
        """Ask for a worker running `python -m under_test.worker *argv` in `cwd` with `env`, its stderr on `log`, and
        the file `bulk` for large replies (its descriptor 3), if there is one."""
        if self.dead:
            raise Unavailable(self.dead)
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        widen(request_w)
        widen(reply_r)
        try:
            bulks = [] if bulk is None else [bulk]
            message = json.dumps({"argv": [*argv, *["--bulk-fd=3" for _ in bulks]], "env": env, "cwd": cwd}).encode()
            socket.send_fds(self.sock, [message], [request_r, reply_w, log, *bulks])
        except OSError as error:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
            self._died(f"the zygote is gone ({error})")
            raise Unavailable(self.dead) from None
        finally:
            for fd in (request_r, reply_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        cloned = Cloned(self, os.fdopen(request_w, "wb"), os.fdopen(reply_r, "rb"))
        self.pending.append(cloned)
        return cloned

    def settle_one(self, timeout: float = 120.0) -> None:
        """Read the zygote's reply to the oldest pending request."""
        cloned = self.pending[0]
        reply = b""
        if not self.dead and select.select([self.sock], [], [], timeout)[0]:
            try:
                reply = self.sock.recv(4096)
            except OSError:
                reply = b""
        try:
            value = json.loads(reply) if reply else {}
        except ValueError:
            value = {}
        if isinstance(value.get("pid"), int) and value["pid"] > 0:
            cloned._pid = value["pid"]
        else:
            cloned.failure = str(value.get("error") or self.dead or "the zygote did not answer")
            if not value:
                self._died(cloned.failure)
        self.pending.popleft()

    def settle(self) -> list[int]:
        """Wait for every pending clone; the pids of those cloned."""
        settled = list(self.pending)
        while self.pending:
            self.settle_one()
        return [cloned.pid for cloned in settled if cloned.failure is None]

    def _died(self, reason: str) -> None:
        self.dead = self.dead or reason
        while self.pending:
            self.pending.popleft().failure = self.dead
        self.stop()

    def stop(self) -> None:
        self.dead = self.dead or "stopped"
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.sock.close()


# ---- the zygote itself --------------------------------------------------------------------------------

def _clone() -> int:
    """fork(), except that the child's parent is this process's parent."""
    import ctypes
    import platform

    number = SYS_CLONE.get(platform.machine())
    if number is None:
        raise OSError(f"no clone call known for {platform.machine()}")
    libc, api = ctypes.CDLL(None, use_errno=True), ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = libc.syscall(number, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone failed")
    return pid


def _take_over(sock: socket.socket, ready: int, fds: dict[int, int], cwd: str, env: dict) -> None:
    """In a clone: leave the zygote's channel, lead a session of its own (what `start_new_session=True` gives a
    process started from scratch), say so, then take its descriptors ({target: fd}), folder and environment."""
    sock.close()
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the zygote ignores Ctrl-C; a clone is a process
    os.write(ready, b"1")
    os.close(ready)
    for target, fd in fds.items():
        os.dup2(fd, target)
    for fd in set(fds.values()) - set(fds):
        os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # TMPDIR is the clone's own


def _run_clone(body) -> None:
    """Run `body()` (its exit code) and end the clone with it; whatever it raises goes to the clone's stderr."""
    code = 1
    try:
        code = body()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:  # noqa: BLE001 - on the clone's log, which the sandbox or `grade` shows
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _become_worker(sock: socket.socket, ready: int, request: dict, fds: list[int]) -> None:
    """In a clone made for a sandbox: `python -m under_test.worker *argv`, on the descriptors it was sent."""
    def body() -> int:
        _take_over(sock, ready, dict(enumerate(fds)), str(request["cwd"]), dict(request["env"]))
        from . import worker

        worker._die_with_parent(_PARENT[0] if _PARENT else None)

        argv = list(request["argv"])
        sys.argv = [worker.__file__, *argv]
        worker.main(argv)
        return 0

    _run_clone(body)


_PARENT: list[int] = []  # the process this zygote serves: every clone's parent (CLONE_PARENT)


def main(fd: int, parent: int | None = None) -> None:
    from .worker import _die_with_parent

    _die_with_parent(parent)
    _PARENT.append(os.getppid())
    # Ctrl-C reaches the terminal's whole process group, this zygote included: its owner decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)

    import gc

    import torch

    torch.set_num_threads(1)
    # What every worker imports before it loads a submission (`worker.main`, `course.base_namespace`).
    import einops  # noqa: F401
    import jaxtyping  # noqa: F401
    import numpy  # noqa: F401
    import torchvision.models.resnet  # noqa: F401

    import fixtures.standin  # the offline resnet34 (`course.install_offline_torchvision`)

    fixtures.standin.preload()

    # What every harness imports first (`conformance grade` clones its harnesses from a zygote): third-party test
    # tools, nothing of the project's harness. A submission may import them as well.
    import _hypothesis_pytestplugin  # noqa: F401
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401

    _local_constants()

    # Not `trusted`: its correct building blocks are imported only by a worker that lends them (root cause).
    from . import course, isolation, loader, packages, worker  # noqa: F401

    course.course_given()
    gc.collect()
    gc.freeze()
    _serve(sock)


def _local_constants() -> None:
    """Have Hypothesis read the constants of the modules loaded so far, once here: a harness's collection reads those
    of every module it has (0.1 s, nearly all of them these, in the packages, which give none), and from a clone of
    this process only those it imported itself. The same constants either way: they are kept in a set. Hypothesis
    keeps a cache of them in its storage folder, which is a scratch folder here, and each clone's own afterwards."""
    try:
        import warnings

        from hypothesis.configuration import set_hypothesis_home_dir
        from hypothesis.errors import HypothesisSideeffectWarning
        from hypothesis.internal.conjecture.providers import _get_local_constants
    except ImportError:  # a Hypothesis without them: each harness reads its own
        return
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", HypothesisSideeffectWarning)  # its advice to pytest plugins
        set_hypothesis_home_dir(scratch)
        try:
            _get_local_constants()
        finally:
            set_hypothesis_home_dir(None)  # a clone's is its HYPOTHESIS_STORAGE_DIRECTORY


def _serve(sock: socket.socket) -> None:
    """Clone what is asked, until the asker closes its end: workers (three or four descriptors: their requests,
    their replies, their log, and their bulk file if they have one) and, for `conformance grade`, harnesses."""
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            return
        if not message:
            return
        if message == WARM:
            _warm()
            continue
        ready_r, ready_w = os.pipe()
        try:
            request = json.loads(message)
            kind = request.get("kind", "worker")
            if kind not in ("worker", "harness") or len(fds) not in ((3, 4) if kind == "worker" else (0,)):
                raise ValueError(f"a malformed request ({kind}, {len(fds)} descriptors)")
            pid = _clone()
        except (OSError, ValueError, AttributeError) as error:
            for fd in (*fds, ready_r, ready_w):
                os.close(fd)
            sock.send(json.dumps({"error": f"the zygote could not clone: {error}"}).encode())
            continue
        if pid == 0:
            os.close(ready_r)
            if kind == "harness":
                _become_harness(sock, ready_w, request)
            _become_worker(sock, ready_w, request, fds)
        for fd in (*fds, ready_w):
            os.close(fd)
        # The pid is given once the clone leads its own process group: a worker or harness is ended by killing
        # that group, which must not miss a clone still on its way there.
        settled = os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        sock.send(json.dumps({"pid": pid} if settled else {"error": "the clone died while starting"}).encode())


WARM = b"warm"  # a request without reply: compute what every harness of a class computes alike, for all to inherit


def _warm() -> None:
    """The photos of the weight_copy checks (0.3 s each harness), computed here once: `conformance grade` asks for it
    when it grades more submissions than it runs at once. Data only; any failure leaves each harness to do it."""
    try:
        from fixtures.images import SIZES, photo_batch

        for size in SIZES:
            photo_batch(size)
    except Exception:  # noqa: BLE001 - an optimisation only
        pass


def _become_harness(sock: socket.socket, ready: int, request: dict) -> None:
    """In a clone made for `conformance grade`: fork this harness's own zygote (this process as it is now: torch
    imported, nothing of the harness yet), then run the entry point the request names, which imports the harness."""
    def body() -> int:
        log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _take_over(sock, ready, {1: log, 2: log}, str(request["cwd"]), dict(request["env"]))
        from .worker import _die_with_parent

        _die_with_parent(_PARENT[0] if _PARENT else None)  # with `conformance grade`
        harness = os.getpid()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            mine.close()
            _die_with_parent(harness)
            _PARENT[:] = [harness]  # its clones (workers) are the harness's children
            _run_clone(lambda: _serve(theirs) or 0)
        theirs.close()
        from . import processes

        processes.adopt_zygote(pid, mine)
        module, _, function = str(request["entry"]).partition(":")
        return int(getattr(importlib.import_module(module), function)(list(request["argv"])))

    _run_clone(body)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
