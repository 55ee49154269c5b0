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

import functools
from dataclasses import dataclass, field

import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from conformance.areas import area, requires
from conformance.compare import BATCH_ROW, REPEAT, CheckFailure, assert_close, assert_equal, fail, tensor_of
from conformance.diagnosis import diagnose_network
from conformance.probing import Entry, load_state, parameter_count, printable, set_mode, state_entries
from conformance.strategies import SEEDS
from conformance.structure import entries_of, find_units, group_layout, pair_units, random_state, split_blocks
from under_test.sandbox import SubmissionRaised

pytestmark = [area("resnet34"), requires("ResNet34")]

STEM_WIDTH = 64
DEFAULT_PARAMETERS = 21_797_672
DEFAULT_ENTRIES = 218
# torchvision's names for a block's parts (the keys `conformance.structure` maps to) -> the reference's.
REFERENCE_ROLE = {"conv1": "left.0", "bn1": "left.1", "conv2": "left.3", "bn2": "left.4",
                  "downsample.0": "right.0", "downsample.1": "right.1"}
STEM_TEXT = "the stem: Conv2d(3, 64, kernel_size=7, stride=2, padding=3), BatchNorm2d(64), ReLU, " \
            "MaxPool2d(kernel_size=3, stride=2, padding=1)"


@dataclass(frozen=True)
class Config:
    """The four constructor arguments of ResNet34."""

    n_blocks: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    n_classes: int

    def arguments(self) -> list:
        return [list(self.n_blocks), list(self.widths), list(self.strides), self.n_classes]

    def in_features(self, group: int) -> int:
        return STEM_WIDTH if group == 0 else self.widths[group - 1]

    def __str__(self) -> str:
        if self == DEFAULT:
            return "ResNet34()"
        return (f"ResNet34({list(self.n_blocks)}, {list(self.widths)}, {list(self.strides)}, "
                f"n_classes={self.n_classes})")


DEFAULT = Config((3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2), 1000)


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


def reference_model(config: Config) -> torch.nn.Module:
    torch.manual_seed(0)
    return reference.ResNet34(*config.arguments())


@functools.lru_cache(maxsize=64)
def reference_entries(config: Config) -> tuple[Entry, ...]:
    """The reference's state_dict built this way (only names, kinds and shapes are used). The default one is built on
    the meta device, without its 0.1 s of initialisation; a small one builds quicker on the CPU."""
    if config == DEFAULT:
        with torch.device("meta"):
            return tuple(entries_of(reference.ResNet34(*config.arguments())))
    return tuple(entries_of(reference_model(config)))


# ---- the submission's state_dict, read by role ---------------------------------------------------

@dataclass
class NetLayout:
    """How a submission's ResNet34 lines up, role by role, with the reference built the same way."""

    what: str
    mapping: dict[str, str] = field(default_factory=dict)  # submission key -> reference key
    problems: list[str] = field(default_factory=list)

    def report(self, limit: int = 4) -> str:
        shown = "; ".join(self.problems[:limit])
        more = len(self.problems) - limit
        return shown + (f"; and {more} more problem{'s' if more > 1 else ''} like these" if more > 0 else "")

    def require_loadable(self, doing: str) -> None:
        if self.problems:
            fail(f"cannot {doing}: the parameters of {self.what} do not line up with a ResNet34 built this way: "
                 f"{self.report()}")

    def submission_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: state[target] for key, target in self.mapping.items()}


def _describe_conv(shape: tuple[int, ...]) -> str:
    return f"{shape[2]}x{shape[3]} {shape[1]}->{shape[0]}"


def network_layout(entries: list[Entry], config: Config, what: str | None = None) -> NetLayout:
    """Recognise the stem, the residual groups and the head in the submission's state_dict."""
    what = what or str(config)
    layout = NetLayout(what)
    ref = {e.name: e for e in reference_entries(config)}
    convs, norms, stray = find_units(entries)
    norm_of, left_over = pair_units(convs, norms)
    problems = layout.problems

    # The stem: the one convolution reading the 3-channel image, then its BatchNorm.
    stem_ids = [i for i, conv in enumerate(convs) if conv.shape[1] == 3]
    explained: set[str] = set()  # entries of the residual groups, whose problems group_layout reports
    if not stem_ids:
        problems.append(f"no convolution reads the 3-channel image; expected {STEM_TEXT}")
    else:
        stem = convs[stem_ids[0]]
        if stem.shape != (STEM_WIDTH, 3, 7, 7):
            problems.append(f"the stem's convolution (`{stem.prefix}`) is {stem.describe()}; expected 7x7 3->64 "
                            f"(stride 2, padding 3): {STEM_TEXT}")
        if stem.extra:
            problems.append(f"the stem's convolution (`{stem.prefix}`) also registers "
                            f"{', '.join(e.name for e in stem.extra)}; the convs of a ResNet have no bias")
        layout.mapping[stem.weight.name] = "in_layers.0.weight"
        norm = norm_of.get(stem_ids[0])
        if norm is None:
            problems.append(f"the stem's convolution (`{stem.prefix}`) is not followed by a BatchNorm2d(64): "
                            f"{STEM_TEXT}")
        else:
            for leaf, entry in norm.leaves.items():
                layout.mapping[entry.name] = f"in_layers.1.{leaf}"

    # The residual groups: consecutive blocks, as many as n_blocks_per_group says.
    rest = [i for i in range(len(convs)) if i not in stem_ids[:1]]
    expected_blocks = sum(config.n_blocks)
    blocks = split_blocks([convs[i] for i in rest], expected_blocks)
    if len(blocks) != expected_blocks:
        described = ", ".join("[" + ", ".join(convs[rest[k]].describe() for k in block) + "]" for block in blocks)
        problems.append(f"{len(blocks)} residual block{'s' if len(blocks) != 1 else ''} after the stem "
                        f"({described or 'no convolutions'}); expected {expected_blocks}: groups of "
                        f"{list(config.n_blocks)} blocks with {list(config.widths)} channels"
                        + ("; the blocks' parameters are not in the state_dict at all: a module kept in a plain "
                           "Python list or dict is not registered (use Sequential or nn.ModuleList), so "
                           "state_dict(), .eval() and the optimizer never see it" if not blocks else ""))
    else:
        position = {e.name: k for k, e in enumerate(entries)}
        start = 0
        for g, (n, width, stride) in enumerate(zip(config.n_blocks, config.widths, config.strides)):
            ids = [rest[k] for block in blocks[start:start + n] for k in block]
            start += n
            names = set()
            for i in ids:
                names.update(e.name for e in convs[i].entries())
                if i in norm_of:
                    names.update(e.name for e in norm_of[i].entries())
            members = sorted((e for e in entries if e.name in names), key=lambda e: position[e.name])
            in_feats = config.in_features(g)
            group = group_layout(members, n, in_feats, width, stride,
                                 what=f"residual group {g} [BlockGroup({n}, {in_feats}, {width}, {stride})]")
            problems.extend(group.problems)
            if group.mismatched and not group.problems:
                problems.append(f"residual group {g}: entries of the wrong shape: {', '.join(group.mismatched)}")
            if group.unmapped and not group.problems:
                problems.append(f"residual group {g}: entries with no counterpart: {', '.join(group.unmapped)}")
            explained.update(names)
            for key, target in group.mapping.items():
                block, _, inside = target.partition(".")
                role, _, leaf = inside.rpartition(".")
                layout.mapping[key] = f"residual_layers.{g}.blocks.{block}.{REFERENCE_ROLE[role]}.{leaf}"

    # The head: a Linear(last width, n_classes), its weight and bias.
    last = config.widths[-1]
    weights = [e for e in stray if e.tensor.ndim == 2]
    if len(weights) != 1:
        found = ", ".join(f"`{e.name}` {tuple(e.tensor.shape)}" for e in weights)
        problems.append(f"expected one final Linear({last}, {config.n_classes}) (average pool, then Linear), found "
                        f"{len(weights)} 2-D weights{': ' + found if found else ''}")
    else:
        weight = weights[0]
        if tuple(weight.tensor.shape) != (config.n_classes, last):
            problems.append(f"the final Linear's weight `{weight.name}` has shape {tuple(weight.tensor.shape)}; "
                            f"expected ({config.n_classes}, {last}) for Linear({last}, n_classes={config.n_classes}): "
                            "use the n_classes argument and the last group's width")
        layout.mapping[weight.name] = "out_layers.1.weight"
        prefix = weight.name.rpartition(".")[0]
        bias = [e for e in stray if e.name.rpartition(".")[0] == prefix and e.tensor.ndim == 1]
        if len(bias) != 1:
            problems.append(f"the final Linear (`{prefix}`) has no bias; expected one of shape ({config.n_classes},)")
        else:
            layout.mapping[bias[0].name] = "out_layers.1.bias"
    for norm in left_over:
        problems.append(f"a BatchNorm at `{norm.prefix}` follows no convolution")

    mapped = set(layout.mapping.values())
    unmapped = [e for e in entries if e.name not in layout.mapping and e.name not in explained]
    if unmapped:
        problems.append("state_dict entries with no counterpart in a ResNet34: "
                        + ", ".join(f"`{e.name}` {tuple(e.tensor.shape)}" for e in unmapped))
    absent = [key for key in ref if key not in mapped]
    if absent and not problems:
        problems.append("nothing stands for the reference's " + ", ".join(f"`{k}`" for k in absent))
    by_name = {e.name: e for e in entries}
    for key, target in layout.mapping.items():
        mine, theirs = by_name[key], ref.get(target)
        if theirs is None:
            continue
        if tuple(mine.tensor.shape) != tuple(theirs.tensor.shape) and not problems:
            problems.append(f"`{key}` has shape {tuple(mine.tensor.shape)}; expected {tuple(theirs.tensor.shape)}")
        if mine.kind != theirs.kind and target.startswith(("in_layers.", "out_layers.")):  # groups: group_layout
            problems.append(f"`{key}` is a {mine.kind}; expected a {theirs.kind}"
                            + (" (register it with register_buffer)" if theirs.kind == "buffer" else
                               " (wrap it in nn.Parameter)"))
    layout.problems = list(dict.fromkeys(problems))
    return layout


def layout_of(sandbox, handle, config: Config) -> tuple[NetLayout, list[Entry]]:
    entries = state_entries(sandbox, handle, str(config))
    return network_layout(entries, config), entries


def same_state(sandbox, handle, layout: NetLayout, oracle: torch.nn.Module, seed: int, doing: str) -> None:
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


def call_model(sandbox, handle, x: torch.Tensor, what: str, layout: NetLayout | None = None):
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
