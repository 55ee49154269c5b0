"""What the course's own tests feed each graded name: the inputs no example budget may miss.

The ARENA chapter checks a learner's work with `tests.py` (and a few inline checks in its notebook). A grader that
misses a bug those few lines catch loses the instructor's trust, whatever it catches besides. So every check that
covers a course test runs that test's inputs as explicit Hypothesis examples (`@example`), before anything it
draws, under every profile.

The values below are facts about the course (`../shared/research/ARENA-exercise.md`, `tests.py`), written down as
data; the code that turns them into a check's arguments lives beside each check. A course test that draws its
inputs at random (`np.random.randint(...)` with no seed) is represented by fixed draws inside its ranges: its
smallest and largest corners, which is where an off-by-one shows.

`tests/test_course.py` proves that every course test is covered by a check that runs its probes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import example


@dataclass(frozen=True)
class CourseTest:
    """One test function of the course: what it calls, and for each check of ours covering it, its inputs (probes).

    A check with no probes runs exactly the course's case already (it draws nothing); `why` says how."""

    name: str
    calls: str  # the graded name it exercises
    checks: dict[str, tuple[dict, ...]]  # our check -> the course's inputs it runs, as plain values
    why: str = ""  # for a check without probes: how it covers the course's test


_MODULES = (
    CourseTest("test_relu", "ReLU", {"test_relu_values": ({"shape": (10,)},)}),  # randn(10) - 0.5
    CourseTest("test_linear_parameters", "Linear", {"test_linear_parameters": ({"n_in": 2, "n_out": 3},)}),
    CourseTest("test_linear_forward", "Linear",  # x = rand(10, 512), its weights loaded from nn.Linear(512, 64)
               {"test_linear_forward": ({"n_in": 512, "n_out": 64, "bias": True, "lead": (10,)},)}),
    CourseTest("test_linear_no_bias", "Linear",
               {"test_linear_forward": ({"n_in": 512, "n_out": 64, "bias": False, "lead": (10,)},)}),
    CourseTest("test_flatten", "Flatten",  # on arange(24).reshape(2, 3, 4), by keyword
               {"test_flatten_values": ({"shape": (2, 3, 4), "start_dim": 0},
                                        {"shape": (2, 3, 4), "start_dim": 1},
                                        {"shape": (2, 3, 4), "start_dim": 0, "end_dim": 1},
                                        {"shape": (2, 3, 4), "start_dim": 0, "end_dim": -2})}),
    CourseTest("test_mlp_module", "SimpleMLP", {"test_simple_mlp_structure": ()},
               why="SimpleMLP() with no arguments: 79,510 parameters, named and ordered as the reference's"),
    CourseTest("test_mlp_forward", "SimpleMLP", {"test_simple_mlp_returns_logits": ({"shape": (10, 28, 28)},)}),
)

_CONV = (
    # Conv2d(4, 5, 3): the weight's name and element count; Conv2d(100, 100, 3): the init's bounds; five forward
    # runs with b 1-9, ci/co 1-19, k 1-9, stride 1-4, padding 0-4, h/w 10-299, by keyword.
    CourseTest("test_conv2d_module", "Conv2d", {
        "test_conv2d_parameters_only_weight": ({"in_channels": 4, "out_channels": 5, "kernel_size": 3},),
        "test_conv2d_weight_initialisation": ({"in_channels": 100, "out_channels": 100, "kernel_size": 3},),
        "test_conv2d_forward_matches_functional_conv2d": (
            {"batch": 1, "in_channels": 1, "out_channels": 1, "kernel_size": 9, "stride": 4, "padding": 0,
             "size": (10, 10)},
            {"batch": 2, "in_channels": 3, "out_channels": 5, "kernel_size": 1, "stride": 1, "padding": 4,
             "size": (10, 11)})}),
)

_BATCHNORM = (
    CourseTest("test_batchnorm2d_module", "BatchNorm2d",
               {"test_batchnorm_parameters_and_buffers": ({"num_features": 3},)}),
    CourseTest("test_batchnorm2d_forward", "BatchNorm2d", {"test_batchnorm_train_mode_output_statistics": ()},
               why="train mode on randn(100, 2, 3, 4): per-channel mean 0 and std 1 within 1e-3, as the course"),
    CourseTest("test_batchnorm2d_running_mean", "BatchNorm2d",  # 30 train steps on arange(12).view(2, 3, 2, 1)
               {"test_batchnorm_running_statistics_after_train_steps": ({"num_features": 3, "momentum": 0.6,
                                                                         "steps": 30},)}),
)

_POOLING = (
    # The ARENA_2.0-era test of a learner-written MaxPool2d: b 1-9, c 1-19, h/w 10-49, k 1-9, padding <= k // 2 (the
    # check's stride is 1; other strides: test_maxpool_stride_changes_output_grid).
    CourseTest("test_maxpool2d_module", "MaxPool2d", {"test_maxpool_forward_matches_max_pool2d": (
        {"batch": 1, "channels": 1, "size": (10, 12), "kernel": 9, "padding": 4},
        {"batch": 2, "channels": 3, "size": (11, 10), "kernel": 2, "padding": 1})}),
    CourseTest("test_averagepool", "AveragePool", {"test_averagepool_fixed_example": ()},
               why="arange(24).view(1, 2, 3, 4) gives [[5.5, 17.5]], the course's one example"),
)

_RESIDUAL = (
    # The course checks only the parameter count and the output shape (64x64 in, 64x64 or 32x32 out).
    CourseTest("test_residual_block", "ResidualBlock",
               {"test_residual_projection_rule": ({"in_feats": 3, "out_feats": 3, "first_stride": 1},
                                                  {"in_feats": 3, "out_feats": 4, "first_stride": 2})}),
    CourseTest("test_block_group", "BlockGroup",
               {"test_blockgroup_only_first_block_strides_and_projects": (
                   {"n_blocks": 2, "in_feats": 3, "out_feats": 3, "first_stride": 1},
                   {"n_blocks": 2, "in_feats": 3, "out_feats": 4, "first_stride": 2},
                   {"n_blocks": 5, "in_feats": 3, "out_feats": 4, "first_stride": 2})}),
)

_FEATURE_EXTRACTION = (
    CourseTest("test_get_resnet_for_feature_extraction", "get_resnet_for_feature_extraction",
               {"test_feature_extraction_head_is_a_fresh_trainable_linear": ({"n_classes": 10},),
                "test_feature_extraction_backbone_pretrained_and_frozen": ({"n_classes": 10},)}),
)

_STRIDED = (
    CourseTest("test_trace", "as_strided_trace",  # n = 0..9: zeros, eye and randint(0, 10) matrices, float32
               {"test_as_strided_trace": tuple({"n": n, "kind": kind} for n in (0, 1, 2, 9)
                                               for kind in ("zeros", "eye", "randint"))}),
    CourseTest("test_mv", "as_strided_mv", {"test_as_strided_mv": ({"mat": (3, 4), "vec": (4,)},)}),
    CourseTest("test_mv2", "as_strided_mv",  # views of one randn(30)
               {"test_as_strided_mv": ({"mat": {"size": (3, 4), "stride": (2, 4), "offset": 8},
                                        "vec": {"size": (4,), "stride": (3,), "offset": 8}},)}),
    CourseTest("test_mm", "as_strided_mm", {"test_as_strided_mm": ({"matA": (3, 4), "matB": (4, 5)},)}),
    CourseTest("test_mm2", "as_strided_mm",  # views of one randn(30)
               {"test_as_strided_mm": ({"matA": {"size": (3, 4), "stride": (2, 4), "offset": 8},
                                        "matB": {"size": (4, 5), "stride": (3, 2), "offset": 8}},)}),
    CourseTest("test_conv1d_minimal_simple", "conv1d_minimal_simple",  # w 10-29, kw 1-9, float32
               {"test_conv1d_minimal_simple": ({"x": (10,), "weights": (9,)}, {"x": (29,), "weights": (1,)})}),
    CourseTest("test_conv1d_minimal", "conv1d_minimal",  # b 1-9, ci/co 1-4, w 10-29, kw 1-9, float32
               {"test_conv1d_minimal": ({"x": (1, 1, 10), "weights": (1, 1, 9)},
                                        {"x": (9, 4, 29), "weights": (4, 4, 1)})}),
    CourseTest("test_conv2d_minimal", "conv2d_minimal",  # b 1-9, ci/co 1-19, h/w 10-299, k 1-9 (not square), float64
               {"test_conv2d_minimal": ({"x": (1, 1, 10, 12), "weights": (1, 1, 9, 1)},
                                        {"x": (2, 3, 11, 10), "weights": (2, 3, 1, 9)})}),
    CourseTest("test_pad1d", "pad1d",  # arange(4).float().view(1, 1, 4)
               {"test_pad1d": ({"shape": (1, 1, 4), "args": (1, 3, -2.0)}, {"shape": (1, 1, 4), "args": (1, 0, -2.0)})}),
    CourseTest("test_pad1d_multi_channel", "pad1d", {"test_pad1d": ({"shape": (1, 2, 2), "args": (0, 2, -3.0)},)}),
    CourseTest("test_pad2d", "pad2d", {"test_pad2d": ({"shape": (1, 1, 2, 2), "args": (0, 1, 2, 3, 0.0)},)}),
    CourseTest("test_pad2d_multi_channel", "pad2d",
               {"test_pad2d": ({"shape": (1, 2, 2, 1), "args": (1, 0, 0, 1, -1.0)},)}),
    CourseTest("test_conv1d", "conv1d", {"test_conv1d": (  # b 1-9, ci/co 1-19, k 1-9, stride 1-4, padding 0-4
        {"batch": 1, "in_channels": 1, "out_channels": 1, "width": 10, "kernel": 9, "stride": 4, "padding": 4},
        {"batch": 2, "in_channels": 3, "out_channels": 2, "width": 11, "kernel": 1, "stride": 1, "padding": 0})}),
    CourseTest("test_conv2d", "conv2d", {"test_conv2d": (  # float64; stride and padding tuples of np.int64
        {"batch": 1, "in_channels": 1, "out_channels": 1, "size": (10, 12), "kernel": (9, 1), "stride": (4, 1),
         "padding": (0, 4)},
        {"batch": 2, "in_channels": 3, "out_channels": 2, "size": (11, 10), "kernel": (1, 9), "stride": (1, 4),
         "padding": (4, 0)})}),
    CourseTest("test_maxpool2d", "maxpool2d", {"test_maxpool2d": (  # kernel a tuple of np.int64; padding <= k // 2
        {"batch": 1, "channels": 1, "size": (10, 12), "kernel": (9, 1), "stride": None, "padding": (4, 0)},
        {"batch": 2, "channels": 3, "size": (11, 10), "kernel": (2, 3), "stride": (4, 1), "padding": (1, 1)})}),
)

COURSE_TESTS: tuple[CourseTest, ...] = (*_MODULES, *_CONV, *_BATCHNORM, *_POOLING, *_RESIDUAL, *_FEATURE_EXTRACTION,
                                        *_STRIDED)


def course_probes(check: str) -> list[tuple[str, dict]]:
    """Every probe of a course test that `check` covers, with the course test's name."""
    return [(test.name, probe) for test in COURSE_TESTS for probe in test.checks.get(check, ())]


def probes(to_example: Callable[[dict], dict]) -> Callable:
    """Run the course's probes for the decorated check (found by its name) as explicit examples, before anything
    Hypothesis draws. Put it above `@given`; `to_example` turns one probe into the check's keyword arguments.
    The check records the course tests it runs (`check.course_tests`), for `tests/test_course.py`."""
    def apply(check):
        found = course_probes(check.__name__)
        if not found:
            raise LookupError(f"{check.__name__} covers no course test: list it in conformance.course.COURSE_TESTS")
        for _, probe in reversed(found):
            check = example(**to_example(probe))(check)
        check.course_tests = tuple(dict.fromkeys(name for name, _ in found))
        return check
    return apply
