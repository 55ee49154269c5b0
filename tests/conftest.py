"""Shared helpers for the project's own tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


@pytest.fixture
def write(tmp_path: Path):
    """write("name.py", source) -> path of a dedented file in a temporary directory."""
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return _write
