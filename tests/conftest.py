"""Shared helpers for the project's own tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from conformance import profiles

ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)
profiles.register()  # the harness's Hypothesis profiles, which some tests load by name (a harness registers them too)


@pytest.fixture
def write(tmp_path: Path):
    """write("name.py", source) -> path of a dedented file in a temporary directory."""
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return _write


# ---- snapshots: never rewritten from parallel workers ---------------------------------


def snapshot_update_under_xdist(config: pytest.Config) -> bool:
    """True when `--snapshot-update` is asked for in a run that pytest-xdist distributes."""
    if not config.getoption("update_snapshots", default=False):
        return False
    if hasattr(config, "workerinput"):  # this process is an xdist worker
        return True
    numprocesses = config.getoption("numprocesses", default=None)  # -n N / auto / logical
    if numprocesses not in (None, 0, "0"):
        return True
    return bool(config.getoption("tx", default=None))  # --tx specs start workers too


def pytest_configure(config: pytest.Config) -> None:
    if snapshot_update_under_xdist(config):
        raise pytest.UsageError(
            "--snapshot-update cannot run under pytest-xdist: parallel workers would race to "
            "rewrite fixtures/logits/ and each only sees part of the tests. Run it in one "
            "process: `python -m pytest tests/test_snapshots.py --snapshot-update -p no:xdist` "
            "(or -n 0)."
        )
