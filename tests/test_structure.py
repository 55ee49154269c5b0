"""conformance.structure: residual blocks recognised by what they hold, never by attribute names.

Each layout is judged by what matters to the checks: its problems (in learner-readable words)
and, when it is loadable, that the SAME random state loaded into the module and into
torchvision's oracle gives the same output.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conformance.probing import parameter_count
from conformance.structure import (
    DEFAULT,
    Config,
    block_layout,
    entries_of,
    find_units,
    group_layout,
    oracle_block,
    oracle_group,
    network_layout,
    pair_units,
    projects,
    random_state,
    reference_model,
    split_blocks,
)
from reference.resnet import BlockGroup, ResidualBlock

BLOCK_ARGS = [(3, 3, 1), (3, 4, 1), (4, 4, 2), (2, 5, 3), (1, 1, 3)]


def same_output(module: nn.Module, oracle: nn.Module, layout, seed: int = 0, train: bool = False) -> None:
    """Load one random state into both; their outputs (and, in train mode, running buffers) agree."""
    assert layout.loadable, layout.report()
    state = random_state(oracle, seed)
    oracle.load_state_dict(state)
    missing, unexpected = module.load_state_dict(layout.submission_state(state), strict=False)
    assert not unexpected
    assert not [k for k in missing if not k.endswith("num_batches_tracked")], missing
    in_channels = next(v for k, v in oracle.state_dict().items() if v.ndim == 4).shape[1]
    x = torch.linspace(-2, 2, 2 * in_channels * 5 * 6).reshape(2, in_channels, 5, 6)
    module.train(train)
    oracle.train(train)
    with torch.no_grad():
        torch.testing.assert_close(module(x), oracle(x))


# ---- the rule and the oracle ----------------------------------------------------------------

@pytest.mark.parametrize("args", BLOCK_ARGS)
def test_oracle_block_projects_exactly_when_the_shape_changes(args):
    block = oracle_block(*args)
    assert (block.downsample is not None) == projects(*args) == (args[0] != args[1] or args[2] != 1)
    if block.downsample is not None:
        conv, norm = block.downsample
        assert conv.kernel_size == (1, 1) and conv.stride == (args[2], args[2]) and conv.bias is None
        assert isinstance(norm, nn.BatchNorm2d)


def test_oracle_group_strides_and_projects_only_in_its_first_block():
    group = oracle_group(3, 2, 4, 2)
    assert group[0].stride == 2 and group[0].downsample is not None
    assert all(block.stride == 1 and block.downsample is None for block in group[1:])


def test_random_state_is_deterministic_and_informative():
    oracle = oracle_block(2, 3, 2)
    a, b = random_state(oracle, 7), random_state(oracle, 7)
    assert a.keys() == oracle.state_dict().keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(random_state(oracle, 8)["conv1.weight"], a["conv1.weight"])
    for key, value in a.items():
        assert value.dtype == oracle.state_dict()[key].dtype
        if key.endswith("running_var"):
            assert bool((value > 0.2).all())
        if key.endswith("running_mean"):
            assert bool((value != 0).all())


# ---- ResidualBlock ----------------------------------------------------------------------------

@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("args", BLOCK_ARGS)
def test_reference_block_lines_up_with_torchvision(args, train):
    module = ResidualBlock(*args)
    entries = entries_of(module)
    layout = block_layout(entries, *args)
    assert layout.problems == []
    oracle = oracle_block(*args)
    assert sorted(layout.mapping.values()) == sorted(oracle.state_dict())
    assert parameter_count(entries) == sum(p.numel() for p in oracle.parameters())
    assert layout.blocks[0].prefix("conv1") == "left.0" and layout.blocks[0].prefix("bn2") == "left.4"
    assert layout.blocks[0].prefix("proj") == ("right.0" if projects(*args) else None)
    same_output(module, oracle, layout, train=train)


class FlatBlock(nn.Module):
    """Torch's own modules under other names, the shortcut declared BEFORE the left branch and the
    BatchNorms declared after both convs: roles come from kernels and order, not names."""

    def __init__(self, in_feats, out_feats, first_stride=1):
        super().__init__()
        self.shortcut = None
        if first_stride != 1 or in_feats != out_feats:
            self.shortcut = nn.Sequential(nn.Conv2d(in_feats, out_feats, 1, first_stride, bias=False),
                                          nn.BatchNorm2d(out_feats))
        self.a = nn.Conv2d(in_feats, out_feats, 3, first_stride, 1, bias=False)
        self.b = nn.Conv2d(out_feats, out_feats, 3, 1, 1, bias=False)
        self.na = nn.BatchNorm2d(out_feats)
        self.nb = nn.BatchNorm2d(out_feats)

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.nb(self.b(F.relu(self.na(self.a(x))))) + skip)


@pytest.mark.parametrize("args", BLOCK_ARGS)
def test_block_with_other_names_and_order_lines_up(args):
    module = FlatBlock(*args)
    layout = block_layout(entries_of(module), *args)
    assert layout.problems == []
    roles = {role: layout.blocks[0].prefix(role) for role in ("conv1", "bn1", "conv2", "bn2", "proj", "bnp")}
    expected = {"conv1": "a", "bn1": "na", "conv2": "b", "bn2": "nb"}
    if projects(*args):
        expected.update(proj="shortcut.0", bnp="shortcut.1")
    assert {k: v for k, v in roles.items() if v is not None} == expected
    same_output(module, oracle_block(*args), layout, train=True)


class OldRuleBlock(ResidualBlock):
    """The old ARENA rule: a projection only when first_stride > 1."""

    def __init__(self, in_feats, out_feats, first_stride=1):
        super().__init__(in_feats, out_feats, first_stride)
        if first_stride == 1:
            self.right = nn.Identity()


def test_missing_projection_is_explained():
    layout = block_layout(entries_of(OldRuleBlock(3, 4, 1)), 3, 4, 1)
    assert layout.report() == (
        "ResidualBlock(3, 4, 1) has convolutions [3x3 3->4, 3x3 4->4]; expected also a 1x1 projection 3->4 with "
        "stride 1 followed by BatchNorm, because in_feats != out_feats (the right branch must bring x to the "
        "output's shape before the addition)")
    assert layout.loadable  # what it has can still be loaded, so a forward check can run and explain


def test_projection_where_identity_is_expected_is_explained():
    layout = block_layout(entries_of(ResidualBlock(4, 4, 2)), 4, 4, 1)
    assert len(layout.problems) == 1
    assert "including a 1x1 projection at `right.0`; expected an identity right branch" in layout.problems[0]
    assert "first_stride == 1 and in_feats == out_feats" in layout.problems[0]
    assert not layout.loadable and "right.0.weight" in layout.unmapped


def test_projection_without_batchnorm_is_explained_and_still_loadable():
    module = ResidualBlock(2, 3, 2)
    module.right = nn.Sequential(module.right[0])
    layout = block_layout(entries_of(module), 2, 3, 2)
    assert len(layout.problems) == 1
    assert "the projection's 1x1 conv of ResidualBlock(2, 3, 2) (`right.0`, 1x1 2->3) is not followed by a " \
           "BatchNorm" in layout.problems[0]
    assert layout.loadable


def test_projection_with_a_3x3_kernel_is_explained():
    module = ResidualBlock(2, 3, 2)
    module.right[0] = nn.Conv2d(2, 3, 3, 2, 1, bias=False)
    layout = block_layout(entries_of(module), 2, 3, 2)
    assert "has convolutions [3x3 2->3, 3x3 3->3, 3x3 2->3]" in layout.report()
    assert "not a 3x3 one" in layout.report()
    assert not layout.loadable


def test_conv_bias_and_wrong_channels_are_explained():
    module = ResidualBlock(3, 3, 1)
    module.left[0] = nn.Conv2d(3, 3, 3, 1, 1, bias=True)
    layout = block_layout(entries_of(module), 3, 3, 1)
    assert any("also registers `left.0.bias`" in p and "no bias" in p for p in layout.problems)
    assert not layout.loadable
    layout = block_layout(entries_of(ResidualBlock(3, 5, 1)), 3, 4, 1)
    assert any("the left branch's first conv of ResidualBlock(3, 4, 1) (`left.0`) is 3x3 3->5; expected "
               "3x3 3->4" in p for p in layout.problems)
    assert not layout.loadable


def test_buffer_registered_as_parameter_is_explained():
    module = ResidualBlock(2, 2, 1)
    bn = module.left[1]
    del bn._buffers["running_mean"]
    bn.running_mean = nn.Parameter(torch.zeros(2), requires_grad=False)
    layout = block_layout(entries_of(module), 2, 2, 1)
    assert any("`left.1.running_mean` is a parameter; torchvision's `bn1.running_mean` is a buffer" in p
               for p in layout.problems)


def test_units_and_pairing_without_names():
    convs, norms, stray = find_units(entries_of(FlatBlock(2, 3, 2)))
    assert [c.prefix for c in convs] == ["shortcut.0", "a", "b"]
    assert [n.prefix for n in norms] == ["shortcut.1", "na", "nb"]
    assert stray == []
    paired, left_over = pair_units(convs, norms)
    assert {convs[i].prefix: n.prefix for i, n in paired.items()} == \
        {"shortcut.0": "shortcut.1", "a": "na", "b": "nb"}
    # A conv without its BatchNorm: each BatchNorm goes to the closest conv before it.
    convs, norms, _ = find_units(entries_of(nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2),
        nn.Conv2d(2, 2, 3, bias=False), nn.BatchNorm2d(2))))
    paired, left_over = pair_units(convs, norms)
    assert {convs[i].prefix: n.prefix for i, n in paired.items()} == {"1": "2", "3": "4"} and left_over == []


# ---- BlockGroup ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(1, 3, 3, 1), (2, 3, 4, 2), (3, 2, 2, 3), (3, 4, 4, 1)])
def test_reference_group_lines_up_with_torchvision(args):
    module = BlockGroup(*args)
    entries = entries_of(module)
    layout = group_layout(entries, *args)
    assert layout.problems == [] and len(layout.blocks) == args[0]
    oracle = oracle_group(*args)
    assert sorted(layout.mapping.values()) == sorted(oracle.state_dict())
    assert parameter_count(entries) == sum(p.numel() for p in oracle.parameters())
    same_output(module, oracle, layout, seed=3)


def test_group_of_renamed_blocks_lines_up():
    module = nn.Sequential(FlatBlock(2, 3, 2), FlatBlock(3, 3), FlatBlock(3, 3))
    layout = group_layout(entries_of(module), 3, 2, 3, 2)
    assert layout.problems == []
    same_output(module, oracle_group(3, 2, 3, 2), layout, train=True)


def test_group_whose_later_blocks_stride_is_explained():
    module = nn.Sequential(ResidualBlock(2, 3, 2), ResidualBlock(3, 3, 2))
    layout = group_layout(entries_of(module), 2, 2, 3, 2)
    assert len(layout.problems) == 1
    assert layout.problems[0].startswith("block 1 of BlockGroup(2, 2, 3, 2) (expected to be ResidualBlock(3, 3, 1)) "
                                         "has convolutions [3x3 3->3, 3x3 3->3, 1x1 3->3], including a 1x1 "
                                         "projection at `1.right.0`")
    assert not layout.loadable


def test_group_one_block_short_is_explained():
    layout = group_layout(entries_of(BlockGroup(1, 2, 3, 1)), 2, 2, 3, 1)
    assert not layout.block_count_ok and not layout.loadable
    assert layout.problems[0].startswith("BlockGroup(2, 2, 3, 1) has 1 residual block (block 0: [3x3 2->3, 3x3 "
                                         "3->3, 1x1 2->3]); expected 2")


def test_group_blocks_are_split_by_the_module_tree_when_kernels_mislead():
    module = BlockGroup(3, 2, 3, 2)
    module.blocks[0].right[0] = nn.Conv2d(2, 3, 3, 2, 1, bias=False)  # a 3x3 "projection"
    layout = group_layout(entries_of(module), 3, 2, 3, 2)
    assert [len(b.convs) for b in layout.blocks] == [3, 2, 2]
    assert len(layout.problems) == 1 and "block 0 of BlockGroup(3, 2, 3, 2)" in layout.problems[0]
    assert "not a 3x3 one" in layout.problems[0]


def test_group_blocks_are_split_by_roles_when_the_tree_is_flat():
    module = nn.Sequential(
        nn.Conv2d(2, 3, 3, 2, 1, bias=False), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, 1, 1, bias=False),
        nn.BatchNorm2d(3), nn.Conv2d(2, 3, 1, 2, bias=False), nn.BatchNorm2d(3),
        nn.Conv2d(3, 3, 3, 1, 1, bias=False), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3, 1, 1, bias=False),
        nn.BatchNorm2d(3))
    convs, _, _ = find_units(entries_of(module))
    assert split_blocks(convs, 2) == [[0, 1, 2], [3, 4]]
    layout = group_layout(entries_of(module), 2, 2, 3, 2)
    assert layout.problems == [] and layout.loadable
    assert layout.mapping["4.weight"] == "0.downsample.0.weight" and layout.mapping["6.weight"] == "1.conv1.weight"


# ---- a whole ResNet34 -------------------------------------------------------------------------

@pytest.mark.parametrize("config", [DEFAULT, Config((1, 2, 1, 1), (4, 8, 8, 16), (1, 2, 1, 2), 3)], ids=str)
def test_the_reference_resnet34_lines_up_with_itself_entry_by_entry(config):
    model = reference_model(config)
    layout = network_layout(entries_of(model), config)
    assert layout.problems == [] and layout.loadable
    assert layout.mapping == {key: key for key in model.state_dict()}
    layout.require_loadable("compare")  # no failure


def test_a_resnet34_with_a_wrong_head_and_stem_is_not_loadable_and_says_why():
    config = Config((1, 1, 1, 1), (4, 4, 4, 4), (1, 1, 1, 1), 3)
    model = reference_model(config)
    model.out_layers[1] = nn.Linear(4, 5)
    model.in_layers[0] = nn.Conv2d(3, 64, 3, bias=False)
    layout = network_layout(entries_of(model), config)
    assert not layout.loadable
    assert "the stem's convolution (`in_layers.0`) is 3x3 3->64" in layout.report()
    assert "expected (3, 4) for Linear(4, n_classes=3)" in layout.report()
    with pytest.raises(AssertionError, match="cannot compare its logits: the parameters of .* do not line up with a "
                                             "ResNet34 built this way"):
        layout.require_loadable("compare its logits")


def test_a_network_report_shows_the_first_four_problems_and_counts_the_rest():
    config = Config((1, 1, 1, 1), (4, 4, 4, 4), (1, 1, 1, 1), 3)
    layout = network_layout(entries_of(reference_model(config)), config)
    layout.problems = [f"problem {i}" for i in range(7)]
    assert layout.report() == "problem 0; problem 1; problem 2; problem 3; and 3 more problems like these"
    layout.problems = layout.problems[:5]
    assert layout.report().endswith("; and 1 more problem like these")
