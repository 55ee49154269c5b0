"""The pytest plugin (the `pytest11` entry point): the conformance options, and a grading session when asked for.

Installing the package loads this module into every pytest session of the environment, so it
costs nothing where it is not asked for: it declares the options and the checks' markers, and
imports neither torch nor Hypothesis. Given `--impl PATH` (`pytest --pyargs conformance.checks
--impl PATH`, or `conformance check PATH`), it registers the grading session
(`conformance.session`: the sandbox, the fixtures, the results). A Hypothesis profile of ours
(`--hypothesis-profile thorough`) is registered whenever one is asked for.
"""

from __future__ import annotations

import pytest

from . import options as grading
from .areas import AREAS
from .profiles import PROFILES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "CNN & ResNet conformance checks")
    group.addoption("--impl", metavar="PATH", help="the implementation to check: a .py file, an .ipynb notebook "
                    "or a directory (use `--impl reference` for the project's own reference)")
    grading.add_to_pytest(group)
    group.addoption("--area", action="append", default=[], metavar="AREA", dest="conformance_areas",
                    help=f"run only this area's checks (repeatable): {', '.join(AREAS)}")
    group.addoption("--results-json", metavar="PATH", help="write the graded results (docs/interface.md, section 6) here")
    group.addoption("--checks-json", metavar="PATH", help="keep a journal of the raw per-check entries here (for `grade`)")
    group.addoption("--earlier-areas-json", metavar="PATH",
                    help="(for `grade`, which grades a submission's areas in two harnesses when it has a spare job) "
                         "the entries of the harness grading the areas before these ones, which `grade` writes here "
                         "once that harness has finished: root causes are judged knowing which of them failed")


@pytest.hookimpl(tryfirst=True)  # before Hypothesis's own, which loads the profile named on the command line
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "area(id): the contract area a conformance check belongs to")
    config.addinivalue_line("markers", "item(*ids): rubric items a check decides beyond its area's own")
    config.addinivalue_line("markers", "requires(*names): submission names a check exercises")
    if config.getoption("impl") or config.getoption("hypothesis_profile", None) in PROFILES:
        from . import profiles

        profiles.register()
    if config.getoption("impl"):
        from . import session

        config.pluginmanager.register(session, "conformance-session")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("impl") and any(i.get_closest_marker("area") for i in items):
        raise pytest.UsageError(
            "conformance checks need an implementation: pass --impl PATH (a .py file, an .ipynb notebook or "
            "a directory); to check the project's reference, pass --impl reference")
