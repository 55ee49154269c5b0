"""The one declaration of what is graded: areas, their weights, and the rubric items.

docs/interface.md (section 3) fixes the ids, what each area covers and which area decides
which diagnostic item. Checks, reports and the gate all read this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

# The skip reasons of checks that are not graded, by why: the name is missing, or the course gives it.
MISSING, GIVEN = "missing: ", "given: "


@dataclass(frozen=True)
class Area:
    id: str
    covers: str
    weight: float  # points out of 100, shared equally by the area's checks
    items: tuple[str, ...] = ()  # rubric items this area decides with all of its checks


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    must_pass: bool = False


AREAS: dict[str, Area] = {
    area.id: area
    for area in (
        Area("modules", "ReLU, Linear, Flatten, Sequential, SimpleMLP returns logits", 10, ("2",)),
        Area("strided", "as_strided exercises, conv1d/conv2d minimal, pad1d/pad2d, conv1d, conv2d, maxpool2d", 10),
        Area("conv", "the Conv2d module", 8, ("1",)),
        Area("pooling", "MaxPool2d and AveragePool modules", 6),
        Area("batchnorm", "BatchNorm2d parameters, buffers, train/eval behaviour, running statistics", 14, ("6",)),
        Area("residual", "ResidualBlock projection rule and forward, BlockGroup", 14),
        Area("resnet34", "ResNet34 structure: stem, [3,4,6,3] groups, strides, head; output shapes", 12, ("7",)),
        Area("weight_copy", "state_dict order and alignment with torchvision, copy_weights, logits parity", 14, ("7",)),
        Area("feature_extraction", "frozen backbone, replaced head, training only the head", 12, ("8",)),
    )
}

RUBRIC: dict[str, Item] = {
    item.id: item
    for item in (
        Item("1", "locality: one shared filter at every position"),
        Item("2", "classifier returns logits, cross_entropy consumes them"),
        Item("3", "stride > 1 changes the output grid"),
        Item("4", "when the right branch is identity vs projection", must_pass=True),
        Item("5", "the residual path keeps gradients usable"),
        Item("6", "BatchNorm2d train vs eval", must_pass=True),
        Item("7", "declaration order for copying torchvision weights", must_pass=True),
        Item("8", "only the new head trains in feature extraction", must_pass=True),
    )
}

GATE_MIN_ITEMS = 6


@dataclass(frozen=True)
class Branch:
    """A remediation branch of the teaching material's diagnostic gate: what a learner who missed its items rereads."""

    name: str
    items: tuple[str, ...]
    material: str  # the part of the teaching material to revisit
    reference: tuple[str, ...]  # the parts of `reference/` to read next to it


#: The gate's remediation: the teaching material's four branches, and item 2's logits card.
REMEDIATION: tuple[Branch, ...] = (
    Branch("locality", ("1", "3"), "toy-problem frames 1 to 3 (the shifted digit) and the conv shape card, until "
           "locality and weight reuse come back in one sentence",
           ("reference/conv.py: Conv2d", "reference/strided.py: conv2d, maxpool2d (stride and padding)")),
    Branch("logits and cross-entropy", ("2",), "the classifier card: the last module returns logits, and "
           "F.cross_entropy applies the log-softmax itself", ("reference/modules.py: Linear, SimpleMLP",)),
    Branch("optimisation", ("4", "5"), "the residual misconception panel and the stable-depth column, until the "
           "identity path reads as an optimisation route, not decoration",
           ("reference/resnet.py: ResidualBlock (the projection rule), BlockGroup",)),
    Branch("mode or fidelity", ("6", "7"), "the BatchNorm card and the weight-copy notes, until train vs eval and "
           "the sensitivity to declaration order are crisp",
           ("reference/batchnorm.py: BatchNorm2d", "reference/resnet.py: ResNet34 (declaration order)",
            "reference/given.py: copy_weights")),
    Branch("transfer", ("8",), "the transfer payoff and primitive 6, until the frozen backbone and the replacement "
           "head can be named cleanly", ("reference/resnet.py: get_resnet_for_feature_extraction",)),
)
assert sorted(i for b in REMEDIATION for i in b.items) == sorted(RUBRIC)

# Blame the root cause. Every part a composite is built from, with the area where its bugs are charged: the building
# blocks, then the composites of the chain ResidualBlock -> BlockGroup -> ResNet34 -> copy_weights ->
# get_resnet_for_feature_extraction, each built from the parts before it. When a composite's check fails, it is graded
# again with the submission's own parts replaced by trusted ones (`under_test.trusted`), those whose own area failed:
# all together, then one at a time in this order to name the culprit; if it passes then, the part is to blame.
BUILDING_BLOCKS: dict[str, str] = {
    "ReLU": "modules", "Linear": "modules", "Flatten": "modules", "Sequential": "modules",
    "conv2d": "strided", "maxpool2d": "strided",
    "Conv2d": "conv", "MaxPool2d": "pooling", "AveragePool": "pooling", "BatchNorm2d": "batchnorm",
}
CHAIN: dict[str, str] = {"ResidualBlock": "residual", "BlockGroup": "residual", "ResNet34": "resnet34",
                         "copy_weights": "weight_copy", "get_resnet_for_feature_extraction": "feature_extraction"}
# Each part -> the areas that judge it, its own first: the weight copy also judges the declaration order of ResNet34
# and of the blocks inside it (what copy_weights relies on), which their own areas, judging behaviour, do not see.
PARTS: dict[str, tuple[str, ...]] = {
    **{name: (area_id,) for name, area_id in {**BUILDING_BLOCKS, **CHAIN}.items()},
    **{name: (CHAIN[name], "weight_copy") for name in ("ResidualBlock", "BlockGroup", "ResNet34")},
}


def _built_from(area_id: str) -> tuple[str, ...]:
    """The chain's parts below the area's own, after every building block."""
    chain = list(CHAIN)
    own = next(i for i, name in enumerate(chain) if CHAIN[name] == area_id)
    return (*BUILDING_BLOCKS, *chain[:own])


# The areas whose checks judge something built from parts of other areas, and those parts (leaves first): the course's
# older Conv2d and MaxPool2d call the learner's own conv2d / maxpool2d.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "conv": ("conv2d",),
    "pooling": ("maxpool2d",),
    **{area_id: _built_from(area_id) for area_id in ("residual", "resnet34", "weight_copy", "feature_extraction")},
}
assert COMPOSITES["feature_extraction"][-2:] == ("ResNet34", "copy_weights")

assert abs(sum(a.weight for a in AREAS.values()) - 100) < 1e-9


# ---- markers: how a check says what it belongs to --------------------------------------

def area(area_id: str) -> pytest.MarkDecorator:
    """`pytestmark = area("conv")` at the top of a check module."""
    if area_id not in AREAS:
        raise ValueError(f"unknown area {area_id!r}; the areas are {', '.join(AREAS)}")
    return pytest.mark.area(area_id)


def item(*item_ids: str) -> pytest.MarkDecorator:
    """A check that also decides rubric items beyond its area's own (e.g. the stride checks, item 3)."""
    unknown = [i for i in item_ids if i not in RUBRIC]
    if unknown:
        raise ValueError(f"unknown rubric items {unknown}")
    return pytest.mark.item(*item_ids)


def requires(*names: str) -> pytest.MarkDecorator:
    """The submission's names a check exercises: missing or stub names make it `missing`."""
    return pytest.mark.requires(*names)


def items_of(area_id: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(dict.fromkeys(AREAS[area_id].items + tuple(extra)))
