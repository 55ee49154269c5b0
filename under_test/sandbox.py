"""The harness's side of the sandbox: start the worker, send it requests, survive it.

Every request has a wall-time limit. A request that hangs, crashes the worker,
exhausts its memory or makes it exit raises `WorkerDied`; the worker is started
again for the next check, so one bad probe costs one check, not the run. Within one
check, once the worker has died, later requests fail at once with the same cause
(`Sandbox.begin_check` clears this), so Hypothesis does not replay a hang many times.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fixtures import standin

from . import wire, zygote
from .bulk import MEMORY, Bulk
from .processes import (DEFAULT_LOAD_TIMEOUT, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, LIVE, START_TIMEOUT,
                        become_subreaper, kill_adopted, own_zygote)
from .wire import HEADER, Handle, Returned



class SubmissionRaised(Exception):
    """The submission's code raised an exception (reported to the learner as is)."""

    def __init__(self, type_name: str, message: str, traceback: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message, self.traceback = type_name, message, traceback


class _StuckLoading(Exception):
    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index, self.reason = index, reason


class WorkerDied(BaseException):
    """The worker hung, crashed, ran out of memory, exited, or sent something unreadable.

    A BaseException on purpose: Hypothesis does not catch it, so a check whose probe
    killed the worker stops at once (no shrinking that would replay the hang), and the
    message names the exact call and inputs that did it.
    """

    def __init__(self, message: str, *, cause: str = "", timed_out: bool = False):
        super().__init__(message)
        self.cause = cause or message  # what happened, without what the worker was doing
        self.timed_out = timed_out


@dataclass
class Clock:
    """Where a process's time with its sandboxes went, in seconds (cumulative; read it before and after).

    `submission`: inside the submission's code (its definitions while loading, then each request, as the
    worker measures it, never more than the request's round trip); `starting`: starting workers
    (importing torch, loading the definitions).
    """

    submission: float = 0.0
    starting: float = 0.0

    def read(self) -> tuple[float, float]:
        return self.submission, self.starting


CLOCK = Clock()  # every sandbox of this process (the graded one and those that lend trusted blocks)

# A hang is paid once. What did not answer within its time limit in this process (the harness), by what it is: the
# type of a module whose call hung ('__submission__.ResNet34'), or the name of a function. Every later call of it
# fails at once with the same cause, in every check and every sandbox of the harness, and every worker refuses to run
# such a module's forward (so a `train(args)` of the submission that would run it stops at once too). A lending
# worker's trusted parts are other types: they are called as usual.
HUNG: dict[str, str] = {}
REFUSED = ".Refused"  # the worker's exception for a forward it refuses (`under_test.worker`, or `__main__`)


def hung_key(verb: str, args: tuple) -> str | None:
    """What a request calls, as `HUNG` knows it (None: not a call): a module's type, or a name of the submission
    called or constructed."""
    if verb not in ("call", "grad", "construct") or not args:
        return None
    target = args[0]
    return target.type if isinstance(target, Handle) else target if isinstance(target, str) else None


def hung_name(key: str) -> str:
    return f"{key.rsplit('.', 1)[-1]}'s forward" if "." in key else f"{key}(...)"


def refused(key: str | None, lending: bool) -> bool:
    """Is this call refused at once? A module type that hung is refused everywhere (a lent part is another type); a
    name that hung only where nothing is lent: with trusted parts in place it may well answer."""
    return key in HUNG and ("." in key or not lending)


@dataclass
class LoadInfo:
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Sandbox:
    def __init__(self, impl: str | Path, *, aliases: dict[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB, trusted: list[str] = (),
                 load_timeout: float = DEFAULT_LOAD_TIMEOUT, skipped: dict[int, str] | None = None):
        self.impl = str(Path(impl).resolve())
        self.aliases = dict(aliases or {})
        self.trusted = list(trusted)  # building blocks replaced by `under_test.trusted`'s (root-cause re-runs)
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.load_timeout = load_timeout
        self.skipped: dict[int, str] = dict(skipped or {})  # definitions that hung or crashed while loading
        self.blocked: list[str] = []
        self.torch_layers: set[str] = set()  # torch.nn layers whose (torch's own) forward ran during this check
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.load_info = LoadInfo()
        self.poisoned: WorkerDied | None = None
        # Every request of the current check (of its current Hypothesis example): [verb, args, kwargs, the Handle it
        # gave, what it raised], written out as a reproduction when the check fails (`conformance.repro`).
        self.calls: list[list] = []
        self.restarts = 0
        self._launched = False  # a worker was spawned ahead (`launch`) and is importing torch meanwhile
        self._log = tempfile.TemporaryFile()
        self._bulk: Bulk | None = None  # the worker's bulk file, for large replies' tensor bytes
        self._told: set[str] = set()  # the `HUNG` entries this worker was told to refuse

    def __repr__(self) -> str:
        return "sandbox"

    # ---- life cycle ----
    def launch(self) -> None:
        """Spawn the worker now and return at once: it imports torch while the harness gets ready; `start`
        then only waits for it to have loaded the submission."""
        self._spawn()
        self._launched = True

    def start(self) -> LoadInfo:
        """Start the worker and load the submission's definitions, each within `load_timeout`.

        A definition that does not finish, or that kills the worker, is remembered in `skipped`
        and the worker is started again without it: its names fail ("its definition did not
        finish within N s"), the rest of the submission is graded, and later restarts of this
        sandbox never wait for it again.
        """
        started = time.perf_counter()
        try:
            while True:
                if not self._launched:
                    self._spawn()
                self._launched = False
                try:
                    hello = self._await_hello()
                    break
                except _StuckLoading as stuck:
                    self.skipped[stuck.index] = stuck.reason
        finally:
            CLOCK.starting += time.perf_counter() - started
        CLOCK.submission += _seconds(hello, time.perf_counter() - started)
        value = hello["value"]
        self.load_info = LoadInfo(dict(value["failed"]), list(value["notes"]))
        return self.load_info

    def _spawn(self) -> None:
        become_subreaper()  # the worker's orphans come to this process, which ends them (`stop`)
        self.stop()
        self._told = set()
        self._log.seek(0)
        self._log.truncate()
        self.workdir = Path(tempfile.mkdtemp(prefix="conformance-worker-")) / "work"
        self.workdir.mkdir()
        private = str(self.workdir)
        arguments = [self.impl, "--aliases", json.dumps(self.aliases), "--memory-mb", str(self.memory_mb),
                     "--trusted", json.dumps(self.trusted), "--skip", json.dumps(self.skipped)]
        # Its home, caches and temporary files are the worker's private folder (`workdir`), removed when it stops.
        env = dict(worker_env(), HOME=private, TMPDIR=private, XDG_CACHE_HOME=private, MPLCONFIGDIR=private)
        self._command = (arguments, env, private)
        self._bulk = _bulk_file()
        template = own_zygote()
        if template is not None:
            try:
                self.process = template.clone(arguments, env, private, self._log.fileno(),
                                              self._bulk.fd if self._bulk else None)
                return
            except zygote.Unavailable:
                pass
        self._from_scratch()

    def _from_scratch(self) -> None:
        """Start the worker in a new interpreter (when no zygote can clone it)."""
        arguments, env, private = self._command
        bulk = [] if self._bulk is None else [self._bulk.fd]
        self.process = subprocess.Popen([sys.executable, "-m", "under_test.worker", *arguments,
                                         *[f"--bulk-fd={fd}" for fd in bulk], f"--parent={os.getpid()}"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
                                        cwd=private, start_new_session=True, pass_fds=bulk)
        zygote.widen(self.process.stdin.fileno())
        zygote.widen(self.process.stdout.fileno())
        LIVE.add(self.process.pid)

    def _settle(self) -> None:
        """Know the worker's pid (a clone's comes from the zygote); a clone the zygote could not make is started
        from scratch: the zygote's trouble is the harness's, never the submission's."""
        if isinstance(self.process, zygote.Cloned):
            try:
                LIVE.add(self.process.pid)
            except zygote.Unavailable:
                for stream in (self.process.stdin, self.process.stdout):
                    stream.close()
                self._from_scratch()

    def _await_hello(self) -> dict:
        """Read the worker's progress through the definitions until its hello."""
        self._settle()
        loading: int | None = None
        while True:
            timeout = START_TIMEOUT if loading is None else self.load_timeout
            doing = "starting (importing torch)" if loading is None else f"loading definition {loading}"
            try:
                message = self._receive(timeout, doing)
            except WorkerDied as died:
                if loading is None:
                    raise
                self.poisoned = None
                raise _StuckLoading(loading, f"its definition did not finish within {self.load_timeout:g} s"
                                    if died.timed_out else f"running its definition: {died.cause}") from None
            if "loading" in message:
                loading = int(message["loading"])
                continue
            self._note_blocked(message)
            return message

    def stop(self) -> None:
        self._launched = False
        if self.process is not None:
            self._settle()
            try:
                os.killpg(self.process.pid, 9)  # it leads its group (a clone's pid is known only once it does)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
            LIVE.discard(self.process.pid)
            for stream in (self.process.stdin, self.process.stdout):
                if stream:
                    stream.close()
            self.process = None
        kill_adopted()  # whatever the submission started and left running, in any session or environment
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir.parent, ignore_errors=True)
            self.workdir = None

    def take_blocked(self) -> list[str]:
        """What the submission tried to reach of the harness since the last call (and was refused)."""
        taken, self.blocked[:] = list(self.blocked), []
        return taken

    def _note_blocked(self, message: dict) -> None:
        attempts = message.get("blocked")
        if isinstance(attempts, list):
            self.blocked.extend(str(a)[:300] for a in attempts[:50] if str(a) not in self.blocked)

    def begin_check(self) -> None:
        """A new check starts: forget the previous check's dead worker and objects."""
        self.poisoned = None
        self.torch_layers.clear()
        self.calls.clear()
        if self.process is not None and self.process.poll() is None:
            state = self.request("reset")
            grown = state.get("grown_mb") if isinstance(state, dict) else None
            if not isinstance(grown, int) or grown > self.memory_mb // 2:
                self.stop()  # what the last check allocated was not given back: the next request starts afresh

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- requests ----
    def request(self, verb: str, *args, timeout: float | None = None, **kwargs):
        if self.poisoned is not None:
            raise WorkerDied(str(self.poisoned))
        if self.process is None or self.process.poll() is not None:
            self.restarts += 1
            self.start()
        key = hung_key(verb, args)
        record = [verb, args, {k: v for k, v in kwargs.items() if k != "timeout"}, None, None]
        if refused(key, bool(self.trusted)):
            self.calls.append(record)
            record[4] = "nothing: not called, it hung before"
            raise WorkerDied(f"not called: earlier, {HUNG[key]}", cause=HUNG[key], timed_out=True)
        if HUNG.keys() - self._told:
            self._told = set(HUNG)
            self.request("refuse", {k: v for k, v in HUNG.items() if "." in k})
            del self.calls[-1]  # not part of the check's reproduction
        self.calls.append(record)
        payload = wire.dump_request((verb, args, kwargs, self._bulk.free_from() if self._bulk else 0))
        try:
            self.process.stdin.write(HEADER.pack(len(payload)))
            self.process.stdin.write(payload)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reply read below reports how the worker died
        started = time.perf_counter()
        doing = _describe(verb, args, kwargs)
        try:
            reply = self._receive(timeout or self.timeout, doing)
        except WorkerDied as died:
            record[4] = f"nothing: the worker stopped ({str(died)[:100]})"
            if died.timed_out and key is not None and ("." in key or not self.trusted):
                HUNG.setdefault(key, f"{hung_name(key)} did not answer within {timeout or self.timeout:g} s while "
                                     f"{doing} (hang or far too slow), so it is not waited for again")
            raise
        CLOCK.submission += _seconds(reply, time.perf_counter() - started)
        self._note_blocked(reply)
        layers = reply.get("torch_layers")
        if isinstance(layers, list):
            self.torch_layers.update(str(name) for name in layers[:100])
        if not reply.get("ok"):
            error = reply.get("error") or {}
            record[4] = f"{error.get('type')}: {str(error.get('message'))[:200]}"
            if str(error.get("type")).endswith(REFUSED) and str(error.get("message")) in HUNG.values():
                message = str(error.get("message"))
                raise WorkerDied(f"stopped at once: earlier, {message}", cause=message, timed_out=True)
            raise SubmissionRaised(str(error.get("type")), str(error.get("message")), str(error.get("traceback")))
        value = wire.decode(reply.get("value"))
        made = value.get("value") if isinstance(value, dict) else value  # "call" replies {"value": ...}
        record[3] = made if isinstance(made, Handle) else None  # not a state's 87 MB: only what names objects
        if verb == "run_train" and isinstance(value, dict) and isinstance(value.get("result"), tuple):
            record[3] = tuple(v if isinstance(v, Handle) else None for v in value["result"])
        return value

    def _receive(self, timeout: float, doing: str) -> dict:
        deadline = time.monotonic() + timeout
        try:
            fd = self.process.stdout.fileno()
            size, bulk, at = wire.FRAME.unpack(wire.read_exact(fd, wire.FRAME.size, deadline))
            if size > MEMORY:  # more than this machine holds: not a reply
                raise wire.WireError(f"a reply of {size} bytes announced")
            payload = wire.read_exact(fd, size, deadline)
            if bulk and self._bulk is None:
                raise wire.WireError("a reply in a bulk file the worker was not given")
            return wire.load(payload, self._bulk.take(at, bulk) if bulk else None)
        except (TimeoutError, EOFError, wire.WireError) as error:
            died = self._death(error, timeout, doing)
            self.stop()
            self.poisoned = died
            raise died from None

    def _death(self, error: Exception, timeout: float, doing: str) -> WorkerDied:
        if isinstance(error, TimeoutError):
            return WorkerDied(f"the submission did not answer within {timeout:g} s while {doing} (hang or far too slow)",
                              cause=f"the submission did not answer within {timeout:g} s", timed_out=True)
        if isinstance(error, wire.WireError):
            return WorkerDied(f"the worker sent an unreadable reply while {doing}: {error}",
                              cause=f"the worker sent an unreadable reply: {error}")
        self.process.wait()
        code = self.process.returncode
        tail = self.log_tail()
        if code is not None and code < 0:
            cause = {9: "killed (out of memory?)", 11: "segmentation fault", 6: "aborted"}.get(-code, f"signal {-code}")
            what = f"the worker crashed ({cause})"
        else:
            what = f"the worker exited with status {code}"
        if "MemoryError" in tail or "can't allocate memory" in tail or "DefaultCPUAllocator" in tail:
            what += f"; it ran out of its {self.memory_mb} MB memory cap"
        return WorkerDied(f"{what} while {doing}" + (f"\n{tail}" if tail else ""), cause=what)

    def log_tail(self, lines: int = 8) -> str:
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    # ---- conveniences used by the checks ----
    def construct(self, name: str, *args, seed: int = 0, **kwargs) -> Handle:
        handle = self.request("construct", name, args, kwargs, seed=seed)
        if not isinstance(handle, Handle):
            raise TypeError(f"{name}(...) gave a {type(handle).__name__}, not an object")
        return handle

    def call(self, target: str | Handle, *args, trace: bool = False, seed: int = 0, no_grad: bool = False,
             limit: float | None = None, provenance: bool = False, **kwargs):
        """Call a function or module; with `trace=True` returns (value, set of ATen ops), with
        `provenance=True` (value, set of the torchvision model functions it ran).

        `limit` replaces the probe's wall-time limit for this call (a forward the harness knows is long).
        """
        reply = self.request("call", target, args, kwargs, trace=trace, seed=seed, no_grad=no_grad,
                             provenance=provenance, timeout=limit)
        if trace:
            return reply["value"], set(reply["ops"])
        if provenance:
            return reply["value"], {str(name) for name in reply["torchvision"]}
        return reply["value"]

    def method(self, handle: Handle, name: str, *args, **kwargs):
        return self.request("method", handle, name, args, kwargs)

    def get(self, handle: Handle, path: str):
        return self.request("getattr", handle, path)

    def set(self, handle: Handle, path: str, value) -> None:
        self.request("setattr", handle, path, value)

    def state(self, handle: Handle, values: bool = True) -> dict:
        return self.request("state", handle, values=values)

    def release(self, *handles: Handle) -> None:
        """Let the worker free these objects before the check ends (a check that builds a ResNet34 per example)."""
        self.request("release", list(handles))

    def pretrained(self) -> Handle:
        """The worker's own "pretrained" ResNet34 (what `models.resnet34(weights=...)` gives the submission)."""
        handle = self.request("pretrained")
        if not isinstance(handle, Handle):
            raise wire.WireError("pretrained: expected a model")
        return handle

    def repr(self, handle: Handle) -> str:
        return self.request("repr", handle)

    def grad(self, target: str | Handle, args: tuple, cotangent, **kwargs) -> dict:
        return self.request("grad", target, args, cotangent, kwargs=kwargs)

    def fit(self, handle: Handle, inputs: torch.Tensor, labels: torch.Tensor, *, epochs: int = 1,
            batch_size: int = 32, lr: float = 1e-3, seed: int = 0, timeout: float) -> list[float]:
        """Train the module's trainable parameters the course's way (Adam, cross-entropy, train mode).

        Returns the loss of every batch as plain floats; the model stays in the worker.
        """
        reply = self.request("fit", handle, inputs, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             timeout=timeout)
        return _floats(reply.get("losses") if isinstance(reply, dict) else None, "the training loop's losses")

    def run_train(self, datasets: tuple, *, args_class: str | None, overrides: dict | None = None,
                  defaults: dict | None = None, seed: int = 0, timeout: float) -> tuple[object, dict]:
        """Run the submission's own `train(args)` with the course's data helpers returning `datasets`.

        Returns what train returned (decoded: Handles, lists, Returned tensors) and the args it
        was given: {"fields": {name: value}, "type": the args object's type name, "steps": what
        the worker saw of the optimizer's steps (plain counts, read by `conformance.training.Steps`)}.
        """
        reply = self.request("run_train", datasets, args_class=args_class, overrides=overrides, defaults=defaults,
                             seed=seed, timeout=timeout)
        if not isinstance(reply, dict) or "result" not in reply:
            raise wire.WireError("run_train: malformed reply")
        fields = reply.get("args")
        return reply["result"], {"fields": dict(fields) if isinstance(fields, dict) else {},
                                 "type": str(reply.get("args_type")), "steps": reply.get("steps")}


def _bulk_file() -> Bulk | None:
    """A bulk file for the worker's large replies; None where the system gives none (they then cross the pipe)."""
    try:
        return Bulk()
    except (OSError, AttributeError):  # no memfd or no sealing here
        return None


def worker_env() -> dict[str, str]:
    """The environment of every worker, apart from its private folders: `zygote.base_env`, torch's cache, and the
    stand-in's file."""
    env = dict(zygote.base_env(), TORCH_HOME=os.environ.get("TORCH_HOME") or str(Path(torch.hub.get_dir()).parent))
    env[standin.CACHE_ENV] = standin_cache()
    return env


@functools.lru_cache(maxsize=1)
def standin_cache() -> str:
    """The stand-in's cache file, made once per machine, which every worker reads instead of generating it."""
    return _ensured(str(standin.cache_path())) if standin.pretrained_source() == "standin" else ""


@functools.lru_cache(maxsize=4)
def _ensured(path: str) -> str:
    """`ensure_cache()`, checked once per process (reading it back and hashing 87 MB takes 0.1 s), not per worker."""
    return str(standin.ensure_cache())


def _seconds(reply: dict, most: float) -> float:
    """The time the worker says it spent, within [0, the round trip]: a submission cannot bend the clock."""
    value = reply.get("seconds")
    return min(max(value, 0.0), most) if type(value) is float and math.isfinite(value) else 0.0


def _floats(values: object, what: str) -> list[float]:
    if not isinstance(values, list) or not all(type(v) is float for v in values):
        raise wire.WireError(f"{what}: expected a list of floats")
    return values


def _describe(verb: str, args: tuple, kwargs: dict) -> str:
    """'calling conv2d(x=float32[1, 2, 5, 5] non-contiguous, ...)': what the worker was doing."""
    def short(value: object) -> str:
        if isinstance(value, torch.Tensor):
            layout = "" if value.is_contiguous() else " non-contiguous"
            return f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}{layout}"
        if isinstance(value, Handle):
            return f"<{value.type.rsplit('.', 1)[-1]} object>"
        if isinstance(value, (list, tuple)):
            inner = ", ".join(short(v) for v in value)
            return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {short(v)}" for k, v in value.items()) + "}"
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    if verb == "method" and len(args) >= 2:
        return f"calling {short(args[0])}.{args[1]}({', '.join(short(a) for a in (args[2] if len(args) > 2 else ()))})"
    options = {k: v for k, v in kwargs.items() if k in ("trace", "seed", "no_grad") and v}
    if verb in ("call", "construct", "grad") and args:
        target, rest = args[0], args[1:]
        name = target if isinstance(target, str) else short(target)
        if verb == "grad":
            rest = rest[:1]
        positional = rest[0] if verb in ("call", "construct", "grad") and rest else ()
        keywords = rest[1] if len(rest) > 1 and isinstance(rest[1], dict) else {}
        parts = [short(a) for a in positional] + [f"{k}={short(v)}" for k, v in keywords.items()]
        what = {"call": "calling", "construct": "constructing", "grad": "backpropagating through"}[verb]
        return f"{what} {name}({', '.join(parts)})" + (f" [{options}]" if options else "")
    return {"state": "reading a module's state", "repr": "printing a module", "method": "calling a method",
            "reset": "resetting", "pretrained": "building the pretrained ResNet34",
            "fit": "training the model on digits (Adam, cross-entropy, train mode)",
            "run_train": "running the submission's own train(args) on digits"}.get(verb, verb)


__all__ = ["CLOCK", "Clock", "Sandbox", "SubmissionRaised", "WorkerDied", "Handle", "Returned", "LoadInfo"]
