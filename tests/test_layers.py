"""The layer contract (`[tool.importlinter]` in pyproject.toml, checked by `lint-imports` in CI) names every module
of the harness, so a new module is placed in a layer on purpose, never left outside the contract."""

from __future__ import annotations

import tomllib

from corpus import ROOT


def test_every_module_of_the_harness_has_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    named = {module.strip() for line in layers for module in line.split("|")}
    (independent,) = [c["modules"] for c in config["contracts"] if c["type"] == "independence"]
    modules = {f"conformance.{p.stem}" for p in (ROOT / "conformance").glob("*.py") if p.stem != "__init__"}
    assert modules - {"conformance.checks"} <= named, sorted(modules - named)
    assert {"conformance.checks", "under_test", "fixtures", "reference"} <= named
    checks = {f"conformance.checks.{p.stem}" for p in (ROOT / "conformance" / "checks").glob("test_*.py")}
    assert set(independent) == checks
