"""How much work each check does: the one place for example counts, training budgets and time bounds.

Each figure is the smallest that still decides what its check decides, with a margin, and
says where that came from. `python -m benchmarks.examples` measures the example counts
again on the bug corpus (see the README's "Speed" section).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings


@dataclass(frozen=True)
class Training:
    """One training run on scikit-learn's digits (`fixtures.digits`)."""

    train: int  # training digits
    held_out: int  # held-out digits the accuracy is measured on
    size: int  # image side, in pixels
    epochs: int
    batch: int
    lr: float | None = None  # None: the submission's own train(args) keeps its own learning rate

    def recipe(self) -> str:
        return f"{self.epochs} epochs of {self.train} digits ({self.size}x{self.size}) in batches of {self.batch}"


# Feature extraction: the harness trains the new head of the frozen ResNet34 (Adam, cross-entropy). Measured on
# the stand-in backbone (3 seeds): held-out accuracy 0.82-0.90, training loss 2.3 -> 0.3-0.5, in 0.5 s on one
# thread; MIN_HEAD_ACCURACY is 0.40 and chance 0.10. At 16 px the stem and first groups still see the digit
# (16 -> 8 -> 4 -> 4 -> 2 -> 1 -> 1).
FE_HEAD = Training(train=300, held_out=100, size=16, epochs=2, batch=25, lr=1e-2)
# The submission's own train(args) on the same digits, at the course's lr=1e-3: held-out accuracy 0.72-0.74,
# last/first loss 0.48-0.71 (LOSS_DROP is 0.75), in 0.7 s (MIN_OWN_ACCURACY is 0.25).
FE_OWN = Training(train=300, held_out=100, size=16, epochs=2, batch=16)

# SimpleMLP, trained by the harness: held-out accuracy about 0.92 (MIN_MLP_ACCURACY 0.80), in 0.3 s.
MLP = Training(train=1000, held_out=300, size=28, epochs=2, batch=32, lr=1e-3)
# The submission's own SimpleMLP train(args): one epoch, batches of 16.
MLP_OWN = Training(train=1000, held_out=300, size=28, epochs=1, batch=16)

# Shrinking a failing check's input to the smallest one that still fails stops after this many seconds (Hypothesis
# allows 300): a submission failing many checks is graded in seconds, each with the smallest input found so far.
SHRINK_SECONDS = 3

# ---- Hypothesis examples ---------------------------------------------------------------------------------------

PROFILE_EXAMPLES = 30  # max_examples of the default (`conformance`) profile, for which the counts below are set

#: Examples per check under the default profile; a check not listed runs the profile's max_examples. Other profiles
#: scale them (`thorough`, 300, runs ten times as many). Measured with `python -m benchmarks.examples`.
EXAMPLES: dict[str, int] = {
    # Each example builds a full ResNet34 (about a second); explicit examples (n_classes=1000) run as well.
    "test_feature_extraction_backbone_pretrained_and_frozen": 2,
    "test_feature_extraction_head_is_a_fresh_trainable_linear": 2,
}


def examples(check: str) -> int:
    """How many examples `check` runs under the active Hypothesis profile."""
    profile = settings.default.max_examples
    if check not in EXAMPLES:
        return profile
    return max(1, round(EXAMPLES[check] * profile / PROFILE_EXAMPLES))


def apply(test) -> None:
    """Give a Hypothesis check its budget under the profile active now (not the one active when it was imported).

    Hypothesis reads a test's settings when the test is called; they are replaced here, before each run.
    """
    if getattr(test, "hypothesis", None) is None:
        return
    test._hypothesis_internal_use_settings = settings(settings.default, max_examples=examples(test.__name__),
                                                      deadline=None)
