"""The sandbox worker: the only process where submission code runs.

Started by `under_test.sandbox.Sandbox` as `python -m under_test.worker`. It loads the
submission's definitions, caps its own memory, then answers small trusted requests
(construct this, call that, read this module's state) with plain data. It never
judges anything: verdicts are made in the harness from what it sends back.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from .processes import DEFAULT_MEMORY_MB
from .wire import HEADER, Handle, RequestUnpickler, encode, read_exact, send, type_name


class Worker:
    def __init__(self, namespace: dict, pretrained=None):
        self.namespace = namespace
        self.pretrained = pretrained
        self.objects: dict[int, object] = {}
        self.base_bytes = _mapped_bytes()

    # ---- object table ----
    def keep(self, obj: object) -> int:
        for key, value in self.objects.items():
            if value is obj:
                return key
        key = len(self.objects) + 1
        while key in self.objects:
            key += 1
        self.objects[key] = obj
        return key

    def resolve(self, value: object) -> object:
        if isinstance(value, Handle):
            return self.objects[value.id]
        if type(value) in (list, tuple):
            return type(value)(self.resolve(v) for v in value)
        if type(value) is dict:
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def target(self, target: object):
        if isinstance(target, str):
            if target not in self.namespace:
                raise NameError(f"the submission defines no {target!r}")
            return self.namespace[target]
        return self.resolve(target)

    def out(self, value: object) -> object:
        return encode(value, self.keep)

    # ---- requests ----
    def do_reset(self):
        """Forget the previous check's objects; returns how much address space (MB) the worker now maps
        beyond its start, so the harness can start a fresh one when freed memory was not given back."""
        self.objects.clear()
        gc.collect()
        return {"grown_mb": (_mapped_bytes() - self.base_bytes) // (1 << 20)}

    def do_release(self, handles):
        """Forget these objects now (a full ResNet34 is 87 MB): the harness has read what it needs of them."""
        for handle in handles:
            if isinstance(handle, Handle):
                self.objects.pop(handle.id, None)
        gc.collect()
        return None

    def do_refuse(self, refused: dict):
        """From now on, refuse to run the forward of these module types ({type name: why}): the harness saw them
        hang (`sandbox.HUNG`), and a hang is paid once."""
        Refusals.install().refused.update({str(k): str(v) for k, v in refused.items()})
        return None

    def do_construct(self, name, args=(), kwargs=None, seed=0):

        _seed(seed)
        return self.out(self.target(name)(*self.resolve(args), **self.resolve(kwargs or {})))

    def do_call(self, target, args=(), kwargs=None, trace=False, seed=0, no_grad=False, provenance=False):
        """Call a function or module. `trace`: also the ATen ops it ran; `provenance`: the torchvision model
        code it ran (`torchvision.models`' own functions and methods, however they were reached)."""
        import torch

        _seed(seed)
        function = self.target(target)
        args, kwargs = self.resolve(args), self.resolve(kwargs or {})
        context = torch.no_grad() if no_grad else _nullcontext()
        if provenance:
            with context, _TorchvisionCalls() as calls:
                value = function(*args, **kwargs)
            return {"value": self.out(value), "torchvision": sorted(calls.seen)}
        if not trace:
            with context:
                return {"value": self.out(function(*args, **kwargs))}
        recorder = _op_recorder()
        with context, recorder:
            value = function(*args, **kwargs)
        return {"value": self.out(value), "ops": sorted(recorder.ops)}

    def do_method(self, handle, method, args=(), kwargs=None):
        obj = self.resolve(handle)
        return self.out(getattr(obj, method)(*self.resolve(args), **self.resolve(kwargs or {})))

    def do_getattr(self, handle, path):
        obj = self.resolve(handle)
        for part in path.split("."):
            obj = obj[int(part)] if part.lstrip("-").isdigit() else getattr(obj, part)
        return self.out(obj)

    def do_setattr(self, handle, path, value):
        obj = self.resolve(handle)
        *parents, last = path.split(".")
        for part in parents:
            obj = obj[int(part)] if part.lstrip("-").isdigit() else getattr(obj, part)
        value = self.resolve(value)
        if last.lstrip("-").isdigit():
            obj[int(last)] = value
        else:
            setattr(obj, last, value)

    def do_state(self, handle, values=True):
        """state_dict entries in order, with whether each is a parameter or a buffer; with `values=False`, each
        entry's layout (type, dtype, shape, requires_grad) instead of its values."""
        import torch

        module = self.resolve(handle)
        parameters = dict(module.named_parameters(remove_duplicate=False))
        buffers = dict(module.named_buffers(remove_duplicate=False))
        entries = []
        for key, value in module.state_dict(keep_vars=True).items():
            kind = "parameter" if key in parameters else "buffer" if key in buffers else "other"
            if values or not isinstance(value, torch.Tensor):
                entries.append([key, kind, self.out(value)])
            else:
                entries.append([key, kind, {"type": type_name(value), "dtype": str(value.dtype).removeprefix("torch."),
                                            "shape": list(value.shape), "requires_grad": bool(value.requires_grad)}])
        return {
            "entries": entries,
            "parameters": [[n, bool(p.requires_grad)] for n, p in parameters.items()],
            "buffers": list(buffers),
            "training": [[n, bool(m.training)] for n, m in module.named_modules()],
        }

    def do_pretrained(self):
        """The "pretrained" ResNet34, built here as `models.resnet34(weights=...)` builds it for the submission
        (`course.install_offline_torchvision`), in eval mode: the source copy_weights copies from."""
        return self.out(self.pretrained().eval())

    def do_repr(self, handle):
        return repr(self.resolve(handle))

    def do_grad(self, target, args, cotangent, kwargs=None, seed=0):
        """Call `target(*args)` and backpropagate `(output * cotangent).sum()`.

        Returns the output, the gradient of every floating tensor argument, and of the
        target's parameters by name when the target is a module.
        """
        import torch

        _seed(seed)
        function = self.target(target)
        args = [a.detach().clone().requires_grad_(True) if _is_float_tensor(a) else a for a in self.resolve(args)]
        output = function(*args, **self.resolve(kwargs or {}))
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"forward returned {type_name(output)}, not a Tensor")
        (output * cotangent).sum().backward()
        params = dict(function.named_parameters()) if isinstance(function, torch.nn.Module) else {}
        return {
            "value": self.out(output),
            "input_grads": [self.out(a.grad) if _is_float_tensor(a) else None for a in args],
            "param_grads": {n: self.out(p.grad) for n, p in params.items()},
        }

    # ---- training (the model is the submission's, so it runs here) ----
    def do_fit(self, handle, inputs, labels, epochs=1, batch_size=32, lr=1e-3, seed=0):
        """The course's training loop, run by the harness on the submission's model.

        Adam over the parameters that require grad (for a feature extractor: only the
        new head), `F.cross_entropy(model(x), y)` on shuffled batches, `model.train()`
        at the start of every epoch, as the course's trainers do. Returns only the
        loss of every batch, as floats; the harness judges the model afterwards.
        """
        import torch
        import torch.nn.functional as F

        _seed(seed)
        model = self.resolve(handle)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no parameter with requires_grad=True: there is nothing to train")
        optimizer = torch.optim.Adam(params, lr=lr)
        order = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(epochs):
            model.train()
            permutation = torch.randperm(len(labels), generator=order)
            for start in range(0, len(labels), batch_size):
                batch = permutation[start:start + batch_size]
                loss = F.cross_entropy(model(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.item()))
        return {"losses": losses}

    def do_run_train(self, datasets, args_class=None, overrides=None, defaults=None, seed=0):
        """Run the submission's own `train(args)` on the harness's data, with a short budget.

        While it runs, the course's data helpers (`get_cifar`, `get_cifar_subset`,
        `get_mnist`, whatever arguments they are given) return `datasets`, the
        harness's (train, held-out) pair; progress bars and plots are made inert. The
        args object is the submission's own `args_class()` with `overrides` set on the
        fields it has, or, when it defines no such class, a plain namespace of
        `defaults` and `overrides`. Returns whatever `train` returned, encoded.
        """
        import dataclasses
        import types


        overrides, defaults = dict(overrides or {}), dict(defaults or {})
        cls = self.namespace.get(args_class) if args_class else None
        if isinstance(cls, type):
            args = cls()
            for key, value in overrides.items():
                if hasattr(args, key):
                    setattr(args, key, value)
        else:
            args = types.SimpleNamespace(**{**defaults, **overrides})
        names = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) \
            else [name for name in dir(args) if not name.startswith("_")]
        used = {name: getattr(args, name) for name in names
                if type(getattr(args, name, None)) in (int, float, bool, str)}

        def data(*_args, **_kwargs):
            return datasets

        swapped = {name: data for name in ("get_cifar", "get_cifar_subset", "get_mnist")}
        swapped.update(tqdm=_QuietProgress, trange=_QuietProgress.trange)
        for name in ("line", "imshow", "bar", "hist", "scatter", "display"):
            if name not in self.namespace:
                swapped[name] = _ignore
        saved = {name: self.namespace[name] for name in swapped if name in self.namespace}
        self.namespace.update(swapped)
        try:
            _seed(seed)
            with _TrainLedger() as ledger:
                result = self.target("train")(args)
        finally:
            for name in swapped:
                self.namespace.pop(name, None)
            self.namespace.update(saved)
        return {"result": self.out(result), "args": self.out(used), "args_type": type_name(args),
                "steps": ledger.summary()}


class _TrainLedger:
    """What the worker sees of the optimizer and the model while the submission's `train` runs.

    Stale gradients: after each step it keeps the gradients the step used and, through a hook
    on each of the optimizer's parameters, adds up every gradient backpropagated since. At the
    next step the parameters' gradients are either that sum (zeroed in between, however: the
    optimizer's or the model's zero_grad, or `p.grad = None`) or, when nothing zeroed them,
    exactly the kept gradients plus that sum: that step is counted as stale. Anything else
    (clipping, say) is not counted.

    Evaluation in train mode: calls of a module holding a `running_mean` (a BatchNorm) while
    it is in train mode and gradients are off (`no_grad`, `inference_mode`), which is what a
    validation loop without `model.eval()` does. Plain counts only; the harness judges them.
    """

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self.steps = self.stale = self.train_mode_no_grad = 0
        self.first_stale: int | None = None
        self.used: dict[int, object] = {}  # id(parameter) -> its gradient at the last step (a copy)
        self.since: dict[int, object] = {}  # id(parameter) -> the sum of the gradients backpropagated since
        self.hooks = [register_optimizer_step_pre_hook(self.before), register_optimizer_step_post_hook(self.after),
                      register_module_forward_pre_hook(self.called)]
        self.watched: dict[int, object] = {}
        return self

    def __exit__(self, *exc):
        for hook in self.hooks + list(self.watched.values()):
            hook.remove()
        return False

    @staticmethod
    def parameters(optimizer):
        return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]

    def before(self, optimizer, args, kwargs):
        import torch

        self.steps += 1
        compared = 0
        for p in self.parameters(optimizer):
            kept = self.used.get(id(p))
            if p.grad is None or kept is None or not kept.numel() or not bool(kept.abs().max() > 0):
                continue
            since = self.since.get(id(p))
            since = torch.zeros_like(p.grad) if since is None else since
            tolerance = 1e-5 * (float(p.grad.abs().max()) + 1e-12)
            carried = float((p.grad - kept - since).abs().max()) <= tolerance < float((p.grad - since).abs().max())
            if not carried:
                return
            compared += 1
        if compared:
            self.stale += 1
            self.first_stale = self.first_stale or self.steps

    def after(self, optimizer, args, kwargs):
        for p in self.parameters(optimizer):
            if id(p) not in self.watched:
                self.watched[id(p)] = p.register_hook(functools.partial(self.arrived, id(p)))
            self.used[id(p)] = None if p.grad is None else p.grad.detach().clone()
            self.since[id(p)] = None

    def arrived(self, key: int, grad):
        total = self.since.get(key)
        self.since[key] = grad.detach().clone() if total is None else total + grad.detach()
        return None

    def called(self, module, args):
        import torch

        if module.training and not torch.is_grad_enabled() and isinstance(getattr(module, "running_mean", None),
                                                                           torch.Tensor):
            self.train_mode_no_grad += 1
        return None

    def summary(self) -> dict:
        return {"count": self.steps, "stale": self.stale, "first_stale": self.first_stale,
                "train_mode_no_grad": self.train_mode_no_grad}


class _QuietProgress:
    """Stands in for tqdm (also `tqdm.tqdm`, `tqdm.notebook.tqdm`, `trange`) while `train` runs: no output."""

    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable if iterable is not None else []
        self.n = 0

    def __iter__(self):
        for item in self.iterable:
            self.n += 1
            yield item

    def __len__(self):
        return len(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):  # set_postfix, set_description, update, refresh, close, write...
        return _ignore

    @classmethod
    def trange(cls, *args, **kwargs):
        return cls(range(*args))


_QuietProgress.tqdm = _QuietProgress  # `import tqdm; tqdm.tqdm(...)`
_QuietProgress.notebook = _QuietProgress  # `tqdm.notebook.tqdm(...)`
_QuietProgress.auto = _QuietProgress


def _ignore(*args, **kwargs):
    return None


class _TorchvisionCalls:
    """Records every Python function of `torchvision.models` called while active (a profile hook)."""

    def __init__(self):
        import torchvision.models

        self.folder = os.path.dirname(torchvision.models.__file__) + os.sep
        self.seen: set[str] = set()

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(self.folder):
            module = frame.f_globals.get("__name__", "torchvision.models")
            self.seen.add(f"{module}.{frame.f_code.co_qualname}")

    def __enter__(self):
        self.previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self.previous)
        return False


class Refused(Exception):
    """A forward the harness saw hang earlier: refused at once (`Worker.do_refuse`)."""


class Refusals:
    """A global forward hook that refuses the forward of the module types the harness saw hang."""

    instance: Refusals | None = None

    def __init__(self):
        import torch

        self.refused: dict[str, str] = {}
        torch.nn.modules.module.register_module_forward_pre_hook(self._hook)

    @classmethod
    def install(cls) -> Refusals:
        if cls.instance is None:
            cls.instance = cls()
        return cls.instance

    def _hook(self, module, args):
        why = self.refused.get(type_name(module))
        if why is not None:
            raise Refused(why)


class TorchLayers:
    """Which of torch's own layers (`torch.nn` classes whose forward is torch's) ran: a global forward hook."""

    def __init__(self):
        import torch

        self.seen: set[str] = set()
        torch.nn.modules.module.register_module_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        cls = type(module)
        forward = getattr(cls.forward, "__module__", "") or ""
        if forward.startswith("torch.nn."):
            self.seen.update(k.__name__ for k in cls.__mro__ if k.__module__.startswith("torch.nn.modules."))

    def take(self) -> list[str]:
        taken = sorted(self.seen)
        self.seen.clear()
        return taken


def _is_float_tensor(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.is_floating_point()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _op_recorder():
    """Records the name of every ATen operator run while it is active."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    return Recorder()


def _submission_traceback(error: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "under_test" not in f.filename]
    lines = traceback.format_list(frames[-6:])
    return "".join(lines) + f"{type(error).__name__}: {error}"


def _seed(seed: int) -> None:
    """torch.manual_seed for a worker, which sees no GPU (`zygote.base_env`): the CPU generator is the only one, and
    seeding it alone costs a microsecond instead of a tenth of a millisecond, on every call of a grade."""
    import torch

    torch.default_generator.manual_seed(seed)


def _send(fd: int, message: dict) -> None:
    send(fd, message, BULK["fd"], BULK["at"])


# The sandbox's bulk file, if it gave one, and where the room in it starts for the reply to the current request
# (`under_test.bulk`).
BULK: dict[str, int | None] = {"fd": None, "at": 0}


def _private_channel() -> tuple[int, int]:
    """Keep the protocol on private descriptors; the submission's stdin/stdout go nowhere."""
    request_fd, reply_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # prints from the submission land in the worker's log (stderr)
    sys.stdout = sys.stderr
    return request_fd, reply_fd


def _mapped_bytes() -> int:
    with open("/proc/self/status") as status:
        return 1024 * next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))


def _cap_memory(megabytes: int) -> None:
    """Allow `megabytes` of address space on top of what torch itself has mapped."""
    if megabytes <= 0:
        return
    limit = _mapped_bytes() + megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_parent(parent: int | None = None) -> None:
    """On Linux, the kernel kills this process when its parent goes away.

    The kernel only watches a parent alive when asked: one that ended a moment before (Ctrl-C while this process
    was being started) left it to another parent already. With `parent`, the pid it must have, this process then
    ends at once rather than run on unwatched.
    """
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    _die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m under_test.worker")
    parser.add_argument("impl")
    parser.add_argument("--aliases", default="{}")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB)
    parser.add_argument("--trusted", default="[]", help="building blocks to replace by trusted ones (JSON list)")
    parser.add_argument("--skip", default="{}", help="definitions not to run: {index: why} (JSON)")
    parser.add_argument("--bulk-fd", type=int, default=-1, help="the file for large replies' tensor bytes")
    parser.add_argument("--parent", type=int, default=None, help="the harness's pid (it dies with the harness)")
    options = parser.parse_args(argv)
    _die_with_parent(options.parent)
    BULK["fd"] = options.bulk_fd if options.bulk_fd >= 0 else None
    request_fd, reply_fd = _private_channel()

    import torch

    torch.set_num_threads(1)
    from . import isolation, packages
    from .course import install_offline_torchvision, submission_module
    from .loader import execute, extract

    lent = json.loads(options.trusted)
    if lent:
        from . import trusted
    install_offline_torchvision()
    from fixtures.standin import pretrained_resnet34 as pretrained  # kept: `fixtures` is out of reach from here on
    namespace = submission_module().__dict__
    aliases = json.loads(options.aliases)
    skip = {int(index): str(why) for index, why in json.loads(options.skip).items()}
    program = extract(options.impl)
    # From here on, the harness is out of reach: its packages, its files (`isolation`). Requests still name the
    # wire's classes (Handle), which the worker keeps for itself.
    own_modules = {name: module for name, module in sys.modules.items() if name.startswith("under_test")}

    def kept(module: str, name: str):  # the worker's own classes (Handle) come from the modules it kept
        return getattr(own_modules[module], name) if module in own_modules else None
    guard = isolation.lock_down(program.path, Path.cwd())
    _cap_memory(options.memory_mb)
    finder = packages.install(program.path, namespace)
    loading = time.perf_counter()
    report = execute(program, namespace, aliases, skip=skip,
                     progress=lambda index: _send(reply_fd, {"loading": index}))
    loading = time.perf_counter() - loading
    if lent:
        own = [sys.modules[name].__dict__ for name in (finder.loaded if finder else []) if name in sys.modules]
        trusted.lend(lent, [namespace, *own])
    worker = Worker(namespace, pretrained)
    layers = TorchLayers()
    gc.freeze()  # what loading made stays out of every later collection: `reset` costs milliseconds, not 0.1 s
    _send(reply_fd, {"ok": True, "value": {"failed": report.failed, "notes": report.notes},
                     "blocked": guard.take(), "seconds": loading})

    while True:
        try:
            size = HEADER.unpack(read_exact(request_fd, HEADER.size))[0]
            verb, args, kwargs, BULK["at"] = RequestUnpickler(read_exact(request_fd, size), find=kept).load()
        except EOFError:
            return
        started = time.perf_counter()
        try:
            value = getattr(worker, f"do_{verb}")(*args, **kwargs)
            reply = {"ok": True, "value": value}
        except BaseException as error:  # noqa: BLE001 - the submission may raise anything
            if isinstance(error, KeyboardInterrupt):
                raise
            message = str(error)[:2000]
            if isinstance(error, MemoryError) or "can't allocate memory" in message:
                message = f"the submission exceeded the sandbox's memory cap ({options.memory_mb} MB) {message}"
            reply = {"ok": False, "error": {"type": type_name(error), "message": message,
                                            "traceback": _submission_traceback(error)[-4000:]}}
        reply["seconds"] = time.perf_counter() - started  # in the submission's code (and the worker's own)
        reply["blocked"] = guard.take()
        reply["torch_layers"] = layers.take()
        try:
            _send(reply_fd, reply)
        except Exception as error:  # noqa: BLE001 - e.g. a result torch.save cannot write
            _send(reply_fd, {"ok": False, "error": {"type": type_name(error), "message": str(error)[:2000],
                                                    "traceback": ""}, "blocked": reply["blocked"]})


if __name__ == "__main__":
    main()
