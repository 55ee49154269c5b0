"""The data that crosses between the harness and the sandbox worker.

Harness -> worker: pickled requests (the harness is trusted; the worker may read them).
Worker -> harness: `torch.save` bytes read back with `torch.load(weights_only=True)`,
which rebuilds only tensors and plain containers, never arbitrary objects; the
harness then checks every node's exact type. Tensors come back tagged with the type
the submission really returned, so a Tensor subclass or a look-alike is visible.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import torch

HEADER = struct.Struct(">Q")
PLAIN = (str, int, float, bool, type(None))


class WireError(Exception):
    """The worker sent something that is not plain data."""


@dataclass(frozen=True)
class Handle:
    """A reference to an object that lives in the worker (a module, a returned object)."""

    id: int
    type: str


@dataclass(frozen=True)
class Returned:
    """A tensor as the submission returned it: its real type and a plain copy of its data."""

    type: str
    tensor: torch.Tensor
    requires_grad: bool

    @property
    def is_plain_tensor(self) -> bool:
        return self.type == "torch.Tensor"


def type_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


# ---- worker side -------------------------------------------------------------------


def encode(obj: object, keep) -> object:
    """Turn a submission's result into plain data; `keep(obj)` stores an object, giving an id."""
    if isinstance(obj, torch.Tensor):
        data = obj.detach()
        if type(data) is not torch.Tensor:
            data = data.as_subclass(torch.Tensor)
        return {"kind": "tensor", "type": type_name(obj), "data": data.clone(), "grad": bool(obj.requires_grad)}
    if type(obj) in PLAIN:
        return obj
    if type(obj) in (list, tuple):
        return {"kind": type(obj).__name__, "items": [encode(o, keep) for o in obj]}
    if type(obj) is dict or type(obj).__name__ == "OrderedDict":
        return {"kind": "dict", "items": [[encode(k, keep), encode(v, keep)] for k, v in obj.items()]}
    return {"kind": "handle", "id": keep(obj), "type": type_name(obj)}


def dump(message: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(message, buffer)
    return buffer.getvalue()


# ---- harness side ------------------------------------------------------------------


def load(payload: bytes) -> dict:
    try:
        message = torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # noqa: BLE001 - anything unreadable is the worker's fault
        raise WireError(f"unreadable reply from the worker: {error}") from error
    _check_plain(message)
    if type(message) is not dict:
        raise WireError("the worker's reply is not a dict")
    return message


def _check_plain(node: object) -> None:
    kind = type(node)
    if kind in PLAIN or kind is torch.Tensor:
        return
    if kind in (list, tuple):
        for item in node:  # type: ignore[attr-defined]
            _check_plain(item)
        return
    if kind is dict:
        for key, value in node.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise WireError(f"non-string key of type {type(key).__name__} in the worker's reply")
            _check_plain(value)
        return
    raise WireError(f"the worker's reply holds a {kind.__module__}.{kind.__qualname__}")


def decode(node: object) -> object:
    """Plain data from `load` back into values, `Returned` tensors and `Handle`s."""
    if type(node) in (list, tuple):
        return type(node)(decode(item) for item in node)
    if type(node) is not dict:
        return node
    kind = node.get("kind")
    if kind == "tensor":
        data = node["data"]
        if type(data) is not torch.Tensor:
            raise WireError("a tensor record without a tensor")
        return Returned(str(node["type"]), data, bool(node["grad"]))
    if kind == "list":
        return [decode(item) for item in node["items"]]
    if kind == "tuple":
        return tuple(decode(item) for item in node["items"])
    if kind == "dict":
        return {decode(k): decode(v) for k, v in node["items"]}
    if kind == "handle":
        return Handle(int(node["id"]), str(node["type"]))
    if kind is None:  # the worker's own reply structure
        return {key: decode(value) for key, value in node.items()}
    raise WireError(f"unknown record kind {kind!r}")
