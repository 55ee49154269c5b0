"""What a check's end means: the learner's failure or the harness's own error, and the text the learner reads.

The learner's outcomes are: a failed comparison (`CheckFailure`, an assertion, `pytest.fail`), an exception of
the submission (`SubmissionRaised`), a worker that hung, crashed or exited (`WorkerDied`), data the worker should
not send (`WireError`), or behaviour that changes from one call to the next (Hypothesis's flakiness errors).
Anything else is a bug of the harness: reported as `error`, never charged to the submission.
"""

from __future__ import annotations

import hypothesis.errors
import pytest

from under_test.sandbox import SubmissionRaised, WorkerDied
from under_test.wire import WireError

from .compare import CheckFailure

LEARNER_OUTCOMES = (AssertionError, SubmissionRaised, WorkerDied, WireError, pytest.fail.Exception,
                    pytest.skip.Exception, hypothesis.errors.Flaky)

# Hypothesis's advice to a test's author (replaying a failure with a decorator), not to a learner.
HARNESS_NOTES = ("You can reproduce this test case by temporarily adding", "You can add @reproduce_failure")


def is_learner_outcome(error: BaseException) -> bool:
    """A failure the submission caused; a group of them (Hypothesis found several distinct ones) is one too."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_learner_outcome(inner) for inner in error.exceptions)
    return isinstance(error, LEARNER_OUTCOMES)


def is_harness_error(call: pytest.CallInfo) -> bool:
    """The check failed because the harness's own code raised, not because of the submission."""
    if call.excinfo is None:
        return False
    return not is_learner_outcome(call.excinfo.value)


def harness_error_text(item: pytest.Item, call: pytest.CallInfo) -> str:
    return (f"the harness's check {item.name} raised {type(call.excinfo.value).__name__} in its own code; this says "
            f"nothing about the submission.\n{call.excinfo.getrepr(style='short')}")


def error_text(error: BaseException) -> str:
    """What the learner reads for one failure (each of a group's, when Hypothesis found several)."""
    if isinstance(error, BaseExceptionGroup):
        return "\n\n".join(error_text(inner) for inner in error.exceptions)
    if isinstance(error, SubmissionRaised):
        text = f"the submission raised {error.type_name}: {error.message}\n{error.traceback}".rstrip()
    elif isinstance(error, (CheckFailure, WorkerDied)):
        text = str(error)
    elif isinstance(error, AssertionError):
        text = str(error) or "assertion failed"
    elif type(error).__name__ == "Failed":  # pytest.fail(...)
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    notes = [n for n in getattr(error, "__notes__", []) if n.strip() and not n.strip().startswith(HARNESS_NOTES)]
    if notes:
        text += "\n\n" + "\n".join(notes)
    return text


def skip_reason(rep: pytest.TestReport) -> str:
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)
