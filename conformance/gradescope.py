"""The Gradescope autograder: `conformance gradescope --out autograder.zip` builds the bundle a course uploads,
so that its submissions are graded on Gradescope's machines when one machine is not enough.

The zip holds what Gradescope runs (https://gradescope-autograders.readthedocs.io, "Specifications"):

- `setup.sh`: run once when the image is built. It makes a Python 3.11 virtual environment in
  `/autograder/source/venv` and installs the pinned libraries (`requirements.txt`: the versions of the machine
  that built the bundle, torch and torchvision from PyTorch's CPU index), then this harness from `harness/`.
- `run_autograder`: run for each submission. It grades the learner's file(s) in `/autograder/submission` with
  `conformance grade` and writes `/autograder/results/results.json` (a superset of Gradescope's schema).
- `harness/`: this project's source, exactly the files that grade (its `provenance` hash covers them).

`run()` is what `run_autograder` calls; `AUTOGRADER_ROOT` moves `/autograder` elsewhere (the tests use a temporary
folder), and `CONFORMANCE_PYTHON` names the Python to grade with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from . import provenance

ROOT = Path(__file__).resolve().parent.parent
HARNESS_FILES = ("pyproject.toml", "README.md", "docs/interface.md", "conformance", "under_test", "fixtures", "reference")
CORPUS_FILES = ("corpus/__init__.py", "corpus/__main__.py", "corpus/*.toml")  # the package `pyproject` names
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SUBMISSION_SUFFIXES = (".py", ".ipynb")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
set -euo pipefail
cd /autograder/source
if ! command -v python3.11 >/dev/null; then
    apt-get update
    apt-get install -y software-properties-common
    add-apt-repository -y ppa:deadsnakes/ppa
    apt-get update
    apt-get install -y python3.11 python3.11-venv
fi
python3.11 -m venv venv
venv/bin/pip install --upgrade pip
venv/bin/pip install --extra-index-url {cpu_index} -r requirements.txt
venv/bin/pip install --no-deps ./harness
venv/bin/python -c "import conformance.cli"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: grade it, write /autograder/results/results.json.
set -uo pipefail
root="${{AUTOGRADER_ROOT:-/autograder}}"
python="${{CONFORMANCE_PYTHON:-$root/source/venv/bin/python}}"
exec "$python" -c "from conformance.gradescope import run; raise SystemExit(run())"
"""


def requirements() -> str:
    """The libraries the harness grades with, pinned to the versions this machine has (its provenance)."""
    from packaging.requirements import Requirement

    lines = []
    for name in (Requirement(line).name for line in _dependencies()):
        version = provenance.version(name)
        lines.append(f"{name}=={version}" if version != "not installed" else name)
    return "\n".join(lines) + "\n"


def _dependencies() -> list[str]:
    import tomllib

    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def _harness_paths() -> list[Path]:
    paths: list[Path] = []
    for name in HARNESS_FILES:
        path = ROOT / name
        paths += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for pattern in CORPUS_FILES:
        paths += sorted(ROOT.glob(pattern))
    return [p for p in paths if "__pycache__" not in p.parts and ".hypothesis" not in p.parts]


def build(out: Path) -> Path:
    """Write the bundle to `out` (a .zip); its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, text, mode in (("setup.sh", SETUP_SH.format(cpu_index=CPU_INDEX), 0o755),
                                 ("run_autograder", RUN_AUTOGRADER.format(), 0o755),
                                 ("requirements.txt", requirements(), 0o644)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            bundle.writestr(info, text)
        for path in _harness_paths():
            bundle.write(path, f"harness/{path.relative_to(ROOT).as_posix()}")
    return out


def find_submission(folder: Path) -> Path | None:
    """The learner's submission in Gradescope's upload folder: its one .py or .ipynb file, else the folder itself
    as a directory submission (several files, packages); None when it holds no .py or .ipynb at all."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in SUBMISSION_SUFFIXES
             and not any(part.startswith((".", "__")) for part in p.relative_to(folder).parts)]
    if not files:
        return None
    top = [p for p in files if p.parent == folder]
    return top[0] if len(files) == 1 and top else folder


def run() -> int:
    """Grade `/autograder/submission` (or `$AUTOGRADER_ROOT/submission`) into `results/results.json`."""
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    results = root / "results" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    submission = find_submission(root / "submission")
    if submission is None:
        results.write_text(json.dumps({"score": 0.0, "output": "No .py file or .ipynb notebook was uploaded: "
                                       "upload your solution file (or the folder holding it)."}, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "graded"
        done = subprocess.run([sys.executable, "-m", "conformance.cli", "grade", str(submission), "--out", str(out),
                               "--jobs", str(max(1, min(2, os.cpu_count() or 1)))], capture_output=True, text=True)
        graded = [p / "results.json" for p in out.iterdir() if (p / "results.json").is_file()] if out.exists() else []
        if not graded:
            results.write_text(json.dumps({"score": 0.0, "output": "The grader could not run; this is not your "
                                           f"fault, please tell the course staff.\n{done.stderr[-2000:]}"}, indent=2))
            return 1
        shutil.copy(graded[0], results)
    return 0
