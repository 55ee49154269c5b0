"""Small helpers the checks share to drive a submission's modules through the sandbox, and the oracle's side of a
probe (`oracle_grad`, what `Sandbox.grad` computes, computed in the harness)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from under_test.sandbox import Sandbox, SubmissionRaised
from under_test.wire import DTYPES, Handle, WireError

from .compare import PARAMETER_TYPES, fail, require_plain, tensor_of


@dataclass(frozen=True)
class Entry:
    """One state_dict entry of a submission's module."""

    name: str
    kind: str  # "parameter", "buffer" or "other"
    tensor: torch.Tensor
    requires_grad: bool


def state_entries(sandbox: Sandbox, handle: Handle, what: str) -> list[Entry]:
    """The module's state_dict, in order, each entry checked to be a plain tensor."""
    state = sandbox.state(handle)
    return [Entry(name, kind, tensor_of(value, f"{what}.state_dict()[{name!r}]", PARAMETER_TYPES), value.requires_grad)
            for name, kind, value in state["entries"]]


def state_layout(sandbox: Sandbox, handle: Handle, what: str) -> list[Entry]:
    """The module's state_dict without its values: each entry's tensor is a meta tensor of its dtype and shape
    (for checks of names, kinds, shapes and order, which then need not move the values)."""
    state = sandbox.state(handle, values=False)
    entries = []
    for name, kind, layout in state["entries"]:
        if not isinstance(layout, dict):  # not a tensor: reported as state_entries reports it
            tensor_of(layout, f"{what}.state_dict()[{name!r}]", PARAMETER_TYPES)
            raise WireError(f"state: a malformed layout for {name!r}")
        dtype, shape = DTYPES.get(layout.get("dtype")), layout.get("shape")
        require_plain(str(layout.get("type")), f"{what}.state_dict()[{name!r}]", PARAMETER_TYPES)
        if dtype is None or not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise WireError(f"state: a malformed layout for {name!r}")
        entries.append(Entry(name, kind, torch.empty(shape, dtype=dtype, device="meta"),
                             layout.get("requires_grad") is True))
    return entries


def state_tensors(sandbox: Sandbox, handle: Handle, what: str) -> dict[str, torch.Tensor]:
    return {e.name: e.tensor for e in state_entries(sandbox, handle, what)}


def load_state(sandbox: Sandbox, handle: Handle, state: dict[str, torch.Tensor], what: str) -> None:
    """Load these entries (a subset is fine) with `module.load_state_dict(state, strict=False)`."""
    have = [e.name for e in state_entries(sandbox, handle, what)]
    unknown = sorted(set(state) - set(have))
    if unknown:
        fail(f"{what} has no state_dict entries {unknown}; its state_dict has {have}")
    try:
        sandbox.method(handle, "load_state_dict", state, strict=False)
    except SubmissionRaised as error:
        fail(f"{what}.load_state_dict could not load entries {sorted(state)}: {error.type_name}: {error.message}")


def set_mode(sandbox: Sandbox, handle: Handle, train: bool) -> None:
    sandbox.method(handle, "train", train)


def set_dtype(sandbox: Sandbox, handle: Handle, dtype: str | torch.dtype) -> None:
    """The module in float64 (`module.double()`, as a learner would call it) when `dtype` is float64; float32, the
    dtype every module is built in, is left as it is."""
    if dtype in ("float64", torch.float64):
        sandbox.method(handle, "double")


def oracle_grad(forward, x: torch.Tensor, cotangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The oracle's side of `Sandbox.grad`: forward(x), and the gradient of sum(forward(x) * cotangent) w.r.t. x
    (None when the output's shape is not the cotangent's). The parameters forward uses get their .grad as well."""
    leaf = x.detach().clone().requires_grad_(True)
    out = forward(leaf)
    if out.shape != cotangent.shape:
        return out.detach(), None
    (out * cotangent).sum().backward()
    return out.detach(), leaf.grad


def parameter_count(entries: list[Entry]) -> int:
    return sum(e.tensor.numel() for e in entries if e.kind == "parameter")


def describe_state(entries: list[Entry]) -> str:
    return ", ".join(f"{e.name} ({e.kind}, {tuple(e.tensor.shape)})" for e in entries)


# ---- repr: it must not raise; what it shows is the learner's choice (an advisory at most) ----

PRINT_WHY = ("print(model) calls extra_repr on every submodule: extra_repr must return a string built from "
             "attributes the module really has (check the attribute names it reads)")


def printable(sandbox: Sandbox, handle: Handle, what: str) -> str:
    """repr(module), or a failure naming the error: print(model) must never crash."""
    try:
        return sandbox.repr(handle)
    except SubmissionRaised as error:
        fail(f"repr({what}) raised {error.type_name}: {error.message}\n{error.traceback}\n{PRINT_WHY}")
    raise AssertionError  # unreachable


def shown_numbers(text: str) -> list[str]:
    """The whole numbers shown inside the outer parentheses of a repr."""
    return re.findall(r"(?<![\w.])\d+(?![\w.])", text.partition("(")[2])


def advise_on_repr(advise, text: str, what: str, arguments: dict[str, int], fields: tuple[str, ...] = ()) -> None:
    """An advisory, never a failure, when the repr does not show the constructor's arguments.

    `arguments` are the whole-number arguments looked for; `fields` what the suggested extra_repr
    shows (default: the arguments). The text names the class and the arguments, never one example's
    values, so that a class gets one advisory however many examples show it.
    """
    shown = shown_numbers(text)
    absent = [name for name, value in arguments.items() if str(value) not in shown]
    if absent:
        cls = what.partition("(")[0]
        example = ", ".join(f"{name}={{self.{name}}}" for name in fields or arguments)
        advise(f"{cls}'s repr does not show {', '.join(absent)}; an extra_repr returning (not printing) f\"{example}\" makes print(model) "
               "informative")
