"""ResNet34 fidelity: the stored logits, the stand-in weights and the real-weights option.

The snapshots in fixtures/logits/ are written by test_reference_resnet34_logits
(``--snapshot-update``, one process) and checked against torchvision's own resnet34,
so that they stand for torchvision's network, not only for our reference.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reference
from fixtures import images, snapshots, standin
from fixtures.images import PHOTOS, SIZES, photo_batch
from fixtures.snapshots import (
    LOGITS_ATOL,
    LOGITS_RTOL,
    LogitsSnapshotExtension,
    assert_logits_match,
    load_logits,
    logits_differences,
    snapshot_name,
)

ROOT = Path(__file__).resolve().parent.parent

# The extension stores snapshots by name in fixtures/logits/, away from the test
# file, on purpose; syrupy warns that it cannot relate such files to the test.
pytestmark = pytest.mark.filterwarnings(r"ignore:(?s)\s*Can not relate snapshot:UserWarning")


@pytest.fixture(scope="module")
def standin_models():
    """(our reference ResNet34, torchvision's resnet34), both holding the stand-in, in eval mode."""
    with pytest.MonkeyPatch.context() as patch:
        # The snapshots are the stand-in's logits, whatever weights the run asks for.
        patch.delenv(standin.PRETRAINED_ENV, raising=False)
        torchvision_model = standin.pretrained_resnet34().eval()
        ours = reference.copy_weights(reference.ResNet34(), standin.pretrained_resnet34()).eval()
    return ours, torchvision_model


def logits_of(model: torch.nn.Module, size: int) -> torch.Tensor:
    with torch.no_grad():
        return model(photo_batch(size))


# ---- (a), (b): the stored logits ---------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_reference_resnet34_logits(size, standin_models, snapshot):
    ours, _ = standin_models
    assert not ours.training
    logits = logits_of(ours, size)
    assert logits.shape == (len(PHOTOS), 1000) and logits.dtype == torch.float32
    assert logits == snapshot.use_extension(LogitsSnapshotExtension)(name=snapshot_name(size))


@pytest.mark.parametrize("size", SIZES)
def test_torchvision_resnet34_reproduces_the_stored_logits(size, standin_models):
    _, torchvision_model = standin_models
    assert_logits_match(logits_of(torchvision_model, size), load_logits(size), "torchvision's logits")


@pytest.mark.parametrize("size", SIZES)
def test_stored_logits_are_spread_and_tell_the_photos_apart(size):
    logits = load_logits(size)
    assert logits.shape == (len(PHOTOS), 1000) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert (logits.std(dim=1) > 1.5).all(), logits.std(dim=1)
    top1 = logits.argmax(dim=1).tolist()
    assert len(set(top1)) == len(PHOTOS), f"photos share a top-1 class: {top1}"
    top5 = [frozenset(row) for row in logits.topk(5, dim=1).indices.tolist()]
    assert len(set(top5)) == len(PHOTOS)


def test_stored_files_are_small_float32_npy():
    stored = sorted(path.name for path in (ROOT / "fixtures" / "logits").iterdir())
    assert stored == sorted(f"{snapshot_name(size)}.npy" for size in SIZES)
    for size in SIZES:
        path = snapshots.snapshot_path(size)
        assert path.parent == ROOT / "fixtures" / "logits"
        assert path.stat().st_size < 13_000
        array = np.load(path, allow_pickle=False)
        assert array.dtype == np.float32 and array.shape == (len(PHOTOS), 1000)


def test_tolerance_catches_small_bugs_and_not_rounding():
    stored = load_logits(224)
    # float32 summation-order noise, well above what was measured (about 2e-5)
    noise = stored + 2e-4 * torch.sign(torch.randn(stored.shape, generator=torch.Generator().manual_seed(0)))
    assert logits_differences(noise, stored) == []
    # the smallest real bug measured (the fc bias dropped) moves logits by up to 0.05
    assert logits_differences(stored + 0.05, stored)
    assert logits_differences(stored.double().mul(1 + 5 * LOGITS_RTOL).add(LOGITS_ATOL), stored)
    nan = stored.clone()
    nan[1, 7] = float("nan")
    assert any("not finite" in p for p in logits_differences(nan, stored))
    assert logits_differences(stored[:2], stored) == ["shape (2, 1000) instead of (3, 1000)"]
    # a changed top-1 is reported even within tolerance
    tie = stored.clone()
    row = tie[0]
    best = int(row.argmax())
    second = int(row.topk(2).indices[1])
    row[second] = row[best] + LOGITS_ATOL / 4
    assert any("top-1" in p for p in logits_differences(tie, stored))


def test_extension_stores_numbers_by_name():
    extension = LogitsSnapshotExtension()
    data = extension.serialize(load_logits(64))
    assert np.array_equal(np.load(io.BytesIO(data)), load_logits(64).numpy())
    assert extension.matches(serialized_data=data, snapshot_data=snapshots.snapshot_path(64).read_bytes())
    assert not extension.matches(serialized_data=data, snapshot_data=snapshots.snapshot_path(224).read_bytes())
    assert extension.get_snapshot_name(test_location=None, index="resnet34_logits_64") == "resnet34_logits_64"
    with pytest.raises(ValueError, match="name"):
        extension.get_snapshot_name(test_location=None, index=0)
    assert extension.dirname(test_location=None) == str(ROOT / "fixtures" / "logits")
    lines = list(extension.diff_lines(extension.serialize(load_logits(64) + 1), data))
    assert any("largest difference is 1" in line for line in lines)


# ---- (c): the stand-in is bit-identical everywhere ---------------------------------------


def test_standin_sha256_is_stable_in_process():
    cached = standin.state_dict_sha256(standin.standin_state_dict())
    regenerated = standin.state_dict_sha256(standin._generate(standin.SEED))
    assert cached == regenerated == standin.STANDIN_SHA256


def test_the_standin_cache_is_used_only_when_its_hash_is_right(tmp_path, monkeypatch):
    monkeypatch.setenv(standin.CACHE_ENV, str(tmp_path / "standin.pt"))
    assert standin._read_cache() is None  # absent
    path = standin.ensure_cache()
    assert path == tmp_path / "standin.pt" and path.is_file()
    assert standin.state_dict_sha256(standin._read_cache()) == standin.STANDIN_SHA256
    state = standin._generate(standin.SEED)
    state["fc.bias"][0] += 1.0  # a tampered (or stale) file is ignored, and replaced by ensure_cache
    torch.save(state, path)
    assert standin._read_cache() is None
    standin.ensure_cache()
    assert standin.state_dict_sha256(standin._read_cache()) == standin.STANDIN_SHA256


def test_standin_sha256_is_stable_in_a_fresh_process():
    code = "from fixtures import standin; print(standin.state_dict_sha256(standin.standin_state_dict()))"
    env = {k: v for k, v in os.environ.items() if k != standin.PRETRAINED_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == standin.STANDIN_SHA256


def test_standin_buffers_catch_swaps():
    state = standin.standin_state_dict()
    bn = [key.rpartition(".")[0] for key in state if key.endswith("running_var")]
    assert len(bn) == 36
    counts = set()
    for owner in bn:
        var, mean = state[f"{owner}.running_var"], state[f"{owner}.running_mean"]
        assert (var >= 0.5).all() and (var < 2.0).all() and var.std() > 0.3
        assert (mean != 0).all() and mean.abs().max() <= 0.1
        assert not torch.equal(state[f"{owner}.weight"], state[f"{owner}.bias"])
        counts.add(int(state[f"{owner}.num_batches_tracked"]))
    assert len(counts) == 36 and min(counts) > 0
    for key, value in state.items():
        if value.ndim == 4 and key != "conv1.weight":  # zero-mean filters, exactly up to float32 rounding
            assert value.double().sum(dim=(1, 2, 3)).abs().max() < 1e-5, key


def test_standin_copies_are_independent():
    first = standin.standin_state_dict()
    first["fc.bias"].add_(1.0)
    assert standin.state_dict_sha256(standin.standin_state_dict()) == standin.STANDIN_SHA256


# ---- the photos ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_photo_batch(size):
    batch = photo_batch(size)
    assert batch.shape == (3, 3, size, size) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    # ImageNet-normalized photographs: channel values between (0-mean)/std and (1-mean)/std
    mean = torch.tensor(images.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(images.IMAGENET_STD).view(1, 3, 1, 1)
    assert (batch >= (0 - mean) / std - 1e-4).all() and (batch <= (1 - mean) / std + 1e-4).all()
    assert not torch.equal(batch[0], batch[1]) and not torch.equal(batch[1], batch[2])
    batch.zero_()
    assert not torch.equal(photo_batch(size), batch)  # callers get copies


# ---- (d): --snapshot-update refuses to run under xdist ----------------------------------


def test_snapshot_update_refuses_xdist():
    before = {size: snapshots.snapshot_path(size).read_bytes() for size in SIZES}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_snapshots.py", "--snapshot-update", "-n", "2", "--co", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "--snapshot-update cannot run under pytest-xdist" in done.stderr
    assert before == {size: snapshots.snapshot_path(size).read_bytes() for size in SIZES}


class _Config:
    def __init__(self, worker: bool = False, **options):
        self.options = options
        if worker:
            self.workerinput = {"workerid": "gw0"}

    def getoption(self, name, default=None):
        return self.options.get(name, default)


@pytest.mark.parametrize(
    ("config", "refused"),
    [
        (_Config(update_snapshots=True, numprocesses=2), True),
        (_Config(update_snapshots=True, numprocesses="auto"), True),
        (_Config(update_snapshots=True, worker=True), True),
        (_Config(update_snapshots=True, tx=["popen"]), True),
        (_Config(update_snapshots=True, numprocesses=0), False),
        (_Config(update_snapshots=True), False),  # -p no:xdist: the option does not exist
        (_Config(update_snapshots=False, numprocesses=2), False),
    ],
)
def test_snapshot_update_under_xdist_rule(config, refused):
    from conftest import snapshot_update_under_xdist

    assert snapshot_update_under_xdist(config) is refused


# ---- (e): the real-weights option ---------------------------------------------------------


@pytest.fixture
def empty_torch_hub(tmp_path, monkeypatch):
    """torch.hub.get_dir() is an empty temporary directory for the test, then restored."""
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored at teardown
    torch.hub.set_dir(str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def test_source_is_the_standin_by_default(monkeypatch):
    monkeypatch.delenv(standin.PRETRAINED_ENV, raising=False)
    assert standin.pretrained_source() == "standin"
    monkeypatch.setenv(standin.PRETRAINED_ENV, "standin")
    assert standin.pretrained_source() == "standin"
    monkeypatch.setenv(standin.PRETRAINED_ENV, "imagenet")
    with pytest.raises(ValueError, match="torch-cache"):
        standin.pretrained_source()


def test_real_weights_missing_is_a_clear_error(empty_torch_hub, monkeypatch):
    monkeypatch.setenv(standin.PRETRAINED_ENV, "torch-cache")
    assert standin.pretrained_source() == "torch-cache"
    expected_path = empty_torch_hub / "checkpoints" / "resnet34-b627a593.pth"
    assert standin.real_weights_path() == expected_path
    with pytest.raises(FileNotFoundError) as raised:
        standin.pretrained_resnet34()
    message = str(raised.value)
    assert str(expected_path) in message and "never downloads" in message
    with pytest.raises(FileNotFoundError, match="resnet34-b627a593.pth"):
        snapshots.expected_logits(64)
    assert not (empty_torch_hub / "checkpoints").exists()


def test_real_weights_of_the_wrong_file_are_refused(empty_torch_hub, monkeypatch):
    monkeypatch.setenv(standin.PRETRAINED_ENV, "torch-cache")
    path = empty_torch_hub / "checkpoints" / "resnet34-b627a593.pth"
    path.parent.mkdir(parents=True)
    torch.save({"fc.bias": torch.zeros(1000)}, path)
    with pytest.raises(ValueError, match="sha256"):
        standin.pretrained_resnet34()


def test_expected_logits_are_the_snapshot_for_the_standin(monkeypatch):
    monkeypatch.delenv(standin.PRETRAINED_ENV, raising=False)
    for size in SIZES:
        assert torch.equal(snapshots.expected_logits(size), load_logits(size))


@pytest.mark.skipif(
    not standin.real_weights_path().is_file(), reason="torchvision's ResNet34 weights are not in the torch cache"
)
def test_reference_with_real_weights_matches_torchvision(monkeypatch):
    monkeypatch.setenv(standin.PRETRAINED_ENV, "torch-cache")
    ours = reference.copy_weights(reference.ResNet34(), standin.pretrained_resnet34()).eval()
    for size in SIZES:
        assert_logits_match(logits_of(ours, size), snapshots.expected_logits(size), "reference logits")
