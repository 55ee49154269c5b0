"""The Hypothesis profiles a harness runs under: their names (what `--profile` takes) and their settings.

`conformance` (the default for checks): derandomized, so the same submission always meets the same inputs; no
example database, so nothing carries over from one submission to another; the blob to replay a failure is printed.
No explain phase: it replays hundreds of variants of a failing example, minutes per submission with many
failures, for a note the shrunk example already conveys. `dev`: few examples, for a quick look. `thorough`: ten
times the examples, random. `corpus` (the bug corpus): the same inputs as `conformance`, without the (slow)
shrinking.

The names are read without importing Hypothesis (`conformance grade` checks `--profile` before it imports
anything heavy); `register()` makes them known to Hypothesis.
"""

from __future__ import annotations

import functools

PROFILES = ("conformance", "dev", "thorough", "corpus")
DEFAULT = "conformance"


@functools.cache
def register() -> None:
    from hypothesis import HealthCheck, Phase, settings

    from . import budgets

    suppress = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
    phases = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
    settings.register_profile("conformance", max_examples=budgets.PROFILE_EXAMPLES, derandomize=True, database=None,
                              deadline=None, print_blob=True, report_multiple_bugs=False,
                              suppress_health_check=suppress, phases=phases)
    settings.register_profile("dev", max_examples=12, deadline=None, print_blob=True, report_multiple_bugs=False,
                              suppress_health_check=suppress, phases=phases)
    settings.register_profile("thorough", max_examples=10 * budgets.PROFILE_EXAMPLES,
                              deadline=None, database=None, print_blob=True, report_multiple_bugs=False,
                              suppress_health_check=suppress)
    settings.register_profile("corpus", parent=settings.get_profile("conformance"),
                              phases=(Phase.explicit, Phase.reuse, Phase.generate))
