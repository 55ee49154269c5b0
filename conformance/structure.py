"""What a residual block, a group of blocks or a whole ResNet34 is made of, read from its state_dict alone (never from
attribute names).

Learners name their submodules freely (`left`/`right`, `left_branch`, `seq`, `conv1`, ...),
so the harness recognises the pieces by what they hold:

* a *conv unit* is a module prefix (``name.rpartition('.')[0]``) with a 4-D ``weight``;
* a *BatchNorm unit* is a prefix with 1-D ``weight`` and ``bias`` and ``running_mean`` /
  ``running_var`` (and, as in torch, ``num_batches_tracked``);
* the k-th conv is paired with the k-th BatchNorm, in order of first appearance (when a
  conv has no BatchNorm of its own, each BatchNorm goes to the closest conv before it);
* inside a block, the 1x1 conv is the projection and the two 3x3 convs, in order, are the
  left branch's first and second conv;
* in a BlockGroup the blocks are told apart by the module tree (the deepest level whose
  groups each still hold two non-1x1 convs: the blocks, whatever they are called) or, when
  that does not give the expected count, by the roles (two 3x3 convs per block, plus a 1x1
  projection before or after them).

From the roles it builds the mapping from the submission's state_dict keys to the keys of
the oracle, torchvision's own ``BasicBlock`` (``conv1``, ``bn1``, ``conv2``, ``bn2``,
``downsample.0``, ``downsample.1``), or an ``nn.Sequential`` of them for a BlockGroup, so
a check can load the SAME state into both. Whatever does not fit is reported as a problem
in learner-readable words (which convolution is missing, which one is extra, and why).

A whole ResNet34 (`network_layout`) is read the same way against the reference built with
the same arguments: the stem is the convolution reading the 3-channel image, the residual
groups are split as `n_blocks_per_group` says (each read as a group), the head is the one
2-D weight and its bias. Every layout is a `Layout`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock

import reference

from .compare import fail
from .probing import Entry

NORM_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
ROLES = ("conv1", "bn1", "conv2", "bn2", "proj", "bnp")
ORACLE_PREFIX = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2",
                 "proj": "downsample.0", "bnp": "downsample.1"}
ROLE_WORDS = {
    "conv1": "the left branch's first conv",
    "bn1": "the left branch's first BatchNorm",
    "conv2": "the left branch's second conv",
    "bn2": "the left branch's last BatchNorm",
    "proj": "the projection's 1x1 conv",
    "bnp": "the projection's BatchNorm",
}
NORM_OF = {"conv1": "bn1", "conv2": "bn2", "proj": "bnp"}


# ---- the rule and the oracle ------------------------------------------------------------

def projects(in_feats: int, out_feats: int, stride: int) -> bool:
    """The right branch is a projection exactly when the block changes the shape."""
    return not (stride == 1 and in_feats == out_feats)


def projection_reason(in_feats: int, out_feats: int, stride: int) -> str:
    reasons = (["first_stride > 1"] if stride != 1 else []) + \
        (["in_feats != out_feats"] if in_feats != out_feats else [])
    return " and ".join(reasons)


def oracle_block(in_feats: int, out_feats: int, stride: int = 1) -> BasicBlock:
    """torchvision's BasicBlock, with the downsample branch exactly when the rule asks for one."""
    downsample = None
    if projects(in_feats, out_feats, stride):
        downsample = nn.Sequential(nn.Conv2d(in_feats, out_feats, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_feats))
    return BasicBlock(in_feats, out_feats, stride, downsample)


def oracle_group(n_blocks: int, in_feats: int, out_feats: int, stride: int = 1) -> nn.Sequential:
    """What a BlockGroup is: only the first block strides and may project."""
    return nn.Sequential(oracle_block(in_feats, out_feats, stride),
                         *[oracle_block(out_feats, out_feats, 1) for _ in range(n_blocks - 1)])


@functools.lru_cache(maxsize=512)
def _oracle_entries(n_blocks: int | None, in_feats: int, out_feats: int, stride: int) -> dict[str, Entry]:
    """The oracle's state_dict entries (only their names, kinds and shapes are used), built once per arguments."""
    module = oracle_block(in_feats, out_feats, stride) if n_blocks is None else \
        oracle_group(n_blocks, in_feats, out_feats, stride)
    return {e.name: e for e in entries_of(module)}


def entries_of(module: nn.Module) -> list[Entry]:
    """A harness-side module's state_dict as `Entry`s (the oracle's, or a test's module)."""
    parameters = dict(module.named_parameters(remove_duplicate=False))
    buffers = dict(module.named_buffers(remove_duplicate=False))
    return [Entry(name, "parameter" if name in parameters else "buffer" if name in buffers else "other",
                  value.detach(), bool(value.requires_grad))
            for name, value in module.state_dict(keep_vars=True).items()]


def random_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A random state for an oracle: conv weights of O(1/sqrt(fan_in)), BatchNorm affine of
    either sign, non-zero running_mean, positive and varied running_var, a small count."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low

    state = {}
    for key, value in module.state_dict().items():
        leaf = key.rpartition(".")[2]
        shape = tuple(value.shape)
        if value.ndim == 4:
            bound = 1.5 / math.sqrt(shape[1] * shape[2] * shape[3])
            new = uniform(shape, -bound, bound)
        elif leaf == "weight":
            sign = torch.where(torch.rand(shape, generator=gen) < 0.25, -1.0, 1.0).to(torch.float64)
            new = uniform(shape, 0.5, 1.5) * sign
        elif leaf == "bias":
            new = uniform(shape, -1.0, 1.0)
        elif leaf == "running_mean":
            new = uniform(shape, -1.0, 1.0)
        elif leaf == "running_var":
            new = uniform(shape, 0.25, 2.0)
        elif leaf == "num_batches_tracked":
            state[key] = torch.randint(0, 20, (), generator=gen, dtype=value.dtype)
            continue
        else:
            new = uniform(shape, -1.0, 1.0)
        state[key] = new.to(value.dtype)
    return state


# ---- units --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvUnit:
    prefix: str
    weight: Entry
    extra: tuple[Entry, ...]  # anything else registered beside the weight (a bias, ...)
    position: int  # index of its first entry in the state_dict

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.tensor.shape)

    @property
    def kernel(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    def describe(self) -> str:
        out, inp, kh, kw = self.shape
        return f"{kh}x{kw} {inp}->{out}"

    def entries(self) -> list[Entry]:
        return [self.weight, *self.extra]


@dataclass(frozen=True)
class NormUnit:
    prefix: str
    leaves: dict[str, Entry]
    position: int

    @property
    def size(self) -> int:
        return self.leaves["weight"].tensor.numel()

    def describe(self) -> str:
        return f"BatchNorm({self.size})"

    def entries(self) -> list[Entry]:
        return list(self.leaves.values())


def where(prefix: str) -> str:
    return f"`{prefix}`" if prefix else "the module itself"


def find_units(entries: list[Entry]) -> tuple[list[ConvUnit], list[NormUnit], list[Entry]]:
    """Conv units, BatchNorm units (each in order of first appearance) and the entries that are neither."""
    groups: dict[str, list[tuple[int, str, Entry]]] = {}
    for position, entry in enumerate(entries):
        prefix, _, leaf = entry.name.rpartition(".")
        groups.setdefault(prefix, []).append((position, leaf, entry))
    convs, norms, stray = [], [], []
    for prefix, members in groups.items():
        leaves = {leaf: entry for _, leaf, entry in members}
        first = members[0][0]
        weight = leaves.get("weight")
        if weight is not None and weight.tensor.ndim == 4:
            convs.append(ConvUnit(prefix, weight, tuple(e for leaf, e in leaves.items() if leaf != "weight"), first))
        elif (weight is not None and weight.tensor.ndim == 1 and "bias" in leaves
              and "running_mean" in leaves and "running_var" in leaves):
            norms.append(NormUnit(prefix, {leaf: e for leaf, e in leaves.items() if leaf in NORM_LEAVES}, first))
            stray.extend(e for leaf, e in leaves.items() if leaf not in NORM_LEAVES)
        else:
            stray.extend(leaves.values())
    return convs, norms, stray


def pair_units(convs: list[ConvUnit], norms: list[NormUnit]) -> tuple[dict[int, NormUnit], list[NormUnit]]:
    """conv index -> its BatchNorm, and the BatchNorms left over.

    As many BatchNorms as convs: the k-th goes with the k-th. Otherwise (a conv without its
    BatchNorm) each BatchNorm goes with the closest conv before it that has none yet.
    """
    if len(convs) == len(norms):
        return dict(enumerate(norms)), []
    paired: dict[int, NormUnit] = {}
    left_over = []
    for norm in norms:
        before = [i for i, conv in enumerate(convs) if conv.position < norm.position and i not in paired]
        if before:
            paired[max(before, key=lambda i: convs[i].position)] = norm
        else:
            left_over.append(norm)
    return paired, left_over


def split_blocks(convs: list[ConvUnit], n_blocks: int | None = None) -> list[list[int]]:
    """Conv indices per block, in order.

    Two readings, and the one that finds `n_blocks` blocks wins (else the first):
    * by the module tree: the deepest prefix depth at which every group still holds two or
      more convs that are not 1x1 (a block's submodules hold fewer, the group's container holds
      all); this is what the learner's own modules say, whatever the kernels;
    * by roles: two 3x3 convs per block, with at most one 1x1 projection before or after them.
    """
    readings = [_split_by_tree(convs), _split_by_roles(convs)]
    for reading in readings:
        if reading is not None and len(reading) == n_blocks:
            return reading
    return next(r for r in readings if r is not None)


def _split_by_tree(convs: list[ConvUnit]) -> list[list[int]] | None:
    paths = [c.prefix.split(".") if c.prefix else [] for c in convs]
    best = None
    for depth in range(0, max((len(p) for p in paths), default=0) + 1):
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, path in enumerate(paths):
            groups.setdefault(tuple(path[:depth]), []).append(i)
        if all(sum(1 for i in members if convs[i].kernel != (1, 1)) >= 2 for members in groups.values()):
            best = list(groups.values())
        else:
            break
    return best


def _split_by_roles(convs: list[ConvUnit]) -> list[list[int]]:
    blocks: list[list[int]] = []
    current: list[int] = []
    for i, conv in enumerate(convs):
        threes = sum(1 for j in current if convs[j].kernel != (1, 1))
        has_one = any(convs[j].kernel == (1, 1) for j in current)
        if conv.kernel == (1, 1):
            if not has_one and threes in (0, 2):
                current.append(i)
                continue
        elif threes < 2:
            current.append(i)
            continue
        blocks.append(current)
        current = [i]
    if current:
        blocks.append(current)
    return blocks


# ---- layouts ------------------------------------------------------------------------------

@dataclass
class BlockRoles:
    """One residual block of the submission: its units by role."""

    index: int
    in_feats: int
    out_feats: int
    stride: int
    convs: list[ConvUnit]
    units: dict[str, ConvUnit | NormUnit] = field(default_factory=dict)

    def describe_convs(self) -> str:
        return "[" + ", ".join(c.describe() for c in self.convs) + "]"

    def prefix(self, role: str) -> str | None:
        unit = self.units.get(role)
        return None if unit is None else unit.prefix


@dataclass
class Layout:
    """How a submission's block, group of blocks (`block_layout`, `group_layout`) or whole ResNet34
    (`network_layout`) lines up, role by role, with the oracle built the same way."""

    what: str
    mapping: dict[str, str]  # submission key -> oracle key
    problems: list[str]
    oracle_name: str = "torchvision's BasicBlock"
    blocks: list[BlockRoles] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # submission keys with no oracle counterpart
    mismatched: list[str] = field(default_factory=list)  # submission keys whose shape differs from the oracle's
    block_count_ok: bool = True
    # A whole network: every problem (of the stem, a group or the head) keeps the same state from being loaded, and a
    # report shows the first few.
    network: bool = False

    REPORTED = 4  # problems a network's report shows

    @property
    def loadable(self) -> bool:
        """The same state can be loaded into the submission and the oracle."""
        if self.network:
            return not self.problems
        return self.block_count_ok and not self.unmapped and not self.mismatched

    def report(self) -> str:
        if not self.network:
            return "; ".join(self.problems)
        more = len(self.problems) - self.REPORTED
        return "; ".join(self.problems[:self.REPORTED]) + (
            f"; and {more} more problem{'s' if more > 1 else ''} like these" if more > 0 else "")

    def require_loadable(self, doing: str) -> None:
        if self.loadable:
            return
        if self.network:
            fail(f"cannot {doing}: the parameters of {self.what} do not line up with {self.oracle_name}: "
                 f"{self.report()}")
        fail(f"cannot {doing}, because the parameters of {self.what} do not line up with those of "
             f"{self.oracle_name}: {self.report() or 'wrong shapes: ' + ', '.join(self.mismatched)}")

    def submission_state(self, oracle_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: oracle_state[target] for key, target in self.mapping.items() if target in oracle_state}

    def role_of(self, key: str) -> str:
        """'`left.1.running_mean` (the left branch's first BatchNorm of block 0)' for messages."""
        target = self.mapping.get(key, "")
        for block in self.blocks:
            for role, unit in block.units.items():
                if any(e.name == key for e in unit.entries()):
                    suffix = f" of block {block.index}" if len(self.blocks) > 1 or block.index else ""
                    return f"`{key}` ({ROLE_WORDS[role]}{suffix}, torchvision's `{target}`)"
        return f"`{key}`"


def _expected_shapes(in_feats: int, out_feats: int) -> dict[str, tuple[int, ...]]:
    return {"conv1": (out_feats, in_feats, 3, 3), "conv2": (out_feats, out_feats, 3, 3),
            "proj": (out_feats, in_feats, 1, 1)}


def _conv_text(shape: tuple[int, ...]) -> str:
    return f"{shape[2]}x{shape[3]} {shape[1]}->{shape[0]}"


def _assign_roles(block: BlockRoles, norm_of: dict[int, NormUnit], conv_ids: list[int], what: str,
                  problems: list[str]) -> None:
    """Give the block's units their roles, adding a problem for each that does not fit."""
    i, o, s = block.in_feats, block.out_feats, block.stride
    want_projection = projects(i, o, s)
    ones = [k for k in conv_ids if block_conv(block, conv_ids, k).kernel == (1, 1)]
    threes = [k for k in conv_ids if block_conv(block, conv_ids, k).kernel == (3, 3)]
    others = [k for k in conv_ids if k not in ones and k not in threes]
    expected = [f"3x3 {i}->{o} (stride {s})", f"3x3 {o}->{o}"] + (
        [f"then a 1x1 projection {i}->{o} with stride {s} followed by BatchNorm"] if want_projection else [])
    shape_of = _expected_shapes(i, o)
    if len(threes) != 2 or len(ones) > 1 or others:
        problems.append(f"{what} has convolutions {block.describe_convs()}; expected {', '.join(expected)}"
                        + (f", because {projection_reason(i, o, s)}" if want_projection else
                           ", and an identity right branch (no parameters), because first_stride == 1 and "
                           "in_feats == out_feats")
                        + (" (the projection is a 1x1 conv with padding 0, not a 3x3 one)"
                           if want_projection and len(threes) == 3 and not ones else ""))
        return
    roles = {"conv1": threes[0], "conv2": threes[1]}
    if ones:
        roles["proj"] = ones[0]
    for role, k in roles.items():
        conv = block_conv(block, conv_ids, k)
        block.units[role] = conv
        norm = norm_of.get(k)
        if norm is not None:
            block.units[NORM_OF[role]] = norm
    if want_projection and not ones:
        problems.append(f"{what} has convolutions {block.describe_convs()}; expected also a 1x1 projection "
                        f"{i}->{o} with stride {s} followed by BatchNorm, because {projection_reason(i, o, s)} "
                        "(the right branch must bring x to the output's shape before the addition)")
    if ones and not want_projection:
        problems.append(f"{what} has convolutions {block.describe_convs()}, including a 1x1 projection at "
                        f"{where(block.prefix('proj'))}; expected an identity right branch (no parameters), because "
                        "first_stride == 1 and in_feats == out_feats: the projection is only for blocks that change "
                        "the shape")
    for role in ("conv1", "conv2", "proj"):
        conv = block.units.get(role)
        if conv is None or (role == "proj" and not want_projection):
            continue
        if conv.shape != shape_of[role]:
            problems.append(f"{ROLE_WORDS[role]} of {what} ({where(conv.prefix)}) is {conv.describe()}; expected "
                            f"{_conv_text(shape_of[role])}")
        if conv.extra:
            names = ", ".join(f"`{e.name}`" for e in conv.extra)
            problems.append(f"{ROLE_WORDS[role]} of {what} ({where(conv.prefix)}) also registers {names}; the "
                            "convs of a ResNet have no bias (the BatchNorm after each one supplies the shift)")
        norm_role = NORM_OF[role]
        norm = block.units.get(norm_role)
        if norm is None:
            follow = (f"; expected the 1x1 conv {i}->{o} then BatchNorm2d({o}) (torchvision's downsample is "
                      "conv1x1 followed by BatchNorm2d)" if role == "proj" else f"; expected BatchNorm2d({o})")
            problems.append(f"{ROLE_WORDS[role]} of {what} ({where(conv.prefix)}, {conv.describe()}) is not "
                            f"followed by a BatchNorm{follow}")
            continue
        if norm.size != o:
            problems.append(f"{ROLE_WORDS[norm_role]} of {what} ({where(norm.prefix)}) has {norm.size} channels; "
                            f"expected {o}")
        missing = [leaf for leaf in NORM_LEAVES if leaf not in norm.leaves]
        if missing:
            problems.append(f"{ROLE_WORDS[norm_role]} of {what} ({where(norm.prefix)}) has no {', '.join(missing)} "
                            "(BatchNorm2d keeps weight, bias, running_mean, running_var and num_batches_tracked)")


def block_conv(block: BlockRoles, conv_ids: list[int], k: int) -> ConvUnit:
    return block.convs[conv_ids.index(k)]


def _map_block(block: BlockRoles, oracle_prefix: str, oracle: dict[str, Entry], layout: Layout) -> None:
    for role, unit in block.units.items():
        base = f"{oracle_prefix}{ORACLE_PREFIX[role]}"
        if isinstance(unit, ConvUnit):
            pairs = [(unit.weight, f"{base}.weight")]
        else:
            pairs = [(entry, f"{base}.{leaf}") for leaf, entry in unit.leaves.items()]
        for entry, target in pairs:
            if target not in oracle:
                continue
            layout.mapping[entry.name] = target
            want = oracle[target]
            if tuple(entry.tensor.shape) != tuple(want.tensor.shape):
                layout.mismatched.append(entry.name)
            elif entry.kind != want.kind:
                layout.problems.append(f"`{entry.name}` is a {entry.kind}; torchvision's `{target}` is a {want.kind}"
                                       + (" (register it with register_buffer)" if want.kind == "buffer" else
                                          " (wrap it in nn.Parameter)"))


def _finish(layout: Layout, entries: list[Entry], oracle: dict[str, Entry], stray: list[Entry]) -> Layout:
    mapped = set(layout.mapping)
    layout.unmapped = [e.name for e in entries if e.name not in mapped]
    if stray:
        layout.problems.append("state_dict entries that are neither a conv's weight nor part of a BatchNorm: "
                               + ", ".join(f"`{e.name}` {tuple(e.tensor.shape)}" for e in stray))
    covered = set(layout.mapping.values())
    absent = [key for key in oracle if key not in covered]
    if absent and not layout.problems:
        layout.problems.append("no counterpart for torchvision's " + ", ".join(f"`{k}`" for k in absent))
    return layout


def block_layout(entries: list[Entry], in_feats: int, out_feats: int, stride: int, what: str | None = None) -> Layout:
    """Line a ResidualBlock's state_dict up with torchvision's BasicBlock for these arguments."""
    what = what or f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    oracle = _oracle_entries(None, in_feats, out_feats, stride)
    convs, norms, stray = find_units(entries)
    norm_of, left_over = pair_units(convs, norms)
    layout = Layout(what, {}, [])
    block = BlockRoles(0, in_feats, out_feats, stride, list(convs))
    layout.blocks.append(block)
    _assign_roles(block, norm_of, list(range(len(convs))), what, layout.problems)
    _report_left_over(left_over, what, layout.problems)
    _map_block(block, "", oracle, layout)
    return _finish(layout, entries, oracle, stray)


def group_layout(entries: list[Entry], n_blocks: int, in_feats: int, out_feats: int, stride: int,
                 what: str | None = None) -> Layout:
    """Line a BlockGroup's state_dict up with an nn.Sequential of torchvision BasicBlocks."""
    what = what or f"BlockGroup({n_blocks}, {in_feats}, {out_feats}, {stride})"
    oracle = _oracle_entries(n_blocks, in_feats, out_feats, stride)
    convs, norms, stray = find_units(entries)
    norm_of, left_over = pair_units(convs, norms)
    layout = Layout(what, {}, [], oracle_name="an nn.Sequential of torchvision BasicBlocks")
    split = split_blocks(convs, n_blocks)
    for index, conv_ids in enumerate(split):
        block_in, block_stride = (in_feats, stride) if index == 0 else (out_feats, 1)
        block = BlockRoles(index, block_in, out_feats, block_stride, [convs[k] for k in conv_ids])
        layout.blocks.append(block)
        block_what = f"block {index} of {what} (expected to be ResidualBlock({block_in}, {out_feats}, {block_stride}))"
        _assign_roles(block, norm_of, conv_ids, block_what, layout.problems)
        if index < n_blocks:
            _map_block(block, f"{index}.", oracle, layout)
    if len(split) != n_blocks:
        layout.block_count_ok = False
        described = "; ".join(f"block {b.index}: {b.describe_convs()}" for b in layout.blocks) or "no convolutions"
        layout.problems.insert(0, f"{what} has {len(split)} residual block{'s' if len(split) != 1 else ''} "
                                  f"({described}); expected {n_blocks}: ResidualBlock({in_feats}, {out_feats}, "
                                  f"{stride}) then {n_blocks - 1} x ResidualBlock({out_feats}, {out_feats}, 1)"
                                  + (UNREGISTERED if not split else ""))
    _report_left_over(left_over, what, layout.problems)
    return _finish(layout, entries, oracle, stray)


UNREGISTERED = ("; the blocks' parameters are not in the state_dict at all: a module kept in a plain Python list or "
                "dict is not registered (use Sequential or nn.ModuleList), so state_dict(), .eval() and the optimizer "
                "never see it")


def _report_left_over(left_over: list[NormUnit], what: str, problems: list[str]) -> None:
    for norm in left_over:
        problems.append(f"{what} has a BatchNorm at {where(norm.prefix)} that follows no convolution")


# ---- a whole ResNet34: the stem, the residual groups, the head ----------------------------------------------------

STEM_WIDTH = 64
# torchvision's names for a block's parts (the keys a group layout maps to) -> the reference ResNet34's.
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


def network_layout(entries: list[Entry], config: Config, what: str | None = None) -> Layout:
    """Recognise the stem, the residual groups and the head in the submission's state_dict."""
    what = what or str(config)
    layout = Layout(what, {}, [], oracle_name="a ResNet34 built this way", network=True)
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
