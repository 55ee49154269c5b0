"""What produced a results.json: the harness and library versions, the "pretrained" weights, the Hypothesis
profile and its settings, the grading options.

Grading is reproducible: two grades of one submission with the same provenance give the same results.json apart
from the timings (`tests/test_cli.py` grades a file twice to show it). A change of any of these may change a
verdict, so results.json records them all, and an instructor comparing two grades can see whether they differ.
"""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

HARNESS = "cnn-conformance"
LIBRARIES = ("torch", "torchvision", "hypothesis", "numpy", "pytest")
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("conformance", "under_test", "fixtures", "reference")  # what grades, and the stored snapshots


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_sha256() -> str:
    """sha256 over the harness's own files (path and bytes of every file of its packages, the stored logits
    included, in order): two checkouts of one version that differ are told apart."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted(p for p in (ROOT / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(f"{path.relative_to(ROOT).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def installed() -> dict:
    """The versions alone (what `grade` can say of a harness that wrote nothing)."""
    return {"harness": version(HARNESS), "source_sha256": source_sha256(), "python": platform.python_version(),
            "libraries": {name: version(name) for name in LIBRARIES}}


def of_session(config) -> dict:
    """The provenance of a pytest session's grades (`config`: its pytest config), under the active profile."""
    from hypothesis import settings

    from fixtures.standin import STANDIN_SHA256, pretrained_source

    from . import budgets
    from . import options as grading

    active = settings.default
    source = pretrained_source()
    return {
        **installed(),
        "pretrained": {"source": source, "sha256": STANDIN_SHA256 if source == "standin" else None},
        "profile": {
            "name": config.getoption("hypothesis_profile", None) or "conformance",
            "max_examples": active.max_examples,  # per check: `budgets.EXAMPLES`, scaled to it
            "derandomize": active.derandomize,
            "phases": [phase.name for phase in active.phases],
            "shrink_seconds": budgets.SHRINK_SECONDS,
        },
        "options": grading.provenance(grading.from_config(config)),  # the grading options (`conformance.options`)
    }


def same_grading(recorded: object, profile: str, chosen: dict) -> bool:
    """Whether a results.json's provenance is this installation's, with this profile and these options: then
    grading the same submission again would give the same results.json."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("profile"), dict):
        return False
    now = installed()
    return (all(recorded.get(key) == now[key] for key in now) and recorded["profile"].get("name") == profile
            and recorded.get("options") == chosen)
