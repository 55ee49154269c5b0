"""docs/interface.md, the fixed interface, is in step with conformance/areas.py and the checks."""

from __future__ import annotations

import importlib
import subprocess
import sys

from conformance import docs
from conformance.areas import AREAS, RUBRIC
from corpus import ROOT


def test_the_interface_tables_are_the_ones_areas_py_declares():
    text = docs.INTERFACE.read_text()
    assert docs.render(text) == text, "docs/interface.md is out of step: run python -m conformance.docs"
    for area in AREAS.values():
        assert f"| `{area.id}` | {area.weight:g} |" in text
    for item in RUBRIC.values():
        assert f"| {item.id} | {item.question} |" in text


def test_the_items_read_from_the_checks_source_are_their_markers():
    """`docs.tagged` reads `@item(...)` from source; the markers pytest sees must say the same."""
    seen: dict[str, dict[str, int]] = {i: {} for i in RUBRIC}
    for area_id in AREAS:
        module = importlib.import_module(f"conformance.checks.test_{area_id}")
        for name, function in vars(module).items():
            if not name.startswith("test_") or not callable(function):
                continue
            for mark in getattr(function, "pytestmark", []):
                if mark.name == "item":
                    for item_id in mark.args:
                        seen[item_id][area_id] = seen[item_id].get(area_id, 0) + 1
    assert {i: dict(sorted(v.items())) for i, v in seen.items()} == \
        {i: dict(sorted(v.items())) for i, v in docs.tagged().items()}
    assert any(seen.values())  # some checks are tagged: the comparison is not between two empty tables


def test_the_code_cites_the_interface_in_the_repository():
    """The contract the code follows is docs/interface.md, which a clone has (not a file outside it)."""
    for path in [*ROOT.glob("conformance/**/*.py"), *ROOT.glob("under_test/*.py"), *ROOT.glob("fixtures/*.py"),
                 *ROOT.glob("tests/*.py"), ROOT / "README.md"]:
        if path.name != "test_docs.py":
            assert "CONTRACT" not in path.read_text(), path


def test_python_dash_m_conformance_is_the_command():
    done = subprocess.run([sys.executable, "-m", "conformance", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "grade" in done.stdout and "check" in done.stdout


# ---- the grading options: one table, everything else written from it ---------------------------------

def test_the_option_tables_are_the_ones_options_py_declares():
    from conformance import options

    for path, render in ((docs.INTERFACE, docs.render), (docs.README, docs.render_readme)):
        text = path.read_text()
        assert render(text) == text, f"{path.name} is out of step: run python -m conformance.docs"
        for option in options.GRADING:
            assert f"| `{option.flag}" in text, (path.name, option.flag)


def test_every_grading_option_reaches_the_harness_its_provenance_and_its_sandbox():
    """An option given to `conformance grade` reaches the harness's pytest (`pytest_argv`, read back with
    `from_config`) unchanged, is recorded in the provenance, and sets the sandbox's argument."""
    import argparse

    import pytest

    from conformance import options

    chosen = {"strict": True, "aliases": ["old_name=new_name"], "probe_timeout": 3.5, "memory_mb": 1024,
              "load_timeout": 7.0}
    assert set(chosen) == set(options.BY_NAME)
    command = argparse.ArgumentParser()
    options.add_to_argparse(command)
    argv = [token for option in options.GRADING for token in
            ([option.flag] if option.kind is bool else
             [x for value in chosen[option.name] for x in (option.flag, value)] if option.kind is list else
             [option.flag, str(chosen[option.name])])]
    assert options.from_namespace(command.parse_args(argv)) == chosen
    assert options.from_namespace(command.parse_args([])) == {o.name: ([] if o.kind is list else o.default)
                                                             for o in options.GRADING}

    class Parser:  # what pytest's parser gets from add_to_pytest, read as pytest would
        def __init__(self):
            self.parser = argparse.ArgumentParser()

        def addoption(self, *flags, **kwargs):
            self.parser.add_argument(*flags, **kwargs)

    harness = Parser()
    options.add_to_pytest(harness)
    parsed = harness.parser.parse_args(options.pytest_argv(chosen))

    class Config:
        def getoption(self, dest):
            return getattr(parsed, dest)

    assert options.from_config(Config()) == chosen
    assert options.provenance(chosen) == {"strict": True, "aliases": ["old_name=new_name"], "probe_timeout": 3.5,
                                          "memory_mb": 1024, "load_timeout": 7.0}
    assert options.sandbox_kwargs(chosen) == {"aliases": {"old_name": "new_name"}, "timeout": 3.5,
                                              "memory_mb": 1024, "load_timeout": 7.0}
    with pytest.raises(ValueError, match="OLD=NEW"):
        options.parse_aliases(["no_equals_sign"])
