"""Area `weight_copy` (rubric item 7, with `resnet34`): state_dict order, copy_weights, logits parity.

Oracle: torchvision's own `resnet34` architecture (its state_dict template, built on the
meta device) for the order, and the harness's "pretrained" ResNet34
(`fixtures.standin.pretrained_resnet34()`: the deterministic stand-in, or torchvision's
real weights with CONFORMANCE_PRETRAINED=torch-cache) for the values. The course's
`copy_weights` pairs the two state_dicts entry by entry, IN ORDER, ignoring the names,
so the submission's default ResNet34 must list the same 218 entries as torchvision's, at
the same positions, with the same shapes and the same parameter/buffer kinds. After the
copy, its eval-mode logits on three real photographs (`fixtures.images`, 224 and 64
pixels) must equal the stored snapshot (`fixtures.snapshots.expected_logits`) within the
snapshot's tolerance.

The submission's own `copy_weights` is used where it defines one, the course's otherwise;
the check whose subject is copy_weights itself (copied into the reference model) is
reported `given` when the submission does not define it.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable

import torch

from conformance.areas import area, requires
from conformance.budgets import PHOTO_FORWARD_SECONDS
from conformance.compare import LOGITS, fail, tensor_of
from conformance.probing import Entry, set_mode, state_entries, state_layout
from conformance.structure import NORM_LEAVES, entries_of
from fixtures.images import PHOTOS, photo_batch
from fixtures.snapshots import as_logits_array, expected_logits, logits_differences
from fixtures.standin import pretrained_source, pretrained_values
from under_test.sandbox import SubmissionRaised
from under_test.wire import Handle

pytestmark = [area("weight_copy")]

SIZES = (64, 224)  # the small photos first: they are faster and catch the same bugs
ORDER_HINT = ("copy_weights pairs the entries by position, ignoring the names. A module's state_dict lists its "
              "submodules in the order they are assigned in __init__, and within each module its parameters before "
              "its buffers; torchvision's order is conv1, bn1, then layer1..layer4 (in every block: conv1, bn1, "
              "conv2, bn2, and the downsample's conv and BatchNorm LAST), then fc")
LEFT_FIRST_HINT = ("the right branch (the 1x1 projection) is declared before the left branch: declare left before "
                   "right so that the downsample entries come after conv2/bn2 like torchvision's")


# ---- the oracle: torchvision's order, the pretrained values ---------------------------------------

@functools.lru_cache(maxsize=1)
def torchvision_entries() -> tuple[Entry, ...]:
    """torchvision's resnet34 state_dict (names, shapes, kinds; no values), in order."""
    import torchvision.models.resnet as resnet

    with torch.device("meta"):
        model = resnet.ResNet(resnet.BasicBlock, [3, 4, 6, 3])
    return tuple(entries_of(model))


def fresh_resnet34() -> torch.nn.Module:
    """A correct ResNet34 as a learner's is before the copy: torchvision's architecture (a class the worker can
    rebuild; the reference's own classes never enter the submission's process), random weights of the course's
    kind (each entry a random tile of at most 4096 values, repeated), BatchNorm at its defaults. Built on the meta
    device and then given its values: torchvision's own initialisation costs 0.2 s, 21.8 million random values
    0.08 s."""
    import torchvision.models.resnet as resnet

    with torch.device("meta"):
        model = resnet.ResNet(resnet.BasicBlock, [3, 4, 6, 3])
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, value in model.state_dict().items():
        owner, leaf = name.rpartition(".")[0], _leaf(name)
        if leaf == "num_batches_tracked":
            state[name] = torch.zeros((), dtype=torch.long)
        elif value.ndim == 1 and not owner.startswith("fc"):  # a BatchNorm's weight, bias, running_mean, running_var
            state[name] = torch.ones(value.shape) if leaf in ("weight", "running_var") else torch.zeros(value.shape)
        else:  # a convolution's or the Linear's: uniform in +-1/sqrt(fan_in)
            fan_in = value[0].numel() if value.ndim > 1 else model.fc.in_features
            tile = (torch.rand(min(value.numel(), 4096), generator=gen) * 2 - 1) / fan_in ** 0.5
            state[name] = tile.repeat(-(-value.numel() // tile.numel()))[:value.numel()].view(value.shape)
    model.load_state_dict(state, assign=True)
    return model


def entry_text(entry: Entry) -> str:
    return f"`{entry.name}` ({entry.kind}, shape {tuple(entry.tensor.shape)})"


def _leaf(name: str) -> str:
    return name.rpartition(".")[2]


def count_difference(entries: list[Entry]) -> str:
    """What the submission has in addition to torchvision's entries, and what it lacks; empty when the counts agree."""
    theirs = torchvision_entries()
    if len(entries) == len(theirs):
        return ""

    def kinds(items) -> Counter:
        return Counter((_leaf(e.name) if _leaf(e.name) in NORM_LEAVES[2:] else e.kind, tuple(e.tensor.shape))
                       for e in items)

    def listing(counter: Counter) -> str:
        shown = [f"{n} x {kind} {shape}" for (kind, shape), n in list(counter.items())[:4]]
        return ", ".join(shown) + (", ..." if len(counter) > 4 else "")

    mine, tv = kinds(entries), kinds(theirs)
    extra, absent = mine - tv, tv - mine
    return (f"your ResNet34() has {len(entries)} state_dict entries, torchvision's resnet34 has {len(theirs)}"
            + (f"; you have in addition {listing(extra)}" if extra else "")
            + (f"; you lack {listing(absent)}" if absent else ""))


def misalignment(entries: list[Entry]) -> str:
    """Where the submission's state_dict stops lining up with torchvision's; empty when it lines up."""
    theirs = torchvision_entries()
    counts = count_difference(entries)
    for index, (mine, tv) in enumerate(zip(entries, theirs)):
        shape_ok = tuple(mine.tensor.shape) == tuple(tv.tensor.shape)
        kind_ok = mine.kind == tv.kind
        leaves = _leaf(mine.name), _leaf(tv.name)
        leaf_ok = not (set(leaves) <= set(NORM_LEAVES) and leaves[0] != leaves[1])
        if shape_ok and kind_ok and leaf_ok:
            continue
        text = (f"state_dict entry {index} does not line up: yours is {entry_text(mine)}, torchvision's resnet34 has "
                f"{entry_text(tv)} there")
        if leaves[1] == "num_batches_tracked" and leaves[0] != "num_batches_tracked":
            hint = ("torchvision's BatchNorm2d ends with a num_batches_tracked buffer, and copy_weights needs it too: "
                    "self.register_buffer('num_batches_tracked', t.tensor(0)) after running_mean and running_var")
        elif not shape_ok and mine.tensor.ndim == 4 and tuple(mine.tensor.shape[2:]) == (1, 1) \
                and tuple(tv.tensor.shape[2:]) == (3, 3):
            hint = LEFT_FIRST_HINT
        elif not shape_ok and mine.tensor.ndim == 4 and tuple(mine.tensor.shape[2:]) == (3, 3) \
                and "downsample" in tv.name:
            hint = ("torchvision's block ends with its downsample (1x1 conv, BatchNorm) right after bn2, and "
                    "the next block starts after it: " + ORDER_HINT)
        elif shape_ok and kind_ok:
            hint = (f"the shapes agree, so copy_weights would silently load torchvision's `{tv.name}` into your "
                    f"`{mine.name}`: register BatchNorm2d's parameters weight, bias, then its buffers running_mean, "
                    "running_var, num_batches_tracked, in that order (torch's order)")
        elif shape_ok:
            hint = (f"your `{mine.name}` is a {mine.kind} where torchvision has a {tv.kind}"
                    + (": register it with register_buffer (a module's buffers are listed after its parameters)"
                       if tv.kind == "buffer" else ": wrap it in nn.Parameter") + ". " + ORDER_HINT)
        else:
            hint = ORDER_HINT
        return (f"{counts}.\n" if counts else "") + f"{text}.\n{hint}"
    if counts:
        return f"{counts} (the first {min(len(entries), len(theirs))} line up). copy_weights needs the same entries " \
               "in the same order"
    return ""


# ---- running copy_weights in the sandbox --------------------------------------------------------

def copy_into_default(sandbox) -> tuple[Handle, Callable[[], list[Entry]], str]:
    """ResNet34() with the pretrained weights copied in by copy_weights: (model, entries before, misalignment).

    The entries before the copy are read when a failure needs them (`before()`: a second ResNet34(), built with the
    same seed): a passing copy never moves them.
    """
    handle = sandbox.construct("ResNet34")
    problem = misalignment(state_layout(sandbox, handle, "ResNet34()"))

    def before() -> list[Entry]:
        return state_entries(sandbox, sandbox.construct("ResNet34"), "ResNet34()")

    try:
        result = sandbox.call("copy_weights", handle, sandbox.pretrained())
    except SubmissionRaised as error:
        fail(f"copy_weights(ResNet34(), pretrained_resnet) raised {error.type_name}: {error.message}"
             + (f"\nThe cause: {problem}" if problem else f"\n{error.traceback}"))
    model = result if isinstance(result, Handle) else handle  # a copy_weights that returns nothing loads in place
    return model, before, problem


def value_problems(after: list[Entry], before: Callable[[], list[Entry]], keys: list[str]) -> list[str]:
    """Entries that do not hold the pretrained value they stand for (keys[i]: the torchvision key of entry i);
    `before()` gives the entries before the copy, read only if one is wrong."""
    state = pretrained_values()  # the worker builds its own copy to copy from
    old: dict[str, torch.Tensor] | None = None
    problems = []
    for mine, key in zip(after, keys):
        expected = state[key]
        got = mine.tensor
        if tuple(got.shape) == tuple(expected.shape) and torch.equal(got.to(torch.float64), expected.to(torch.float64)):
            continue
        if old is None:
            old = {e.name: e.tensor for e in before()}
        if mine.name in old and tuple(old[mine.name].shape) == tuple(got.shape) and torch.equal(got, old[mine.name]):
            source = "still holds its value from before the copy"
        else:
            same = [k for k, v in state.items() if k != key and v.shape == got.shape
                    and torch.equal(v.to(torch.float64), got.to(torch.float64))]
            source = (f"holds torchvision's `{same[0]}`" if same else
                      "holds values found nowhere in the pretrained model")
        problems.append(f"your `{mine.name}` {source}, not torchvision's `{key}`")
    return problems


def expected_keys(entries: list[Entry]) -> list[str]:
    """The torchvision key each entry stands for: the one at its position, except that a BatchNorm leaf keeps its
    name (your `running_var` stands for the running_var of the BatchNorm at that position, whatever the order)."""
    keys = []
    state = pretrained_values()
    for mine, tv in zip(entries, torchvision_entries()):
        prefix = tv.name.rpartition(".")[0]
        leaf = _leaf(mine.name)
        named = f"{prefix}.{leaf}"
        keys.append(named if leaf in NORM_LEAVES and _leaf(tv.name) in NORM_LEAVES and named in state else tv.name)
    return keys


def report_values(problems: list[str], after: list[Entry], what: str, problem: str) -> None:
    buffers = sum(1 for e in after if e.kind == "buffer")
    lines = [f"after {what}, {len(problems)} of {len(after)} state_dict entries do not hold the pretrained value "
             f"they stand for: " + "; ".join(problems[:4]) + (" ..." if len(problems) > 4 else "")]
    stale = sum(1 for p in problems if "before the copy" in p)
    if stale and stale >= buffers // 2:
        lines.append("copy_weights must copy the whole state_dict, parameters AND buffers (running_mean, running_var, "
                     "num_batches_tracked): zip my_resnet.state_dict().items() with pretrained_resnet.state_dict()"
                     ".items(), not named_parameters(), then load_state_dict")
    if problem:
        lines.append(f"The cause: {problem}")
    fail("\n".join(lines))


# ---- checks ----------------------------------------------------------------------------------------

@requires("ResNet34")
def test_weight_copy_state_dict_lines_up_with_torchvision(sandbox):
    """ResNet34()'s state_dict lines up with torchvision's resnet34 entry by entry: 218 entries, same shapes, kinds."""
    handle = sandbox.construct("ResNet34")
    problem = misalignment(state_layout(sandbox, handle, "ResNet34()"))
    if problem:
        fail(problem)


@requires("ResNet34", "copy_weights")
def test_weight_copy_copied_entries_hold_pretrained_values(sandbox):
    """After copy_weights(ResNet34(), pretrained), every entry (parameters and buffers) holds its pretrained value."""
    model, before, problem = copy_into_default(sandbox)
    after = state_entries(sandbox, model, "ResNet34() after copy_weights")
    if len(after) != len(torchvision_entries()):
        fail(f"after copy_weights, ResNet34() has {len(after)} state_dict entries; torchvision's resnet34 has "
             f"{len(torchvision_entries())}" + (f"\nThe cause: {problem}" if problem else ""))
    problems = value_problems(after, before, expected_keys(after))
    if problems:
        report_values(problems, after, "copy_weights(ResNet34(), pretrained_resnet)", problem)


def affordable_sizes(sandbox, model, advise) -> list[int]:
    """The photo sizes this submission's ResNet34 can afford: time one small forward first.

    Slow is not wrong (a ResNet34 built on the learner's own as_strided conv2d needs tens of
    seconds per 224 px photo): the small photos are always compared, with a limit only a hang
    exceeds; the large ones when their estimated time fits the probe limit, else an advisory.
    A 16 px photo goes first, within the probe limit (a fraction of a second even for that
    ResNet34): a forward that never returns costs the probe limit, once (`sandbox.HUNG`).
    """
    small, large = SIZES
    x = photo_batch(small)[:1]
    try:  # a quarter-size photo within the probe limit first: a forward that never returns is seen in seconds
        sandbox.call(model, x[:, :, ::4, ::4].contiguous(), no_grad=True)
        started = time.monotonic()
        sandbox.call(model, x, no_grad=True, limit=PHOTO_FORWARD_SECONDS)
    except SubmissionRaised:
        return [small]  # the comparison below reports it
    one_small = time.monotonic() - started
    estimate = one_small * len(PHOTOS) * (large / small) ** 2
    if estimate <= sandbox.timeout:
        return [small, large]
    advise(f"ResNet34() needs {one_small:.1f} s for one {small}x{small} photo, so about {estimate:.0f} s for the "
           f"{len(PHOTOS)} photos at {large}x{large}, more than the {sandbox.timeout:g} s probe limit: its logits "
           f"were compared at {small}x{small} only (slow is not wrong; torch's F.conv2d is much faster than a "
           "convolution built on as_strided)")
    return [small]


@requires("ResNet34", "copy_weights")
def test_weight_copy_pretrained_logits_match_snapshot(sandbox, advise):
    """With the pretrained weights copied in, eval-mode logits on three photos (64 and 224 px) match the snapshot."""
    model, before, problem = copy_into_default(sandbox)
    set_mode(sandbox, model, False)
    failures = []
    for size in affordable_sizes(sandbox, model, advise):
        x = photo_batch(size)
        what = f"ResNet34() with the pretrained weights, in eval mode, on the photos {list(PHOTOS)} at {size}x{size}"
        try:
            got = tensor_of(sandbox.call(model, x, no_grad=True, limit=PHOTO_FORWARD_SECONDS), what)
        except SubmissionRaised as error:
            fail(f"{what} raised {error.type_name}: {error.message}\n{error.traceback}")
        expected = expected_logits(size)
        differences = logits_differences(got, expected)
        if not differences:
            continue
        line = f"at {size}x{size}: " + "; ".join(differences)
        if tuple(got.shape) == tuple(expected.shape):
            actual = as_logits_array(got)
            error = float(torch.from_numpy(actual).sub(expected).abs().nan_to_num(float("inf")).max())
            agree = int((torch.from_numpy(actual).argmax(dim=1) == expected.argmax(dim=1)).sum())
            line += f" (max abs error {error:.4g}; top-1 class agrees for {agree} of {len(PHOTOS)} photos)"
            rows = torch.from_numpy(actual).sum(dim=1)
            if bool(((rows - 1).abs() < 1e-3).all()) and bool((torch.from_numpy(actual) >= 0).all()):
                line += ("; every row sums to 1: forward returns probabilities, it must return the logits "
                         "(no softmax at the end)")
        failures.append(line)
    if failures:
        source = "the stand-in's stored snapshot" if pretrained_source() == "standin" else "torchvision's logits"
        text = (f"the logits differ from {source} (tolerance: atol={LOGITS.atol} + rtol={LOGITS.rtol} * |expected|, "
                "same top-1 class): " + "\n".join(failures))
        after = [] if problem else state_entries(sandbox, model, "ResNet34() after copy_weights")
        stale = value_problems(after, before, expected_keys(after)) if after else []
        if problem:
            text += f"\nThe cause is probably the state_dict order: {problem}"
        elif stale:
            text += (f"\nThe cause is probably the copy: after copy_weights, {len(stale)} state_dict entries do not "
                     f"hold their pretrained value ({'; '.join(stale[:2])}{' ...' if len(stale) > 2 else ''}); "
                     "copy_weights must load every entry, parameters and buffers")
        else:
            text += ("\nWith the weights in the right places, a difference comes from the forward pass: the stem "
                     "(7x7 conv, stride 2, padding 3; BatchNorm; ReLU; 3x3 max pool, stride 2, padding 1), the "
                     "strides of the groups, BatchNorm in eval mode (running statistics, eps inside the sqrt), the "
                     "average pool and the final Linear (logits, no softmax)")
        fail(text)


@requires("copy_weights")
def test_weight_copy_copy_weights_into_reference_model(sandbox):
    """copy_weights(model, pretrained) loads every entry of a correct ResNet34, buffers included; returns the model."""
    target = fresh_resnet34()
    before = entries_of(target)
    what = "copy_weights(a freshly initialised ResNet34, pretrained_resnet)"
    result = sandbox.call("copy_weights", target, sandbox.pretrained())
    if not isinstance(result, Handle) or result.type != "torchvision.models.resnet.ResNet":
        fail(f"{what} returned {result.type if isinstance(result, Handle) else repr(result)[:80]}; it must return "
             "my_resnet, the model it loaded the weights into (the course writes my_resnet = copy_weights(my_resnet, "
             "pretrained_resnet))")
    after = state_entries(sandbox, result, "the model copy_weights returned")
    keys = [e.name for e in torchvision_entries()]
    if len(after) != len(keys):
        fail(f"the model {what} returned has {len(after)} state_dict entries; expected {len(keys)}")
    problems = value_problems(after, lambda: before, keys)
    if problems:
        report_values(problems, after, what, "")
