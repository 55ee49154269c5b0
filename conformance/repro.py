"""A failure's reproduction, as plain torch code a learner pastes into their notebook.

The sandbox records every request a check makes into the submission (`Sandbox.calls`); the plugin starts the
record afresh at each Hypothesis example, so after a failure it holds the calls of the smallest failing input,
which Hypothesis runs last. `snippet` writes them out: the constructions with their arguments, the inputs with
their values, the calls, and where the run stopped. What the harness expected stays in the failure's message.
"""

from __future__ import annotations

# torch and the wire's types are imported where they are used: `conformance grade`, which starts before anything
# imports torch, reads the two constants below.

HEADING = "reproduce it in your notebook, after your definitions:"  # in a failure's output, above the snippet
RERUN = "reproduce: conformance check"  # the output's last line: the command that runs the check again
MAX_VALUES = 256  # tensors with more elements are described, not written out
# The requests that do something to the submission's objects (reading a state_dict changes nothing: left out).
TRANSLATED = {"construct", "call", "method", "getattr", "setattr", "grad", "fit", "run_train", "pretrained"}


class _Names:
    def __init__(self):
        self.handles: dict[int, str] = {}
        self.counts: dict[str, int] = {}

    def new(self, handle: object, stem: str) -> str:
        from under_test.wire import Handle

        self.counts[stem] = self.counts.get(stem, 0) + 1
        name = f"{stem}{self.counts[stem]}" if self.counts[stem] > 1 else stem
        if isinstance(handle, Handle):
            self.handles[handle.id] = name
        return name


def literal(value: object, names: _Names, lines: list[str]) -> str:
    """Python source for an argument; a large tensor is made on a line of its own first."""
    import torch

    from under_test.wire import Handle, Returned

    if isinstance(value, Handle):
        return names.handles.get(value.id, f"<a {value.type.rpartition('.')[2]} made earlier>")
    if isinstance(value, Returned):
        value = value.tensor
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        if value.numel() <= MAX_VALUES:
            data = value.detach().tolist()
            text = f"torch.tensor({data!r}, dtype=torch.{dtype})"
            if tuple(value.shape) != tuple(torch.tensor(data).shape):  # an empty dimension
                text = f"torch.zeros({tuple(value.shape)}, dtype=torch.{dtype})"
            if value.requires_grad:
                text = text[:-1] + ", requires_grad=True)"
            return text
        name = names.new(None, "x")
        lines.append(f"{name} = torch.randn({tuple(value.shape)}).to(torch.{dtype})  # the check's own values: mean "
                     f"{float(value.double().mean()):.3g}, std {float(value.double().std()):.3g} (too many to write)")
        return name
    if isinstance(value, tuple):
        inner = ", ".join(literal(v, names, lines) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v, names, lines) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {literal(v, names, lines)}" for k, v in value.items()) + "}"
    return repr(value)


def _arguments(args: tuple, kwargs: dict, names: _Names, lines: list[str]) -> str:
    parts = [literal(a, names, lines) for a in args]
    parts += [f"{k}={literal(v, names, lines)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _target(target: object, names: _Names) -> str:
    return target if isinstance(target, str) else literal(target, names, [])


def _assigned(result: object, names: _Names, stem: str, always: bool = False) -> str:
    """`name = ` for a call's result: a new name for a new object (or for any result when `always`), nothing for an
    object already named (a method that returns self) or a result nobody reads."""
    from under_test.wire import Handle

    if isinstance(result, Handle) and result.id in names.handles:
        return ""
    if isinstance(result, Handle) or always:
        return f"{names.new(result, stem)} = "
    return ""


def _run_train(kwargs: dict, result: object, names: _Names) -> str:
    """`train(args)` as the harness ran it: the args object with the short budget, the results named as the course
    names them."""
    from under_test.wire import Handle

    cls, overrides = kwargs.get("args_class"), dict(kwargs.get("overrides") or {})
    lines = ["# the harness's data: get_cifar / get_cifar_subset / get_mnist return its digits while train runs",
             f"args = {cls}()" if cls else "args = ...  # your train's args"]
    lines += [f"args.{key} = {value!r}" for key, value in overrides.items()]
    if isinstance(result, Handle):
        target = f"{names.new(result, 'model')} = "
    elif isinstance(result, tuple) and result:
        stems = ["loss_list", "accuracy_list"][:len(result) - 1] + ["value"] * len(result)
        target = ", ".join(names.new(v, "model") if isinstance(v, Handle) else stems[i]
                           for i, v in enumerate(result)) + " = "
    else:
        target = ""
    return "\n".join(lines + [f"{target}train(args)"])


def snippet(calls: list[tuple]) -> str:
    """The calls (verb, args, kwargs, result, raised) as a script; empty when there is nothing to show."""
    calls = [c for c in calls if c[0] in TRANSLATED]
    if not calls:
        return ""
    names, lines = _Names(), ["import torch", ""]
    for verb, args, kwargs, result, raised in calls:
        before = len(lines)
        if verb == "construct":
            name, arguments, keywords = args
            code = f"{names.new(result, 'model')} = {name}({_arguments(tuple(arguments), dict(keywords), names, lines)})"
            if kwargs.get("seed") is not None:
                lines.insert(before, f"torch.manual_seed({kwargs['seed']})")
        elif verb == "call":
            target, arguments, keywords = args
            call = f"{_target(target, names)}({_arguments(tuple(arguments), dict(keywords), names, lines)})"
            code = f"{_assigned(result, names, 'out', always=True)}{call}"
            if kwargs.get("no_grad"):
                code = f"with torch.no_grad():\n    {code}"
        elif verb == "method":
            handle, method, arguments, keywords = args
            call = f"{literal(handle, names, lines)}.{method}({_arguments(tuple(arguments), dict(keywords), names, lines)})"
            code = f"{_assigned(result, names, 'out')}{call}"
        elif verb == "getattr":
            code = f"{_assigned(result, names, 'value', always=True)}{literal(args[0], names, lines)}.{args[1]}"
        elif verb == "setattr":
            code = f"{literal(args[0], names, lines)}.{args[1]} = {literal(args[2], names, lines)}"
        elif verb == "grad":
            target, arguments, cotangent = args[:3]
            out = names.new(None, "out")
            code = (f"{out} = {_target(target, names)}({_arguments(tuple(arguments), {}, names, lines)})\n"
                    f"{out}.backward({literal(cotangent, names, lines)})")
        elif verb == "pretrained":
            code = f"{names.new(result, 'pretrained')} = torchvision.models.resnet34(weights=" \
                   "torchvision.models.ResNet34_Weights.IMAGENET1K_V1)  # the harness's stand-in weights"
            lines.insert(before, "import torchvision")
        elif verb == "fit":
            code = (f"# the harness trains {literal(args[0], names, lines)} the course's way: Adam(lr={kwargs.get('lr')})"
                    f" over the parameters that require grad, F.cross_entropy, model.train(), "
                    f"{kwargs.get('epochs')} epochs, batches of {kwargs.get('batch_size')}")
        else:  # run_train
            code = _run_train(kwargs, result, names)
        lines.append(code)
        if raised:
            lines.append(f"# ^ raised {raised}")
            break
    return "\n".join(lines).rstrip() + "\n"
