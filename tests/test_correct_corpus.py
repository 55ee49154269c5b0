"""Never fail a correct answer: every submission of `corpus/correct/` passes every area it defines.

Each is a whole, correct answer written the way the course writes it (its `force_pair`, its type
hints with batch dims) in one style learners really use; `corpus/correct/MANIFEST.toml` says
which style, which of the false failures seen once it covers, and which areas it defines.
"""

from __future__ import annotations

import tomllib

import pytest

from conformance.areas import AREAS
from corpus import ROOT, grade

pytestmark = pytest.mark.slow  # grades whole submissions: not in the fast lane (`-m 'not slow'`)

FOLDER = ROOT / "corpus" / "correct"
MANIFEST = tomllib.loads((FOLDER / "MANIFEST.toml").read_text())["submission"]


def areas_of(entry: dict) -> list[str]:
    return list(AREAS) if entry["areas"] == "all" else list(entry["areas"])


def test_the_manifest_lists_every_submission_and_only_those():
    listed = {entry["path"] for entry in MANIFEST}
    present = {p.name for p in FOLDER.iterdir() if p.name != "MANIFEST.toml" and not p.name.startswith((".", "__"))}
    assert listed == present
    assert len(MANIFEST) >= 20
    for entry in MANIFEST:
        assert entry["style"].strip() and set(areas_of(entry)) <= set(AREAS), entry


@pytest.mark.parametrize("entry", MANIFEST, ids=[entry["path"] for entry in MANIFEST])
def test_correct_submission_passes_every_area_it_defines(entry, tmp_path):
    data = grade(FOLDER / entry["path"], [], tmp_path, profile="conformance", fork=True)
    wrong = {t["name"]: t["output"] for t in data["tests"] if t["outcome"] in ("failed", "error")}
    assert not wrong, f"{entry['path']} ({entry['style']}) is correct, yet:\n" + "\n\n".join(
        f"{name}:\n{output}" for name, output in wrong.items())
    statuses = {area: data["areas"][area]["status"] for area in areas_of(entry)}
    assert set(statuses.values()) == {"passed"}, statuses
