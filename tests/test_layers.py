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


def test_the_plugin_costs_nothing_where_it_is_not_asked_for(tmp_path):
    """Installing the package loads `conformance.plugin` into every pytest session of the environment; without
    --impl it imports a handful of small modules of ours and nothing of torch, numpy or Hypothesis."""
    import subprocess
    import sys

    (tmp_path / "test_other_project.py").write_text(
        "import sys\n\n"
        "def test_nothing_heavy_was_imported():\n"
        "    ours = sorted(m for m in sys.modules if m.split('.')[0] in ('conformance', 'under_test', 'fixtures',\n"
        "                                                             'reference'))\n"
        "    assert ours == ['conformance', 'conformance.areas', 'conformance.options', 'conformance.plugin',\n"
        "                    'conformance.profiles', 'under_test', 'under_test.processes', 'under_test.zygote'], ours\n"
        "    heavy = [m for m in ('torch', 'numpy', 'hypothesis', 'torchvision') if m in sys.modules]\n"
        "    assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--disable-plugin-autoload",
                           "-p", "conformance", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
