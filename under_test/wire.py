"""The data that crosses between the harness and the sandbox worker.

Harness -> worker: pickled requests (the harness is trusted; the worker may read them).
Worker -> harness: never a pickle. A reply is a JSON document (plain values, lists and
string-keyed objects) followed by the raw bytes of the tensors it holds; a tensor is the
object `{"$tensor": [dtype, shape, offset]}` in the document. The harness parses the JSON
(which can only build plain values), rebuilds each tensor from a dtype it knows, a shape
and a byte range it checks against the payload, and then checks every node's exact type.
Tensors come back tagged with the type the submission really returned, so a Tensor
subclass or a look-alike is visible.

    payload = JSON length (8 bytes, big-endian) | JSON (UTF-8) | tensor bytes (each at an offset
              that is a multiple of 64)

A reply goes on the worker's channel (a pipe) framed by its payload's length there, and the length
and offset of its tensor bytes in the sandbox's bulk file (0 and 0 for most replies): a reply whose
tensors take a megabyte or more (a ResNet34's state is 87 MB) leaves them in that file, which the
harness maps instead of reading them through the pipe a megabyte at a time (`under_test.bulk`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import select
import struct
import time
from dataclasses import dataclass

import torch

HEADER = struct.Struct(">Q")
FRAME = struct.Struct(">QQQ")  # a reply's length on the channel; its tensor bytes' length and offset in the bulk file
BULK_MIN = 1 << 20  # tensor bytes from which a reply sends them through the bulk file
IOV_MAX = 512  # buffers per writev (Linux allows 1024)
PLAIN = (str, int, float, bool, type(None))
TENSOR = "$tensor"
ALIGN = 64
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)}


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
        return {"kind": "tensor", "type": type_name(obj), "data": data, "grad": bool(obj.requires_grad)}
    if type(obj) in PLAIN:
        return obj
    if type(obj) in (list, tuple):
        return {"kind": type(obj).__name__, "items": [encode(o, keep) for o in obj]}
    if type(obj) is dict or type(obj).__name__ == "OrderedDict":
        return {"kind": "dict", "items": [[encode(k, keep), encode(v, keep)] for k, v in obj.items()]}
    return {"kind": "handle", "id": keep(obj), "type": type_name(obj)}


def dump(message: dict) -> bytes:
    """The reply as bytes: JSON for the structure, the tensors' raw bytes after it."""
    return b"".join(dump_parts(message))


def dump_parts(message: dict) -> list:
    """`dump(message)` in pieces, the tensors' bytes not copied (`write_all` sends them as they are)."""
    blobs = _Blobs()

    def plain(node: object) -> object:
        if isinstance(node, torch.Tensor):
            data = _dense(node)
            offset = blobs.add(memoryview(_flat(data).view(torch.uint8).numpy()) if data.numel() else b"")
            return {TENSOR: [_dtype_name(data), list(data.shape), offset]}
        if type(node) in (list, tuple):
            return [plain(item) for item in node]
        if type(node) is dict:
            return {str(key): plain(value) for key, value in node.items()}
        if type(node) in PLAIN:
            return node
        raise TypeError(f"a {type_name(node)} cannot be sent to the harness")

    return blobs.parts_of(json.dumps(plain(message), allow_nan=True).encode())


class _Blobs:
    """Raw bytes that follow a document in a payload, each at an offset (from the end of the document) that is a
    multiple of ALIGN: `HEADER (the document's length) | document | bytes`."""

    def __init__(self):
        self.parts: list = []
        self.size = 0

    def add(self, raw) -> int:
        offset = -(-self.size // ALIGN) * ALIGN
        if offset > self.size:
            self.parts.append(bytes(offset - self.size))
        self.parts.append(raw)
        self.size = offset + len(raw)
        return offset

    def parts_of(self, document: bytes) -> list:
        return [HEADER.pack(len(document)), document, *self.parts]

    def frame(self, document: bytes) -> bytes:
        return b"".join(self.parts_of(document))


def send(fd: int, message: dict, bulk: int | None = None, at: int = 0) -> None:
    """Write a reply on the channel `fd`; its tensor bytes in the file `bulk`, from `at`, when they are many (see
    `under_test.bulk`)."""
    header, document, *blobs = dump_parts(message)
    size = sum(len(memoryview(blob).cast("B")) for blob in blobs)
    if bulk is not None and size >= BULK_MIN:
        write_all(bulk, blobs, offset=at)
        write_all(fd, [FRAME.pack(len(header) + len(document), size, at), header, document])
    else:
        write_all(fd, [FRAME.pack(len(header) + len(document) + size, 0, 0), header, document, *blobs])


def write_all(fd: int, parts: list, *, offset: int | None = None) -> None:
    """Write `parts` (bytes-like, in order) to `fd` without joining them: a ResNet34's state is 87 MB. With an
    `offset`, `fd` is a file, written from there."""
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    views.reverse()
    while views:
        batch = views[-1:-IOV_MAX - 1:-1]
        if offset is None:
            written = os.writev(fd, batch)
        else:
            written = os.pwritev(fd, batch, offset)
            offset += written
        while written:
            if written >= len(views[-1]):
                written -= len(views.pop())
            else:
                views[-1], written = views[-1][written:], 0


def _split(payload: bytearray) -> tuple[memoryview, memoryview]:
    """A payload's document and the bytes after it."""
    if len(payload) < HEADER.size:
        raise WireError("a truncated reply from the worker")
    end = HEADER.size + HEADER.unpack_from(payload)[0]
    if end > len(payload):
        raise WireError("a truncated reply from the worker")
    view = memoryview(payload)
    return view[HEADER.size:end], view[end:]


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def read_exact(fd: int, size: int, deadline: float | None = None) -> bytearray:
    """`size` bytes from `fd`; with a `deadline` (time.monotonic), TimeoutError when they do not come by then."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        count = os.readv(fd, [view[done:]])
        if not count:
            raise EOFError
        done += count
    return buffer


def _flat(data: torch.Tensor) -> torch.Tensor:
    """The values in order, with unit stride (a contiguous tensor may still have a size-1 dimension of any stride)."""
    flat = data.reshape(-1)
    return flat if flat.stride(0) == 1 else torch.empty(flat.shape, dtype=flat.dtype).copy_(flat)


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """A plain, contiguous, CPU copy of a tensor's values, in a dtype the harness rebuilds."""
    data = tensor.detach()
    if type(data) is not torch.Tensor:
        data = data.as_subclass(torch.Tensor)
    if data.layout != torch.strided:
        data = data.to_dense()
    data = data.resolve_conj().resolve_neg().cpu().contiguous()
    if _dtype_name(data) not in DTYPES:
        raise TypeError(f"a tensor of dtype {data.dtype} cannot be sent to the harness")
    return data


# ---- requests (harness -> worker): a pickle whose tensors travel as raw bytes ----------------------------

class RequestPickler(pickle.Pickler):
    """Pickles a request; every CPU tensor's storage goes after the pickle as raw bytes (once per storage, so
    views keep sharing it), and the tensor as (storage, dtype, size, stride, offset): the worker rebuilds it
    exactly, strides included, without torch's per-storage serialisation."""

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.blobs = _Blobs()
        self.storages: dict[int, tuple[int, int]] = {}  # data_ptr -> (offset in the blobs, byte count)

    def persistent_id(self, obj):
        if not isinstance(obj, torch.Tensor) or type(obj) not in (torch.Tensor, torch.nn.Parameter) \
                or obj.layout != torch.strided or obj.device.type != "cpu" or obj.is_conj() or obj.is_neg() \
                or _dtype_name(obj) not in DTYPES or (obj.requires_grad and not obj.is_leaf):
            return None
        storage = obj.untyped_storage()
        if storage.data_ptr() not in self.storages:
            raw = memoryview(torch.empty(0, dtype=torch.uint8).set_(storage).numpy()) if storage.nbytes() else b""
            self.storages[storage.data_ptr()] = (self.blobs.add(raw), len(raw))
        offset, nbytes = self.storages[storage.data_ptr()]
        return ("tensor", offset, nbytes, _dtype_name(obj), tuple(obj.shape), obj.stride(), obj.storage_offset(),
                bool(obj.requires_grad), type(obj) is torch.nn.Parameter)


def dump_request(request: object) -> bytes:
    buffer = io.BytesIO()
    pickler = RequestPickler(buffer)
    pickler.dump(request)
    return pickler.blobs.frame(buffer.getvalue())


class RequestUnpickler(pickle.Unpickler):
    """The worker's side of `RequestPickler` (the request comes from the trusted harness)."""

    def __init__(self, payload: bytearray, find=None):
        document, self.data = _split(payload)
        super().__init__(io.BytesIO(document))
        self.storages: dict[int, torch.UntypedStorage] = {}
        self.find = find

    def find_class(self, module: str, name: str):
        found = self.find(module, name) if self.find else None
        return found if found is not None else super().find_class(module, name)

    def persistent_load(self, pid):
        _, offset, nbytes, dtype, size, stride, storage_offset, requires_grad, parameter = pid
        if offset not in self.storages:
            raw = torch.frombuffer(self.data, dtype=torch.uint8, count=nbytes, offset=offset) if nbytes \
                else torch.empty(0, dtype=torch.uint8)
            self.storages[offset] = raw.untyped_storage()
        tensor = torch.empty(0, dtype=DTYPES[dtype]).set_(self.storages[offset], storage_offset, size, stride)
        if parameter:
            return torch.nn.Parameter(tensor, requires_grad=requires_grad)
        return tensor.requires_grad_(requires_grad)


# ---- harness side ------------------------------------------------------------------


def load(payload: bytes | bytearray, bulk: memoryview | None = None) -> dict:
    """The worker's reply, rebuilt from plain JSON and checked tensor records; anything else is a WireError.
    `bulk`: its tensor bytes, when they came through the bulk file (`under_test.bulk`)."""
    buffer = payload if isinstance(payload, bytearray) else bytearray(payload)
    document, view = _split(buffer)
    if bulk is not None:
        if len(view):
            raise WireError("a reply with tensor bytes both on the channel and in the bulk file")
        view = memoryview(bulk)
    try:
        document = json.loads(bytes(document).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise WireError(f"unreadable reply from the worker: {error}") from error

    def rebuild(node: object) -> object:
        if type(node) is list:
            return [rebuild(item) for item in node]
        if type(node) is dict:
            if TENSOR in node:
                return _tensor(node, view)
            return {key: rebuild(value) for key, value in node.items()}
        return node

    try:
        message = rebuild(document)
    except RecursionError as error:
        raise WireError("a reply nested too deeply") from error
    _check_plain(message)
    if type(message) is not dict:
        raise WireError("the worker's reply is not a dict")
    return message


def _tensor(record: dict, data: memoryview) -> torch.Tensor:
    spec = record.get(TENSOR)
    if len(record) != 1 or type(spec) is not list or len(spec) != 3:
        raise WireError("a malformed tensor record")
    dtype_name, shape, offset = spec
    dtype = DTYPES.get(dtype_name) if type(dtype_name) is str else None
    if dtype is None:
        raise WireError(f"a tensor of unknown dtype {dtype_name!r}")
    if type(shape) is not list or not all(type(n) is int and 0 <= n < 2**40 for n in shape) or len(shape) > 32 \
            or type(offset) is not int or offset < 0:
        raise WireError("a tensor record with an invalid shape or offset")
    numel = 1
    for n in shape:
        numel *= n
    nbytes = numel * dtype.itemsize
    if offset + nbytes > len(data):
        raise WireError("a tensor record pointing outside the reply")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype, count=numel, offset=offset).reshape(shape)


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
