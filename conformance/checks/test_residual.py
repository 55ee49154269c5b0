"""Area `residual`: ResidualBlock's projection rule and forward, BlockGroup.

Oracle: torchvision's own `torchvision.models.resnet.BasicBlock(in, out, stride, downsample)`
with `downsample = nn.Sequential(conv1x1(in, out, stride), BatchNorm2d(out))` exactly when
`not (first_stride == 1 and in_feats == out_feats)`; a BlockGroup's oracle is an
`nn.Sequential` of such blocks where only the first strides and projects. The submission's
pieces are recognised from its state_dict alone (`conformance.structure`: conv units,
BatchNorm units, roles by kernel size and order), never from attribute names, and the SAME
random state (weights, BatchNorm affine, non-zero running_mean, varied running_var) is
loaded into the submission and the oracle before comparing. When an output differs, the
harness also computes the outputs of the usual mistakes (no skip connection, a ReLU before
the addition, the stride on the second conv, a projection without BatchNorm) and says which
one the submission matches.

Rubric items: the projection-rule checks (which blocks have a projection, its kernel, its
stride, and "only the first block of a BlockGroup strides and projects") decide item 4;
the forward, stride-placement, identity-path-gradient and run-once checks decide item 5.
The stride-placement check belongs to item 5: where the left branch strides is part of
how the block computes its output, not of the choice between identity and projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.areas import area, item, requires
from conformance.compare import (
    BUFFER_UPDATE, CheckFailure, assert_close, assert_equal, fail, output_size, tensor_of,
)
from conformance.course import probes
from conformance.diagnosis import STRIDE_SECOND, block_output, diagnose_block, matching
from conformance.probing import oracle_grad, parameter_count, printable, set_dtype, set_mode, state_entries
from conformance.structure import (
    Layout,
    block_layout,
    group_layout,
    oracle_block,
    oracle_group,
    projection_reason,
    projects,
    random_state,
)
from conformance.strategies import SEEDS, exact_values
from under_test.sandbox import SubmissionRaised

pytestmark = [area("residual")]

CHANNELS = st.integers(1, 6)
KINDS = ("identity", "channels", "stride", "both")
# Input values, drawn from a seed (a whole block's forward per shrinking step is too slow to shrink
# hundreds of values one by one). OFF_ZERO: no zeros, so x > 0 is decided everywhere and no branch
# vanishes on a zero input; POSITIVE: every value > 0.
OFF_ZERO = [v / 2 + 0.25 for v in range(-8, 8)]
POSITIVE = [v / 2 for v in range(1, 9)]


# ---- strategies ---------------------------------------------------------------------------

# course: ResidualBlock(in_feats, out_feats, first_stride=1), ints: tests.py's (3, 3, 1) and (3, 4, 2), the ResNet's
# (64, 64, 1), (64, 128, 2), ...; interface.md fixes the projection rule (in != out at stride 1 projects too) and
# admits any small widths and strides.
@st.composite
def block_args(draw, kinds=KINDS):
    """(in_feats, out_feats, first_stride), covering identity, channel change, stride, and both."""
    kind = draw(st.sampled_from(kinds), label="kind")
    in_feats = draw(CHANNELS, label="in_feats")
    if kind in ("channels", "both"):
        other = draw(st.integers(1, 5), label="out_feats (other than in_feats)")
        out_feats = other if other < in_feats else other + 1
    else:
        out_feats = in_feats
    stride = draw(st.integers(2, 3), label="first_stride") if kind in ("stride", "both") else 1
    return in_feats, out_feats, stride


# course: forward gets (batch, in_feats, height, width) (its docstring): tests.py's 64x64 inputs, the ResNet's
# activations; float32 (float64 here through .double()).
@st.composite
def block_inputs(draw, in_feats: int, stride: int, train: bool = False, elements=OFF_ZERO, min_size: int = 2):
    """An input (B, in_feats, H, W) with values from `elements`; in train mode every BatchNorm sees at
    least 2 values per channel."""
    h = draw(st.integers(min_size, 8), label="H")
    w = draw(st.integers(min_size, 8), label="W")
    cells = output_size(h, 3, stride, 1) * output_size(w, 3, stride, 1)
    batch = draw(st.integers(2 if (train and cells < 2) else 1, 3), label="batch")
    seed = draw(SEEDS, label="seed of x")
    choices = torch.tensor(elements, dtype=torch.float32)
    index = torch.randint(0, len(elements), (batch, in_feats, h, w), generator=torch.Generator().manual_seed(seed))
    return choices[index]


# course: positional in tests.py and BlockGroup (ResidualBlock(out_feats, out_feats) omits first_stride); interface.md:
# by keyword too.
CONSTRUCTIONS = st.sampled_from(["positional", "keyword", "default stride"])


def construct_block(sandbox, in_feats: int, out_feats: int, stride: int, how: str = "positional", seed: int = 0):
    if how == "keyword":
        return sandbox.construct("ResidualBlock", in_feats=in_feats, out_feats=out_feats, first_stride=stride,
                                 seed=seed)
    if how == "default stride" and stride == 1:
        return sandbox.construct("ResidualBlock", in_feats, out_feats, seed=seed)
    return sandbox.construct("ResidualBlock", in_feats, out_feats, stride, seed=seed)


def construct_group(sandbox, n_blocks: int, in_feats: int, out_feats: int, stride: int | None, seed: int = 0):
    """BlockGroup(n_blocks, in_feats, out_feats, first_stride), positionally; a stride of None is left out."""
    strides = () if stride is None else (stride,)
    return sandbox.construct("BlockGroup", n_blocks, in_feats, out_feats, *strides, seed=seed)


# ---- helpers: same state in submission and oracle ------------------------------------------

def layout_of(sandbox, handle, what: str, in_feats: int, out_feats: int, stride: int,
              n_blocks: int | None = None) -> tuple[Layout, list]:
    entries = state_entries(sandbox, handle, what)
    if n_blocks is None:
        return block_layout(entries, in_feats, out_feats, stride, what), entries
    return group_layout(entries, n_blocks, in_feats, out_feats, stride, what), entries


def load_both(sandbox, handle, layout: Layout, oracle: torch.nn.Module, state: dict[str, torch.Tensor],
              doing: str) -> None:
    """Load `state` (oracle keys) into the oracle and, under the submission's own keys, into the submission."""
    layout.require_loadable(doing)
    oracle.load_state_dict(state)
    ours = layout.submission_state(state)
    try:  # the keys are the submission's own (read by layout_of), so no second look at its state
        sandbox.method(handle, "load_state_dict", ours, strict=False)
    except SubmissionRaised as error:
        fail(f"{layout.what}.load_state_dict could not load entries {sorted(ours)}: {error.type_name}: "
             f"{error.message}")


def run(sandbox, layout: Layout, call, *args, **kwargs):
    """Call into the submission; an exception in a block whose structure is wrong is explained by it."""
    try:
        return call(*args, **kwargs)
    except SubmissionRaised as error:
        if layout.problems:
            fail(f"{layout.what}'s forward raised {error.type_name}: {error.message}\nThe cause is probably its "
                 f"structure: {layout.report()}")
        raise


FORWARD_HINT = ("forward is relu(left(x) + right(x)): left = conv 3x3 (stride first_stride, padding 1) -> BatchNorm "
                "-> ReLU -> conv 3x3 (stride 1, padding 1) -> BatchNorm; right = x, or the 1x1 conv (stride "
                "first_stride) -> BatchNorm projection")


def compare_output(got_value, expected: torch.Tensor, oracle, x: torch.Tensor, train: bool, what: str,
                   layout: Layout, otherwise: str = FORWARD_HINT) -> None:
    """The output equals the oracle's; if not, say which usual mistake it matches (or `otherwise`)."""
    got = tensor_of(got_value, what)
    try:
        assert_close(got, expected, what)
        return
    except CheckFailure:
        pass
    stride = oracle.stride
    if got.shape == expected.shape:
        hint = diagnose_block(got, oracle, x, train)
    elif got.ndim == 4 and got.shape[2:] == x.shape[2:] and stride > 1:
        hint = (f"the output keeps the input's {tuple(x.shape[2:])} grid although first_stride = {stride}: "
                "the stride goes on the left branch's first conv AND on the projection's 1x1 conv, so both "
                "branches land on the (H_out, W_out) grid (a size-1 branch silently broadcasts in the addition)")
    else:
        hint = ""
    if layout.problems:
        hint = (hint + "\n" if hint else "") + f"Its structure does not match either: {layout.report()}"
    assert_close(got, expected, what, hint=hint or otherwise)


# ---- item 4: the projection rule ---------------------------------------------------------------

@item("4")
@requires("ResidualBlock")
@probes(lambda p: {"args": (p["in_feats"], p["out_feats"], p["first_stride"]), "how": "positional"})
@given(args=block_args(), how=CONSTRUCTIONS)
def test_residual_projection_rule(sandbox, args, how):
    """The right branch is a 1x1 conv + BatchNorm exactly when first_stride != 1 or in_feats != out_feats."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    handle = construct_block(sandbox, in_feats, out_feats, stride, how)
    layout, entries = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    rule = (f"a projection, because {projection_reason(in_feats, out_feats, stride)}"
            if projects(in_feats, out_feats, stride) else
            "an identity right branch, because first_stride == 1 and in_feats == out_feats")
    if layout.problems or not layout.loadable:
        fail(f"{what} should have {rule}, and its parameters should line up with torchvision's BasicBlock: "
             f"{layout.report() or 'some entries have the wrong shape: ' + ', '.join(layout.mismatched)}")
    oracle = oracle_block(in_feats, out_feats, stride)
    expected = sum(p.numel() for p in oracle.parameters())
    assert_equal(parameter_count(entries), expected, f"number of parameters of {what} (with {rule})")


@item("4")
@requires("ResidualBlock")
@given(data=st.data(), args=block_args(kinds=("channels", "stride", "both")), seed=SEEDS)
def test_residual_projection_is_strided_1x1_conv(sandbox, data, args, seed):
    """The projection's 1x1 conv applies first_stride (and padding 0), so x reaches the output's shape."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    x = data.draw(block_inputs(in_feats, stride))
    handle = construct_block(sandbox, in_feats, out_feats, stride, seed=seed)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    prefix = layout.blocks[0].prefix("proj")
    if prefix is None:
        fail(f"{what} needs a 1x1 projection on its right branch, because "
             f"{projection_reason(in_feats, out_feats, stride)}; {layout.report()}")
    conv = layout.blocks[0].units["proj"]
    if conv.shape != (out_feats, in_feats, 1, 1):
        fail(f"the projection of {what} (`{prefix}`) is {conv.describe()}; expected 1x1 {in_feats}->{out_feats}")
    module = sandbox.method(handle, "get_submodule", prefix)
    got = sandbox.call(module, x)
    expected = F.conv2d(x, conv.weight.tensor, stride=stride)
    assert_close(got, expected, f"the projection's 1x1 conv (`{prefix}`) of {what} on an input of shape "
                                f"{tuple(x.shape)}",
                 hint=f"construct it as Conv2d({in_feats}, {out_feats}, kernel_size=1, stride=first_stride) "
                      "(padding 0): with the stride the shortcut lands on the same (H_out, W_out) grid as the left "
                      "branch, whose first conv has that stride")


# ---- item 5: forward, stride placement, identity path, run once -----------------------------------

@item("5")
@requires("ResidualBlock")
@given(data=st.data(), args=block_args(), seed=SEEDS)
def test_residual_forward_eval_matches_torchvision(sandbox, data, args, seed):
    """Eval mode with the same random state: the output equals torchvision BasicBlock's relu(left(x) + right(x))."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    x = data.draw(block_inputs(in_feats, stride))
    handle = construct_block(sandbox, in_feats, out_feats, stride)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    oracle = oracle_block(in_feats, out_feats, stride)
    load_both(sandbox, handle, layout, oracle, random_state(oracle, seed), "compare its output")
    set_mode(sandbox, handle, False)
    got = run(sandbox, layout, sandbox.call, handle, x)
    with torch.no_grad():
        expected = oracle.eval()(x)
    compare_output(got, expected, oracle.eval(), x, False, f"{what} in eval mode on an input of shape "
                   f"{tuple(x.shape)} (same state as the oracle)", layout)


def bn_inputs(oracle) -> tuple[dict[str, torch.Tensor], list]:
    """Record what each BatchNorm of the oracle receives (to rebuild ARENA's running_var convention)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in oracle.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            hooks.append(module.register_forward_pre_hook(
                lambda mod, inputs, name=name: seen.__setitem__(name, inputs[0].detach().clone())))
    return seen, hooks


@item("5")
@requires("ResidualBlock")
@given(data=st.data(), args=block_args(), seed=SEEDS)
def test_residual_forward_train_matches_torchvision(sandbox, data, args, seed):
    """Train mode (float64): output, gradients and the running buffers afterwards match torchvision's BasicBlock."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    # float64: gradients through batch statistics cancel a lot, float32 rounding would show.
    x = data.draw(block_inputs(in_feats, stride, train=True)).double()
    handle = construct_block(sandbox, in_feats, out_feats, stride)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    set_dtype(sandbox, handle, torch.float64)
    oracle = oracle_block(in_feats, out_feats, stride).double()
    state = random_state(oracle, seed)
    load_both(sandbox, handle, layout, oracle, state, "compare its output")
    before = oracle_block(in_feats, out_feats, stride).double()  # stays as it was before the forward
    before.load_state_dict(state)
    set_mode(sandbox, handle, True)
    out_shape = (x.shape[0], out_feats, output_size(x.shape[2], 3, stride, 1), output_size(x.shape[3], 3, stride, 1))
    cotangent = torch.linspace(-1, 1, torch.Size(out_shape).numel(), dtype=torch.float64).reshape(out_shape)
    got = run(sandbox, layout, sandbox.grad, handle, (x,), cotangent)
    seen, hooks = bn_inputs(oracle)
    expected, input_grad = oracle_grad(oracle.train(), x, cotangent)
    for hook in hooks:
        hook.remove()
    where = f"{what}.double() in train mode on an input of shape {tuple(x.shape)} (same state as the oracle)"
    compare_output(got["value"], expected, before, x, True, where, layout)
    got_grad = tensor_of(got["input_grads"][0], f"gradient of {what}'s output w.r.t. its input")
    try:
        assert_close(got_grad, input_grad, "")
        hint = ""
    except CheckFailure:
        hint = diagnose_block(got_grad, before, x, True, cotangent) if got_grad.shape == input_grad.shape else ""
    assert_close(got_grad, input_grad, f"gradient of the output of {where} w.r.t. its input",
                 hint=hint or "the gradient is not torchvision's BasicBlock's: forward must be relu(left(x) + "
                              "right(x)) with every piece in the autograd graph (no detach, .data or torch.no_grad)")
    params = dict(oracle.named_parameters())
    for key, target in layout.mapping.items():
        if target not in params:
            continue
        grad = got["param_grads"].get(key)
        if grad is None:
            fail(f"{layout.role_of(key)} got no gradient from {where}: is it used in forward?")
        assert_close(grad, params[target].grad, f"gradient w.r.t. {layout.role_of(key)}")
    after = {e.name: e.tensor for e in state_entries(sandbox, handle, what)}
    modules = dict(oracle.named_modules())
    buffers = [(key, target) for key, target in layout.mapping.items()
               if target.rpartition(".")[2] in ("num_batches_tracked", "running_mean", "running_var")]
    buffers.sort(key=lambda pair: not pair[1].endswith("num_batches_tracked"))  # the clearest message first
    for key, target in buffers:
        bn_name, _, leaf_name = target.rpartition(".")
        expected_now = oracle.state_dict()[target]
        if leaf_name == "num_batches_tracked":
            assert_equal(int(after[key]), int(expected_now),
                         f"{layout.role_of(key)} after one train-mode forward (it was {int(state[target])})",
                         hint="each BatchNorm runs once per forward: compute left(x) and right(x) once each")
            continue
        accepted = [expected_now]
        if leaf_name == "running_var":  # PyTorch's unbiased update, or ARENA's biased one (the batchnorm area judges)
            m = modules[bn_name].momentum
            accepted.append((1 - m) * state[target] + m * seen[bn_name].var(dim=(0, 2, 3), unbiased=False))
        if not any(BUFFER_UPDATE.close(after[key].to(value.dtype), value) for value in accepted):
            assert_close(after[key], expected_now,
                         f"{layout.role_of(key)} after one train-mode forward",
                         hint="each BatchNorm sees its own input once per forward and moves its running "
                              "statistics by momentum towards that batch's statistics")


def receptive_rows_cols(grad: torch.Tensor) -> str:
    mask = grad[0].abs().sum(dim=0) > 0
    rows = torch.nonzero(mask.any(dim=1)).flatten().tolist()
    cols = torch.nonzero(mask.any(dim=0)).flatten().tolist()
    if not rows:
        return "no input pixel"
    return f"rows {rows[0]}..{rows[-1]}, columns {cols[0]}..{cols[-1]}"


@item("5")
@requires("ResidualBlock")
@given(data=st.data(), args=block_args(kinds=("stride", "both")), seed=SEEDS)
def test_residual_stride_on_first_conv(sandbox, data, args, seed):
    """The stride is on the left branch's first conv: an output pixel sees the input torchvision's block sees."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    x = data.draw(block_inputs(in_feats, stride, elements=POSITIVE, min_size=4))
    h_out, w_out = output_size(x.shape[2], 3, stride, 1), output_size(x.shape[3], 3, stride, 1)
    i = data.draw(st.integers(0, h_out - 1), label="output row")
    j = data.draw(st.integers(0, w_out - 1), label="output column")
    handle = construct_block(sandbox, in_feats, out_feats, stride)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    oracle = oracle_block(in_feats, out_feats, stride)
    # Positive weights, inputs and shifts, zero running means: every ReLU passes everything, so
    # the gradient of one output pixel is non-zero exactly on the input pixels it depends on.
    state = {key: (value.abs() if key.rpartition(".")[2] in ("weight", "bias") else value)
             for key, value in random_state(oracle, seed).items()}
    state.update({key: torch.zeros_like(value) for key, value in state.items() if key.endswith("running_mean")})
    load_both(sandbox, handle, layout, oracle, state, "probe which input pixels an output pixel depends on")
    set_mode(sandbox, handle, False)
    cotangent = torch.zeros(x.shape[0], out_feats, h_out, w_out)
    cotangent[0, :, i, j] = 1.0
    got = run(sandbox, layout, sandbox.grad, handle, (x,), cotangent)
    got_value = tensor_of(got["value"], what)
    if tuple(got_value.shape) != tuple(cotangent.shape):
        fail(f"{what} on an input of shape {tuple(x.shape)} returned shape {tuple(got_value.shape)}, expected "
             f"{tuple(cotangent.shape)}: with the stride on the first 3x3 conv (padding 1) the output grid is "
             f"floor((H + 2 - 3) / first_stride) + 1")
    grads = {}
    for label, kwargs in (("expected", {}), ("second", {"stride_second": True})):
        grads[label] = oracle_grad(lambda v: block_output(oracle.eval(), v, **kwargs), x, cotangent)[1]
    got_grad = tensor_of(got["input_grads"][0], f"gradient of {what}'s output w.r.t. its input")
    hint = (f"output pixel ({i}, {j}) depends on input {receptive_rows_cols(got_grad)}; in torchvision's block it "
            f"depends on input {receptive_rows_cols(grads['expected'])}")
    if matching(got_grad, grads["expected"], [(STRIDE_SECOND, grads["second"])]):
        hint += f". That is what {STRIDE_SECOND.what} sees: {STRIDE_SECOND.why}"
    else:
        hint += (". With all weights and inputs positive every ReLU passes everything, so this gradient is the sum "
                 "of both branches' contributions: left (conv 3x3 stride first_stride -> BatchNorm -> ReLU -> conv "
                 "3x3 -> BatchNorm) plus right (the 1x1 stride first_stride projection -> BatchNorm)")
    assert_close(got_grad, grads["expected"],
                 f"gradient of output pixel (0, :, {i}, {j}) of {what} (eval mode, positive weights and inputs) "
                 f"w.r.t. an input of shape {tuple(x.shape)}", hint=hint)


@item("5")
@requires("ResidualBlock")
@given(data=st.data(), args=block_args(), seed=SEEDS)
def test_residual_no_relu_before_add_and_identity_gradient(sandbox, data, args, seed):
    """With left(x) silenced to a constant b, the block is relu(b + right(x)) and gradients pass the skip."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    x = data.draw(block_inputs(in_feats, stride))
    shift = torch.tensor(data.draw(st.lists(st.integers(-4, 4).map(lambda v: v / 2), min_size=out_feats,
                                            max_size=out_feats), label="b (bias of the last BatchNorm)"))
    handle = construct_block(sandbox, in_feats, out_feats, stride)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    oracle = oracle_block(in_feats, out_feats, stride)
    state = random_state(oracle, seed)
    state["bn2.weight"] = torch.zeros(out_feats)
    state["bn2.bias"] = shift
    load_both(sandbox, handle, layout, oracle, state, "silence its left branch")
    set_mode(sandbox, handle, False)
    out_shape = (x.shape[0], out_feats, output_size(x.shape[2], 3, stride, 1), output_size(x.shape[3], 3, stride, 1))
    cotangent = torch.linspace(0.5, 2, torch.Size(out_shape).numel()).reshape(out_shape)
    got = run(sandbox, layout, sandbox.grad, handle, (x,), cotangent)
    expected, input_grad = oracle_grad(oracle.eval(), x, cotangent)
    identity = oracle.downsample is None
    right = "x" if identity else "projection(x)"
    where = (f"{what} in eval mode with its left branch's last BatchNorm given weight 0 and bias b = "
             f"{shift.tolist()} (so left(x) = b), on an input of shape {tuple(x.shape)}")
    got_value = tensor_of(got["value"], where)
    compare_output(got_value, expected, oracle, x, False, where, layout,
                   otherwise=f"with left(x) = b the block must return relu(b + {right}): add the branches, then "
                             "apply the one ReLU")
    assert_close(got["input_grads"][0], input_grad, f"gradient w.r.t. the input of {where}",
                 hint=("the skip connection carries the gradient straight to the input: here it must be "
                       "cotangent * (b + x > 0)") if identity else
                      "the gradient must reach the input through the projection (1x1 conv, then BatchNorm)")


@item("5")
@requires("ResidualBlock")
@given(data=st.data(), args=block_args(), seed=SEEDS)
def test_residual_each_branch_runs_once(sandbox, data, args, seed):
    """One train-mode forward counts exactly one batch in every BatchNorm of the block."""
    in_feats, out_feats, stride = args
    what = f"ResidualBlock({in_feats}, {out_feats}, {stride})"
    x = data.draw(block_inputs(in_feats, stride, train=True))
    handle = construct_block(sandbox, in_feats, out_feats, stride)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride)
    oracle = oracle_block(in_feats, out_feats, stride)
    state = random_state(oracle, seed)
    load_both(sandbox, handle, layout, oracle, state, "count the batches its BatchNorms see")
    set_mode(sandbox, handle, True)
    run(sandbox, layout, sandbox.call, handle, x)
    after = {e.name: e.tensor for e in state_entries(sandbox, handle, what)}
    wrong = [f"{layout.role_of(key)} went from {int(state[target])} to {int(after[key])}"
             for key, target in layout.mapping.items()
             if target.endswith("num_batches_tracked") and int(after[key]) != int(state[target]) + 1]
    if wrong:
        fail(f"after one train-mode forward of {what}, every BatchNorm's num_batches_tracked should grow by exactly "
             f"1, but: {'; '.join(wrong)}. Compute left(x) and right(x) once each and add the results; calling a "
             "branch again (e.g. once to inspect its output and once in the return) updates its running "
             "statistics twice")


@requires("ResidualBlock")
def test_residual_repr(sandbox):
    """print(ResidualBlock(...)) works, for a block with a projection and for one without."""
    for args in ((3, 4, 2), (4, 4, 1)):
        printable(sandbox, sandbox.construct("ResidualBlock", *args), f"ResidualBlock{args}")


# ---- BlockGroup ---------------------------------------------------------------------------------

# course: BlockGroup(n_blocks, in_feats, out_feats, first_stride=1): tests.py's (2, 3, 3, 1), (2, 3, 4, 2), (5, 3, 4, 2);
# the ResNet's by keyword with [3, 4, 6, 3] blocks. Built positionally here; block_inputs as for a block.
@st.composite
def group_args(draw):
    n_blocks = draw(st.integers(1, 3), label="n_blocks")
    in_feats, out_feats, stride = draw(block_args(), label="(in_feats, out_feats, first_stride)")
    return n_blocks, in_feats, out_feats, stride


@st.composite
def group_cases(draw):
    """A BlockGroup's arguments and an input for it."""
    args = draw(group_args(), label="args")
    return args, draw(block_inputs(args[1], args[3]), label="x")


def course_group(probe: dict) -> dict:
    """tests.py's test_block_group: BlockGroup(n_blocks, in_feats, out_feats, first_stride) on a 64x64 input."""
    args = tuple(probe[name] for name in ("n_blocks", "in_feats", "out_feats", "first_stride"))
    return {"case": (args, torch.tensor(exact_values((1, probe["in_feats"], 64, 64)), dtype=torch.float32))}


# Defaults by omission: BlockGroup(n_blocks, in_feats, out_feats), first_stride left out (its default, 1).
GROUP_DEFAULT_STRIDE = ((2, 3, 4, None), torch.tensor(exact_values((1, 3, 6, 5)), dtype=torch.float32))


@item("4")
@requires("BlockGroup", "ResidualBlock")
@probes(course_group)
@example(case=GROUP_DEFAULT_STRIDE)
@given(case=group_cases())
def test_blockgroup_only_first_block_strides_and_projects(sandbox, case):
    """BlockGroup = ResidualBlock(in, out, first_stride), then n_blocks - 1 identity blocks (out, out, 1)."""
    (n_blocks, in_feats, out_feats, passed), x = case
    stride = 1 if passed is None else passed
    what = f"BlockGroup({n_blocks}, {in_feats}, {out_feats}" + (")" if passed is None else f", {stride})")
    handle = construct_group(sandbox, n_blocks, in_feats, out_feats, passed)
    layout, entries = layout_of(sandbox, handle, what, in_feats, out_feats, stride, n_blocks)
    if layout.problems or not layout.loadable:
        fail(f"{what} should be ResidualBlock({in_feats}, {out_feats}, {stride}) followed by {n_blocks - 1} "
             f"ResidualBlock({out_feats}, {out_feats}, 1) (only the first block strides and changes the channels, "
             f"so only it may project): {layout.report() or 'wrong shapes: ' + ', '.join(layout.mismatched)}")
    expected = sum(p.numel() for p in oracle_group(n_blocks, in_feats, out_feats, stride).parameters())
    assert_equal(parameter_count(entries), expected, f"number of parameters of {what}")
    set_mode(sandbox, handle, False)
    got = tensor_of(sandbox.call(handle, x), what)
    h, w = x.shape[2], x.shape[3]
    expected_shape = (x.shape[0], out_feats, output_size(h, 3, stride, 1), output_size(w, 3, stride, 1))
    assert_equal(tuple(got.shape), expected_shape, f"output shape of {what} on an input of shape {tuple(x.shape)}",
                 hint=("first_stride was left out: the signature's default is 1. " if passed is None else "")
                 + f"only the first block strides: each spatial size becomes (size + 2 - 3) // {stride} + 1 once, "
                   "and the later blocks keep it")


@item("5")
@requires("BlockGroup", "ResidualBlock")
@given(data=st.data(), args=group_args(), seed=SEEDS)
def test_blockgroup_forward_matches_torchvision(sandbox, data, args, seed):
    """Eval mode with the same random state: the output equals a torchvision Sequential of BasicBlocks."""
    n_blocks, in_feats, out_feats, stride = args
    what = f"BlockGroup({n_blocks}, {in_feats}, {out_feats}, {stride})"
    x = data.draw(block_inputs(in_feats, stride))
    handle = construct_group(sandbox, n_blocks, in_feats, out_feats, stride)
    layout, _ = layout_of(sandbox, handle, what, in_feats, out_feats, stride, n_blocks)
    oracle = oracle_group(n_blocks, in_feats, out_feats, stride)
    load_both(sandbox, handle, layout, oracle, random_state(oracle, seed), "compare its output")
    set_mode(sandbox, handle, False)
    got = run(sandbox, layout, sandbox.call, handle, x)
    with torch.no_grad():
        expected = oracle.eval()(x)
    assert_close(got, expected, f"{what} in eval mode on an input of shape {tuple(x.shape)} (same state as the "
                                "oracle)",
                 hint="forward applies the blocks in order, each exactly once: x -> block 0 -> block 1 -> ..."
                      + (f"\nIts structure does not match either: {layout.report()}" if layout.problems else ""))


@requires("BlockGroup", "ResidualBlock")
def test_blockgroup_repr(sandbox):
    """print(BlockGroup(...)) works."""
    for args in ((2, 3, 4, 2), (1, 4, 4, 1)):
        printable(sandbox, sandbox.construct("BlockGroup", *args), f"BlockGroup{args}")
