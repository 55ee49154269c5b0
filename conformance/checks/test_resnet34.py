"""Area `resnet34` (rubric item 7, with `weight_copy`): ResNet34's stem, residual groups, strides, head.

Oracle: the project's reference `reference.ResNet34`, built with the same arguments in
the harness (its state_dict lines up with torchvision's `resnet34` entry by entry, and
the project's tests anchor its logits to torchvision's). The submission's pieces are
recognised from its state_dict alone, never from attribute names
(`conformance.structure`: conv units, BatchNorm units, blocks told apart by kernel
sizes): the stem is the convolution that reads the 3-channel image, the residual blocks
are grouped as `n_blocks_per_group` says, the head is the 2-D weight and its bias. That
mapping is by role, so this area judges the architecture whatever the declaration
order; the order itself (what copy_weights relies on) is judged by `weight_copy`.

Small configurations (the course's four groups, of 1-2 blocks each, widths 4..16 or 64,
strides 1..2, 1..12 classes) are drawn by Hypothesis; the full-size model is checked with
fixed cases.
"""

from __future__ import annotations


import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.areas import area, requires
from conformance.compare import BATCH_ROW, REPEAT, CheckFailure, assert_close, assert_equal, fail, tensor_of
from conformance.diagnosis import diagnose_network
from conformance.probing import Entry, load_state, parameter_count, printable, set_mode, state_entries
from conformance.strategies import SEEDS
from conformance.structure import (
    DEFAULT, STEM_TEXT, STEM_WIDTH, Config, Layout, network_layout, random_state, reference_entries, reference_model,
)
from under_test.sandbox import SubmissionRaised

pytestmark = [area("resnet34"), requires("ResNet34")]

DEFAULT_PARAMETERS = 21_797_672
DEFAULT_ENTRIES = 218


GROUPS = 4  # the course only ever builds four groups; learners loop `for i in range(4)`


# course: ResNet34(n_blocks_per_group, out_features_per_group, first_strides_per_group, n_classes), lists of four
# ints (the defaults [3, 4, 6, 3], [64, 128, 256, 512], [1, 2, 2, 2], 1000) and n_classes 10 in feature extraction;
# interface.md: four groups of any small widths, block counts and strides.
@st.composite
def configs(draw):
    """A small ResNet34 configuration of the course's four groups: every group projects or keeps its shape,
    as the draw decides."""
    groups = GROUPS
    n_blocks = tuple(draw(st.integers(1, 2), label=f"n_blocks of group {g}") for g in range(groups))
    widths = tuple(draw(st.one_of(st.integers(4, 16), st.just(STEM_WIDTH)), label=f"width of group {g}")
                   for g in range(groups))
    strides = tuple(draw(st.integers(1, 2), label=f"first_stride of group {g}") for g in range(groups))
    n_classes = draw(st.integers(1, 12), label="n_classes")
    return Config(n_blocks, widths, strides, n_classes)


CONSTRUCTIONS = st.sampled_from(["positional", "keyword"])  # course: ResNet34() only; interface.md: both forms


def construct(sandbox, config: Config, how: str = "positional", seed: int = 0):
    if config == DEFAULT and how == "default":
        return sandbox.construct("ResNet34", seed=seed)
    if how == "keyword":
        names = ("n_blocks_per_group", "out_features_per_group", "first_strides_per_group", "n_classes")
        return sandbox.construct("ResNet34", **dict(zip(names, config.arguments())), seed=seed)
    return sandbox.construct("ResNet34", *config.arguments(), seed=seed)


def layout_of(sandbox, handle, config: Config) -> tuple[Layout, list[Entry]]:
    entries = state_entries(sandbox, handle, str(config))
    return network_layout(entries, config), entries


def same_state(sandbox, handle, layout: Layout, oracle: torch.nn.Module, seed: int, doing: str) -> None:
    """Load one random state (non-zero running_mean, varied running_var) into the oracle and the submission."""
    layout.require_loadable(doing)
    state = random_state(oracle, seed)
    oracle.load_state_dict(state)
    load_state(sandbox, handle, layout.submission_state(state), layout.what)


def images(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    # course: (batch, 3, 224, 224) float32 images (IMAGENET_TRANSFORM); smaller ones here, which the course's padded
    # stem and blocks take as well (a 1x1 map stays 1x1), for speed
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=gen)


LOGITS_HINT = (f"forward is {STEM_TEXT}; then the residual groups in order; then the average over H and W and the "
               "Linear, returning logits (no softmax). In eval mode every BatchNorm uses its running statistics.")


def own_frames(traceback: str) -> str:
    """The traceback's frames in the submission's own code (torch's internals left out), each ending a line."""
    kept, keep = [], False
    for line in traceback.splitlines():
        if line.startswith("  File "):
            keep = "site-packages" not in line and "/torch/" not in line
        elif not line.startswith(" "):
            keep = False  # the final "Error: message" line: already in the message
        if keep:
            kept.append(line)
    return "".join(f"{line}\n" for line in kept)


def call_model(sandbox, handle, x: torch.Tensor, what: str, layout: Layout | None = None):
    """Call the model; an exception is explained by the structure when that is wrong."""
    try:
        return sandbox.call(handle, x, no_grad=True)
    except SubmissionRaised as error:
        if layout is not None and layout.problems:
            fail(f"{what} raised {error.type_name}: {error.message}\nThe cause is probably its structure: "
                 f"{layout.report()}")
        fail(f"{what} raised {error.type_name}: {error.message}\n{own_frames(error.traceback)}A ResNet34 accepts any "
             "(B, 3, H, W) image batch with H, W >= 1: the stem (7x7 conv, stride 2, padding 3; 3x3 max pool, "
             "stride 2, padding 1) and every 3x3 conv (padding 1) turn a size-1 map into a size-1 map, and the "
             "average pool removes H and W before the Linear")


# ---- checks ----------------------------------------------------------------------------------------

def test_resnet34_default_architecture(sandbox):
    """ResNet34(): 7x7 stem, [3, 4, 6, 3] blocks of [64, 128, 256, 512] channels, Linear(512, 1000)."""
    handle = construct(sandbox, DEFAULT, "default")
    layout, entries = layout_of(sandbox, handle, DEFAULT)
    if layout.problems:
        fail(f"ResNet34() does not have torchvision's resnet34 architecture: {layout.report()}")
    assert_equal(parameter_count(entries), DEFAULT_PARAMETERS, "number of parameters of ResNet34()",
                 hint="torchvision's resnet34 has 21,797,672 parameters")
    assert_equal(len(entries), DEFAULT_ENTRIES, "number of state_dict entries of ResNet34()",
                 hint="110 parameters and 108 buffers (running_mean, running_var, num_batches_tracked of 36 "
                      "BatchNorms), like torchvision's resnet34")
    frozen = [e.name for e in entries if e.kind == "parameter" and not e.requires_grad]
    if frozen:
        fail(f"ResNet34() has parameters that do not require grad: {', '.join(frozen[:5])}"
             f"{' ...' if len(frozen) > 5 else ''}; a freshly built model trains all of them")


@given(config=configs(), how=CONSTRUCTIONS)
def test_resnet34_configuration_honoured(sandbox, config, how):
    """Every constructor argument is used (blocks per group, widths, first strides, n_classes), by position or name."""
    handle = construct(sandbox, config, how)
    layout, entries = layout_of(sandbox, handle, config)
    if layout.problems:
        fail(f"{config} (constructed {'by keyword' if how == 'keyword' else 'positionally'}) does not match the "
             f"reference built the same way: {layout.report()}")
    expected = parameter_count(reference_entries(config))
    assert_equal(parameter_count(entries), expected, f"number of parameters of {config}")
    assert_equal(len(entries), len(reference_entries(config)), f"number of state_dict entries of {config}")


@given(config=configs(), batch=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12))
def test_resnet34_output_shape(sandbox, config, batch, h, w):
    """A (B, 3, H, W) batch of any size H, W >= 1 gives logits of shape (B, n_classes)."""
    handle = construct(sandbox, config)
    set_mode(sandbox, handle, False)
    x = images(batch, h, w, seed=h * 100 + w)
    what = f"{config} in eval mode on an input of shape {tuple(x.shape)}"
    got = tensor_of(call_model(sandbox, handle, x, what), what)
    assert_equal(tuple(got.shape), (batch, config.n_classes), f"output shape of {what}",
                 hint="the average pool gives (B, last width) whatever H and W are, and the final "
                      "Linear(last width, n_classes) maps it to (B, n_classes)")


@given(config=configs(), batch=st.integers(1, 2), h=st.integers(5, 12), w=st.integers(5, 12), seed=SEEDS)
def test_resnet34_eval_logits_match_reference(sandbox, config, batch, h, w, seed):
    """Eval mode, same random state: the logits equal the reference ResNet34's (stem, strides, pooling, head)."""
    handle = construct(sandbox, config)
    layout, _ = layout_of(sandbox, handle, config)
    oracle = reference_model(config)
    same_state(sandbox, handle, layout, oracle, seed, "compare its logits with the reference's")
    set_mode(sandbox, handle, False)
    oracle.eval()
    x = images(batch, h, w, seed)
    what = f"{config} in eval mode on an input of shape {tuple(x.shape)} (same state as the reference)"
    got = tensor_of(call_model(sandbox, handle, x, what, layout), what)
    with torch.no_grad():
        expected = oracle(x)
    try:
        assert_close(got, expected, f"logits of {what}")
    except CheckFailure:  # which usual mistake it is: worked out only for logits that differ
        hint = diagnose_network(got, oracle, x, expected) if got.shape == expected.shape else ""
        assert_close(got, expected, f"logits of {what}", hint=hint or LOGITS_HINT)


@given(config=configs(), batch=st.integers(2, 3), h=st.integers(5, 10), w=st.integers(5, 10), seed=SEEDS)
def test_resnet34_eval_batch_independent(sandbox, config, batch, h, w, seed):
    """Eval mode: each image's logits are the same alone as inside a batch, and a second call changes nothing."""
    handle = construct(sandbox, config)
    layout, _ = layout_of(sandbox, handle, config)
    if not layout.problems:  # a trained-looking state; the default one (zero means, unit variances) would do too
        oracle = reference_model(config)
        load_state(sandbox, handle, layout.submission_state(random_state(oracle, seed)), layout.what)
    set_mode(sandbox, handle, False)
    x = images(batch, h, w, seed)
    what = f"{config} in eval mode"
    together = tensor_of(call_model(sandbox, handle, x, what, layout), what)
    hint = ("in eval mode a model treats every image on its own: each BatchNorm normalises with its running "
            "statistics (never the batch's), and nothing mixes the images of a batch (a softmax or mean over dim 0); "
            "check that model.eval() reaches every BatchNorm (modules kept in a plain Python list are not "
            "registered, so .eval() and .state_dict() never see them)")
    for i in range(batch):
        alone = tensor_of(call_model(sandbox, handle, x[i:i + 1], what, layout), what)
        assert_close(alone, together[i:i + 1], f"logits of image {i} alone (shape {tuple(x[i:i + 1].shape)}) "
                     f"compared with its row in the batch of shape {tuple(x.shape)}, {what}",
                     **BATCH_ROW.at(float(together.abs().max())), hint=hint)
    again = tensor_of(call_model(sandbox, handle, x, what, layout), what)
    assert_close(again, together, f"logits of the same batch computed a second time, {what}",
                 **REPEAT.at(float(together.abs().max())), hint=hint)


def test_resnet34_repr(sandbox):
    """print(ResNet34()) and print(ResNet34(...small configuration...)) work."""
    for config in (DEFAULT, Config((1, 1, 1, 1), (8, 16, 16, 8), (1, 2, 1, 2), 5)):
        printable(sandbox, construct(sandbox, config, "default"), str(config))


def test_resnet34_is_built_not_borrowed(sandbox):
    """ResNet34's forward runs the submission's own code, not torchvision's model (which is only the weights' source)."""
    handle = construct(sandbox, DEFAULT, "default")
    set_mode(sandbox, handle, False)
    x = images(1, 16, 16, seed=0)
    try:
        _, borrowed = sandbox.call(handle, x, no_grad=True, provenance=True)
    except SubmissionRaised as error:
        fail(f"ResNet34() in eval mode on an input of shape {tuple(x.shape)} raised {error.type_name}: "
             f"{error.message}\n{own_frames(error.traceback)}")
    if borrowed:
        fail(f"ResNet34()'s forward runs torchvision's own model code ({', '.join(sorted(borrowed)[:6])}): the "
             "exercise is to build ResNet34 from your own ResidualBlock and BlockGroup, in the same order as "
             "torchvision's so its weights can be copied in; torchvision's resnet34 is only where the pretrained "
             "weights come from (get_resnet_for_feature_extraction)")
