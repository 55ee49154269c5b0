"""The course's own tests are covered: every test function of the course's tests.py has a check that runs its inputs.

The list below is what the course's tests.py defines (`../shared/research/ARENA-exercise.md`, section 2, and the
ARENA_2.0-era file it describes): written here independently of `conformance.course`, so that a course test left out
of COURSE_TESTS fails this test instead of passing unseen.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import conformance.checks
from conformance.course import COURSE_TESTS, course_probes

COURSE_TEST_FUNCTIONS = (
    "test_relu", "test_linear_parameters", "test_linear_forward", "test_linear_no_bias", "test_flatten",
    "test_mlp_module", "test_mlp_forward",
    "test_conv2d_module",
    "test_batchnorm2d_module", "test_batchnorm2d_forward", "test_batchnorm2d_running_mean",
    "test_averagepool", "test_maxpool2d_module",
    "test_residual_block", "test_block_group",
    "test_get_resnet_for_feature_extraction",
    "test_trace", "test_mv", "test_mv2", "test_mm", "test_mm2",
    "test_conv1d_minimal_simple", "test_conv1d_minimal", "test_conv2d_minimal",
    "test_pad1d", "test_pad1d_multi_channel", "test_pad2d", "test_pad2d_multi_channel",
    "test_conv1d", "test_conv2d", "test_maxpool2d",
)


def checks() -> dict:
    found = {}
    for info in pkgutil.iter_modules(conformance.checks.__path__):
        module = importlib.import_module(f"conformance.checks.{info.name}")
        found.update({name: value for name, value in vars(module).items()
                      if name.startswith("test_") and callable(value) and value.__module__ == module.__name__})
    return found


CHECKS = checks()


def test_every_course_test_is_listed_once():
    names = [test.name for test in COURSE_TESTS]
    assert sorted(names) == sorted(COURSE_TEST_FUNCTIONS), set(names) ^ set(COURSE_TEST_FUNCTIONS)


@pytest.mark.parametrize("course_test", COURSE_TESTS, ids=[t.name for t in COURSE_TESTS])
def test_a_check_runs_the_course_tests_inputs(course_test):
    """Each check named runs the course test's probes as explicit examples (always, whatever the example budget),
    or draws nothing and runs the course's very case (said in `why`)."""
    assert course_test.checks, f"{course_test.name}: name the check that covers it"
    for name, probes in course_test.checks.items():
        assert name in CHECKS, f"{course_test.name} names {name}, which is not a check"
        check = CHECKS[name]
        required = {a for m in getattr(check, "pytestmark", []) if m.name == "requires" for a in m.args}
        required |= {a for m in getattr(importlib.import_module(check.__module__), "pytestmark", [])
                     if m.name == "requires" for a in m.args}
        assert course_test.calls in required, f"{name} does not exercise {course_test.calls}"
        if not probes:
            assert course_test.why, f"{course_test.name}: say how {name} covers it without probes"
            assert getattr(check, "hypothesis", None) is None, f"{name} draws its inputs: give it the course's probes"
            continue
        assert course_test.name in getattr(check, "course_tests", ()), \
            f"{name} does not run {course_test.name}'s probes: decorate it with @probes(...)"
        explicit = getattr(check, "hypothesis_explicit_examples", [])
        assert len(explicit) >= len(course_probes(name)), (name, len(explicit))


def test_probes_are_plain_data():
    """The course's values are facts written as data (numbers, tuples, dicts, strings), never code."""
    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (int, float, str))

    for test in COURSE_TESTS:
        for probes in test.checks.values():
            assert all(plain(probe) for probe in probes), test.name
