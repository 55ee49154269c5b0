"""How much work each check does and what it must reach: the one place for example counts, training budgets with
their thresholds, and the checks' time bounds.

Each figure is the smallest that still decides what its check decides, with a margin, and
says where that came from. `python -m benchmarks.examples` measures the example counts
again on the bug corpus (see the README's "Speed" section).

The limits a grader sets for a run (one call, one definition, the memory: `--probe-timeout`,
`--load-timeout`, `--memory-mb`) are grading options (`conformance.options`, defaults from
`under_test.processes`); tolerances of comparisons are `conformance.compare`'s.
"""

from __future__ import annotations

import hashlib
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
    min_accuracy: float  # the held-out accuracy the trained model must reach
    lr: float | None = None  # None: the submission's own train(args) keeps its own learning rate
    # The loss must fall: the mean of the last `loss_window` batch losses at most `loss_drop` times the first ones'.
    loss_window: int = 3
    loss_drop: float = 0.75
    max_held_out_loss: float | None = None  # the held-out cross-entropy the trained model must get below, if any

    def recipe(self) -> str:
        return f"{self.epochs} epochs of {self.train} digits ({self.size}x{self.size}) in batches of {self.batch}"


# Feature extraction: the harness trains the new head of the frozen ResNet34 (Adam, cross-entropy). Measured on
# the stand-in backbone (3 seeds): held-out accuracy 0.82-0.90, training loss 2.3 -> 0.3-0.5, in 0.5 s on one
# thread; chance is 0.10. At 16 px the stem and first groups still see the digit (16 -> 8 -> 4 -> 4 -> 2 -> 1 -> 1).
FE_HEAD = Training(train=300, held_out=100, size=16, epochs=2, batch=25, lr=1e-2, min_accuracy=0.40)
# The submission's own train(args) on the same digits, at the course's lr=1e-3: held-out accuracy 0.72-0.74,
# last/first loss 0.48-0.71, in 0.7 s.
FE_OWN = Training(train=300, held_out=100, size=16, epochs=2, batch=16, min_accuracy=0.25)

# SimpleMLP, trained by the harness: held-out accuracy about 0.92, in 0.3 s.
MLP = Training(train=1000, held_out=300, size=28, epochs=2, batch=32, lr=1e-3, min_accuracy=0.80, loss_window=5,
               loss_drop=0.5, max_held_out_loss=1.0)
# The submission's own SimpleMLP train(args): one epoch, batches of 16.
MLP_OWN = Training(train=1000, held_out=300, size=28, epochs=1, batch=16, min_accuracy=0.60)

# ---- Time bounds of the checks' longer calls into the submission (seconds) ---------------------------------------

#: One training run: the harness's `Sandbox.fit`, or the submission's own train(args) (`Sandbox.run_train`).
TRAIN_SECONDS = 120.0
#: Building a full ResNet34 in get_resnet_for_feature_extraction, or one forward over the held-out digits: about a
#: second each.
MODEL_CALL_SECONDS = 60.0
#: One forward of the copied ResNet34 over the photos (`test_weight_copy`) when the submission can afford it: a slow
#: forward is not wrong, only a hang fails.
PHOTO_FORWARD_SECONDS = 120.0

# Shrinking a failing check's input to the smallest one that still fails stops after this many seconds (Hypothesis
# allows 300): a submission failing many checks is graded in seconds, each with the smallest input found so far.
SHRINK_SECONDS = 3

# ---- Hypothesis examples ---------------------------------------------------------------------------------------

PROFILE_EXAMPLES = 30  # max_examples of the default (`conformance`) profile, for which the counts below are set

#: Evidence: for each Hypothesis check, the generated examples (after its explicit ones) it needed to catch every
#: bug of the corpus that it must catch, under the default profile's inputs (`python -m benchmarks.examples`,
#: 115 bugs, 2026-12-01; most checks catch most bugs at the first or second example).
NEEDED: dict[str, int] = {
    "test_as_strided_mm": 5,
    "test_as_strided_mv": 6,
    "test_as_strided_trace": 10,
    "test_averagepool_means_over_height_and_width": 4,
    "test_batchnorm_defaults_are_eps_1e5_momentum_01": 1,
    "test_batchnorm_eval_mode_uses_running_buffers_and_changes_nothing": 3,
    "test_batchnorm_parameters_and_buffers": 1,
    "test_batchnorm_running_statistics_after_train_steps": 3,
    "test_batchnorm_train_and_eval_steps_interleaved": 1,
    "test_batchnorm_train_mode_normalises_with_batch_statistics": 3,
    "test_blockgroup_forward_matches_torchvision": 3,
    "test_blockgroup_only_first_block_strides_and_projects": 16,
    "test_conv1d": 3,
    "test_conv1d_minimal": 3,
    "test_conv1d_minimal_simple": 5,
    "test_conv1d_stride_changes_output_grid": 3,
    "test_conv2d": 5,
    "test_conv2d_defaults_are_stride_1_padding_0": 1,
    "test_conv2d_forward_matches_functional_conv2d": 3,
    "test_conv2d_minimal": 3,
    "test_conv2d_output_shape": 3,
    "test_conv2d_parameters_only_weight": 2,
    "test_conv2d_positional_and_keyword_construction": 3,
    "test_conv2d_stride_changes_output_grid": 1,
    "test_conv2d_translation_equivariance": 3,
    "test_conv2d_weight_initialisation": 1,
    "test_flatten_repr": 1,
    "test_flatten_values": 8,
    "test_linear_forward": 2,
    "test_linear_init": 1,
    "test_linear_parameters": 2,
    "test_linear_repr": 1,
    "test_maxpool2d": 6,
    "test_maxpool2d_default_stride_is_kernel": 1,
    "test_maxpool2d_pads_with_minus_infinity": 1,
    "test_maxpool2d_stride_changes_output_grid": 3,
    "test_maxpool_default_padding_is_one": 5,
    "test_maxpool_default_stride_is_kernel_size": 5,
    "test_maxpool_forward_matches_max_pool2d": 7,
    "test_maxpool_stride_changes_output_grid": 5,
    "test_pad1d": 3,
    "test_pad2d": 3,
    "test_relu_leaves_its_input_untouched": 1,
    "test_relu_values": 1,
    "test_residual_each_branch_runs_once": 1,
    "test_residual_forward_eval_matches_torchvision": 4,
    "test_residual_forward_train_matches_torchvision": 2,
    "test_residual_no_relu_before_add_and_identity_gradient": 3,
    "test_residual_projection_is_strided_1x1_conv": 2,
    "test_residual_projection_rule": 4,
    "test_residual_stride_on_first_conv": 1,
    "test_resnet34_configuration_honoured": 3,
    "test_resnet34_eval_batch_independent": 1,
    "test_resnet34_eval_logits_match_reference": 1,
    "test_resnet34_output_shape": 1,
    "test_sequential_applies_modules_in_order": 3,
    "test_sequential_indexing_and_state": 1,
    "test_simple_mlp_cross_entropy_gradients": 1,
    "test_simple_mlp_returns_logits": 1,
}


def with_margin(needed: int) -> int:
    """The example count a check runs: twice what the corpus needed, and at least 8 more, within the profile's."""
    return min(PROFILE_EXAMPLES, max(2 * needed, needed + 8))


#: Examples per check under the default profile; a check not listed runs the profile's max_examples. Other
#: profiles scale them (`thorough`, 300, runs ten times as many).
EXAMPLES: dict[str, int] = {name: with_margin(needed) for name, needed in NEEDED.items()}
# Each feature-extraction example builds a full ResNet34 (about half a second): the explicit examples (1000 classes,
# and the course's 10) or the first drawn one caught every bug of the corpus, so one is drawn, not eight.
EXAMPLES["test_feature_extraction_backbone_pretrained_and_frozen"] = 1
EXAMPLES["test_feature_extraction_head_is_a_fresh_trainable_linear"] = 1
# Hypothesis draws other inputs under another max_examples, so a count is proven only by grading the corpus with it
# (tests/test_corpus.py does, for every bug): flatten-view (a Flatten that cannot take a non-contiguous input),
# first caught at the 8th of 30 examples, went uncaught with 9, 12, 16, 20 or 24, and with 30 once start_dim was
# drawn >= 0 only; the check now tries a transposed batch first (an explicit example), which catches it.
EXAMPLES["test_flatten_values"] = PROFILE_EXAMPLES


def examples(check: str) -> int:
    """How many examples `check` runs under the active Hypothesis profile."""
    profile = settings.default.max_examples
    if check not in EXAMPLES:
        return profile
    return max(1, round(EXAMPLES[check] * profile / PROFILE_EXAMPLES))


def seed_of(test) -> int:
    """The seed a check draws its examples from under a derandomized profile: a digest of its module and name.

    Hypothesis's own derandomize seeds from a digest of the check's source text, so that rewording a message or
    renaming a helper inside a check would draw other inputs, and a bug caught by the old ones could slip. A check
    draws the same inputs until it is renamed (or Hypothesis changes how it draws).
    """
    name = f"{test.__module__.rpartition('.')[2]}::{test.__name__}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:16], "big")


def apply(test) -> None:
    """Give a Hypothesis check its budget under the profile active now (not the one active when it was imported),
    and, when that profile is derandomized, its seed (`seed_of`).

    Hypothesis reads a test's settings when the test is called; they are replaced here, before each run.
    """
    if getattr(test, "hypothesis", None) is None:
        return
    test._hypothesis_internal_use_settings = settings(settings.default, max_examples=examples(test.__name__),
                                                      deadline=None)
    # What `hypothesis.seed` sets. A check's own @seed is kept (the feature-extraction checks share one, so that they
    # draw the same class counts and share their builds); otherwise None, a random draw, under a profile that is not
    # derandomized (`thorough`).
    if "_conformance_own_seed" not in test.__dict__:
        test._conformance_own_seed = getattr(test, "_hypothesis_internal_use_seed", None)
    own = test._conformance_own_seed
    test._hypothesis_internal_use_seed = own if own is not None else (
        seed_of(test) if settings.default.derandomize else None)
    if settings.default.database is None:
        # No example database, so no key for one: Hypothesis would otherwise derive it from the check's source at
        # every run (a few milliseconds, 60 checks).
        test._hypothesis_internal_database_key = None
    else:
        test.__dict__.pop("_hypothesis_internal_database_key", None)


#: `conformance grade` with a job to spare (fewer submissions waiting than free jobs: one submission, `--jobs 2`)
#: grades a submission in two harnesses at once, these areas in the second: the weight copy and feature extraction,
#: about half of a correct submission's time (1.8 s and 4.1 s of 11.3 s), against the seven other areas. They come
#: last in AREAS, after every building block they use, so the second harness judges root causes knowing which
#: earlier areas were cleared (`rootcause.area_verdicts`).
APART: tuple[str, ...] = ("weight_copy", "feature_extraction")
