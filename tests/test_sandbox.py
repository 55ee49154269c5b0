"""The sandbox: a probe that hangs, crashes, eats memory or exits costs one check, not the run."""

from __future__ import annotations

import gc
import io
import json
import os

import pytest
import torch

from under_test import wire, zygote
from under_test.bulk import Bulk
from under_test.sandbox import Sandbox, SubmissionRaised, WorkerDied, _seconds

HOSTILE = """
import os, sys
import torch as t
print("noise on stdout at definition time")
class Sub(t.Tensor):
    def __eq__(self, other):
        return True
def ok(x):
    print("noise on stdout during a call")
    return x + 1
def hang(x):
    while True:
        pass
def segfault(x):
    import ctypes
    ctypes.string_at(0)
def exhaust(x):
    hoard = []
    while True:
        hoard.append(bytearray(256 * 1024 * 1024))
def hard_exit(x):
    os._exit(7)
def raises(x):
    raise ValueError("learner bug")
def subclass(x):
    return x.as_subclass(Sub)
def returns_module(x):
    return t.nn.Linear(2, 2)
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    path = tmp_path_factory.mktemp("sub") / "hostile.py"
    path.write_text(HOSTILE)
    with Sandbox(path, timeout=3, memory_mb=512) as sandbox:
        yield sandbox


@pytest.mark.parametrize("probe, cause", [
    ("hang", "did not answer within 3 s"),
    ("segfault", "segmentation fault"),
    ("hard_exit", "exited with status 7"),
])
def test_a_dying_probe_fails_only_its_check(box, probe, cause):
    box.begin_check()
    with pytest.raises(WorkerDied, match=cause):
        box.call(probe, torch.zeros(1))
    with pytest.raises(WorkerDied):  # the rest of this check fails at once, without another hang
        box.call("ok", torch.zeros(1))
    box.begin_check()  # the next check gets a fresh worker
    assert torch.equal(box.call("ok", torch.zeros(2)).tensor, torch.ones(2))


def test_memory_is_capped(box):
    box.begin_check()
    with pytest.raises((SubmissionRaised, WorkerDied), match="memory cap"):
        box.call("exhaust", torch.zeros(1))
    box.begin_check()
    assert box.call("ok", torch.zeros(1)).tensor.item() == 1.0


def test_prints_do_not_corrupt_the_channel(box):
    box.begin_check()
    for _ in range(3):
        assert box.call("ok", torch.zeros(1)).tensor.item() == 1.0


def test_exceptions_come_back_with_the_learners_traceback(box):
    box.begin_check()
    with pytest.raises(SubmissionRaised) as error:
        box.call("raises", torch.zeros(1))
    assert error.value.type_name == "builtins.ValueError"
    assert "hostile.py" in error.value.traceback and "learner bug" in error.value.message


def test_tensor_subclasses_are_visible_and_never_reach_the_harness(box):
    box.begin_check()
    value = box.call("subclass", torch.zeros(2))
    assert value.type.endswith("Sub") and not value.is_plain_tensor
    assert type(value.tensor) is torch.Tensor


def test_objects_stay_in_the_worker(box):
    box.begin_check()
    handle = box.call("returns_module", torch.zeros(1))
    assert isinstance(handle, wire.Handle) and handle.type == "torch.nn.modules.linear.Linear"
    out = box.call(handle, torch.ones(3, 2))
    assert out.tensor.shape == (3, 2)


def test_the_harness_never_unpickles_objects():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buffer = io.BytesIO()
    torch.save({"ok": True, "value": Evil()}, buffer)  # a pickle is not a reply, whatever it holds
    with pytest.raises(wire.WireError):
        wire.load(buffer.getvalue())
    with pytest.raises(TypeError, match="Parameter|cannot be sent"):
        wire.dump({"ok": True, "value": Evil()})


def reply(document: dict, data: bytes = b"") -> bytes:
    text = json.dumps(document).encode()
    return wire.HEADER.pack(len(text)) + text + data


@pytest.mark.parametrize("record, why", [
    ({"$tensor": ["object", [1], 0]}, "unknown dtype"),
    ({"$tensor": ["float32", [4], 0]}, "outside the reply"),
    ({"$tensor": ["float32", [-1], 0]}, "invalid shape"),
    ({"$tensor": ["float32", [1], 0], "more": 1}, "malformed"),
    ({"$tensor": "float32"}, "malformed"),
])
def test_tensor_records_are_checked_against_the_reply(record, why):
    with pytest.raises(wire.WireError, match=why):
        wire.load(reply({"ok": True, "value": record}, bytes(8)))


def test_replies_round_trip_values_and_tensors():
    values = [torch.randn(2, 3), torch.tensor(True), torch.zeros(0, 3), torch.ones(2, dtype=torch.bfloat16),
              torch.arange(5)[::2], torch.tensor(7), torch.arange(4.0)[::2][:1]]  # shape (1,), stride (2,)
    message = wire.load(wire.dump({"ok": True, "value": [*values, 1.5, float("inf"), None, "text", [1, (2,)]]}))
    got = message["value"]
    for sent, back in zip(values, got):
        assert type(back) is torch.Tensor and back.dtype == sent.dtype and torch.equal(back, sent)
    assert got[len(values):] == [1.5, float("inf"), None, "text", [1, [2]]]
    with pytest.raises(wire.WireError, match="truncated"):
        wire.load(wire.dump({"ok": True})[:-3])


def test_missing_submission_is_a_clear_worker_error(tmp_path):
    with pytest.raises(WorkerDied, match="no such file"):
        Sandbox(tmp_path / "absent.py").start()


def test_the_worker_hides_gpus_so_the_machine_does_not_change_the_grade(write):
    path = write("gpu.py", """
        import os
        def where():
            import torch
            return [torch.cuda.is_available(), os.environ.get("CUDA_VISIBLE_DEVICES")]
    """)
    with Sandbox(path) as box:
        assert box.call("where") == [False, ""]


@pytest.mark.parametrize("claimed, counted", [(0.5, 0.5), (9.0, 2.0), (-1.0, 0.0), (float("nan"), 0.0),
                                              ("3", 0.0), (None, 0.0)])
def test_the_time_a_worker_claims_is_kept_within_the_round_trip(claimed, counted):
    assert _seconds({"seconds": claimed}, most=2.0) == counted


def test_a_bulk_stretch_is_mapped_in_place_kept_while_used_and_the_file_cannot_shrink():
    bulk = Bulk()
    data = torch.arange(1 << 19, dtype=torch.float32)  # 2 MB, as a large reply's tensor bytes
    os.pwrite(bulk.fd, data.numpy().tobytes(), 0)
    tensor = torch.frombuffer(bulk.take(0, data.numel() * 4), dtype=torch.float32)
    assert torch.equal(tensor, data)
    assert bulk.free_from() == data.numel() * 4  # the next reply goes above it
    with pytest.raises(wire.WireError, match="had room"):
        bulk.take(0, 64)  # a reply written over a stretch in use
    with pytest.raises(wire.WireError, match="had room"):
        bulk.take(bulk.free_from(), 1 << 30)  # past the file's end
    with pytest.raises(OSError):
        os.ftruncate(bulk.fd, 0)  # sealed: nothing can shrink the file under the harness's mapping
    os.ftruncate(bulk.fd, 1 << 50)  # a worker may grow it (sparse) and announce what no machine holds
    with pytest.raises(wire.WireError, match="more than this machine holds"):
        bulk.take(bulk.free_from(), (1 << 50) - bulk.free_from())
    tensor[0] = -1.0  # the harness's own copy of the page
    assert os.pread(bulk.fd, 4, 0) == data[:1].numpy().tobytes()
    del tensor
    gc.collect()
    assert bulk.free_from() == 0  # given up with its last tensor: the next reply reuses its pages
    bulk.close()


def test_large_replies_cross_through_the_bulk_file_and_reuse_its_room(tmp_path):
    path = tmp_path / "big.py"
    path.write_text("import torch\ndef big(n):\n    return torch.arange(n, dtype=torch.float64)\n")
    n = 1 << 18  # 2 MB: past wire.BULK_MIN
    with Sandbox(path) as box:
        first = box.call("big", n).tensor
        assert torch.equal(first, torch.arange(n, dtype=torch.float64))
        room = box._bulk.free_from()
        assert room >= n * 8  # held: the next large reply goes above it
        second = box.call("big", 2 * n).tensor
        assert torch.equal(second, torch.arange(2 * n, dtype=torch.float64))
        assert box._bulk.free_from() >= room + 2 * n * 8
        assert box.call("big", 3).tensor.tolist() == [0.0, 1.0, 2.0]  # small: through the pipe
        del first, second
        gc.collect()
        assert box._bulk.free_from() == 0
        assert torch.equal(box.call("big", n).tensor, torch.arange(n, dtype=torch.float64))


@pytest.mark.parametrize("cloned", [True, False])
def test_without_a_bulk_file_large_replies_cross_the_pipe(tmp_path, monkeypatch, cloned):
    """Where the system gives no memfd (or no sealing), a sandbox works as before, through its pipes, whether its
    worker is cloned by the zygote or started from scratch."""
    def unavailable():
        raise OSError("memfd_create: function not implemented")

    monkeypatch.setattr("under_test.sandbox.Bulk", unavailable)
    monkeypatch.setenv(zygote.DISABLE_ENV, "1" if cloned else "0")
    path = tmp_path / "big.py"
    path.write_text("import torch\ndef big(n):\n    return torch.arange(n, dtype=torch.float64)\n")
    with Sandbox(path) as box:
        assert box._bulk is None and isinstance(box.process, zygote.Cloned) == cloned
        assert torch.equal(box.call("big", 1 << 18).tensor, torch.arange(1 << 18, dtype=torch.float64))
