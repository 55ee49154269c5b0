"""Area `feature_extraction` (rubric item 8): the pretrained backbone frozen, a fresh head, only the head trains.

Oracles, all in the harness: the "pretrained" ResNet34 (`fixtures.standin.pretrained_resnet34()`,
the deterministic stand-in, or torchvision's real weights with CONFORMANCE_PRETRAINED=torch-cache)
for the backbone's values, in torchvision's state_dict order (copy_weights pairs entries by
position, so the submission's first 216 entries are the backbone, its last two the head);
torchvision's own resnet34 holding those weights, with the submission's head weights, for
the logits; and real data to train on: scikit-learn's handwritten digits
(`fixtures.digits`), upscaled to 16x16 (`conformance.budgets`), 3 channels, ImageNet-normalised.

The harness trains the head the course's way (Adam over the parameters that require grad,
cross-entropy, model in train mode) in the sandbox worker (`Sandbox.fit`), then judges from
plain data: the state_dict before and after, the loss of every batch, and eval-mode logits
on held-out digits computed with `Sandbox.call`. Where the submission defines its own
`train(args)` for feature extraction, it is run with the course's data helpers returning
the digits and a short budget (`Sandbox.run_train`), and the model it returns is judged the
same way. Backbone BatchNorm buffers that drift while the head trains (the course's trainer
leaves the model in train mode, which updates them) are accepted with an advisory; under
--strict a frozen backbone must keep them.

The helpers that find, run and judge a submission's own `train(args)` are in
`conformance.training`, shared with the SimpleMLP training checks of `test_modules`.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import example, given, seed
from hypothesis import strategies as st

from conformance.areas import area, requires
from conformance.budgets import FE_HEAD, FE_OWN, MODEL_CALL_SECONDS, TRAIN_SECONDS
from conformance.compare import LOGITS, fail, tensor_of
from conformance.course import probes
from conformance.probing import Entry, set_mode, state_entries
from conformance.training import (
    accuracy, describe_losses, judge_own_run, loss_fell, run_own_train, skip_unless_own_train,
)
from fixtures.digits import N_CLASSES, resnet_digits
from fixtures.standin import pretrained_resnet34, pretrained_source, pretrained_values
from under_test.sandbox import SubmissionRaised, WorkerDied
from under_test.wire import Handle, WireError

pytestmark = [area("feature_extraction")]

SUBJECT = "get_resnet_for_feature_extraction"
BACKBONE_ENTRIES = 216  # torchvision's resnet34 state_dict: 216 backbone entries, then fc.weight and fc.bias
FEATURES = 512
# Each draw builds a full ResNet34 (about a second), so few are drawn (`conformance.budgets`), plus 1000, the count
# at which a copy made after the head was replaced, or a head never replaced, has the right shape.
N_CLASS_DRAWS = st.integers(1, 50)

# The harness's head training and the submission's own train(args): `conformance.budgets`.
RESNET_ARGS_DEFAULTS = {"batch_size": 16, "epochs": 1, "learning_rate": 1e-3, "n_classes": N_CLASSES}

FRESH_HEAD_HINT = ("build the model in this order: my_resnet = ResNet34(); copy_weights(my_resnet, pretrained) "
                   "(the default ResNet34 has the 1000-class head the pretrained weights need); "
                   "my_resnet.requires_grad_(False); then my_resnet.out_layers[-1] = Linear(512, n_classes), "
                   "created after freezing so that only it trains")
DRIFT_NOTE = ("the frozen backbone's BatchNorm running statistics changed while only the head was trained "
              "(train mode updates running_mean/running_var/num_batches_tracked even with requires_grad=False); "
              "accepted, the course's trainer does the same")
STRICT_DRIFT = ("--strict requires a frozen backbone to stay fixed: keep its BatchNorm layers in eval mode while the "
                "head trains (e.g. override train() so that the backbone stays in eval mode)")


# ---- the oracle ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def pretrained_entries() -> tuple[tuple[str, torch.Tensor], ...]:
    """The pretrained torchvision resnet34 state_dict, in order, as (name, tensor)."""
    return tuple(pretrained_values().items())


@functools.lru_cache(maxsize=1)
def feature_oracle() -> torch.nn.Module:
    """torchvision's resnet34 with the pretrained weights, in eval mode, its fc removed: image -> 512 features."""
    model = pretrained_resnet34().eval()
    model.fc = torch.nn.Identity()
    return model


def oracle_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.linear(feature_oracle()(x), weight, bias)


@functools.lru_cache(maxsize=1)
def digits() -> tuple:
    return resnet_digits(FE_HEAD.train, FE_HEAD.held_out, FE_HEAD.size)


def weights_word() -> str:
    return "stand-in pretrained" if pretrained_source() == "standin" else "pretrained ImageNet"


# ---- reading the submission's model -----------------------------------------------------------------

def build(sandbox, n_classes: int) -> Handle:
    """get_resnet_for_feature_extraction(n_classes), with a hint when it raises."""
    try:
        handle = sandbox.request("call", SUBJECT, (n_classes,), {}, timeout=MODEL_CALL_SECONDS)["value"]
    except SubmissionRaised as error:
        hint = FRESH_HEAD_HINT
        if n_classes != 1000 and ("copy_weights" in error.traceback or "size mismatch" in error.message):
            hint = ("the pretrained weights were copied after the head was replaced: copy_weights then meets "
                    f"your Linear(512, {n_classes}) where the pretrained model has Linear(512, 1000). " + hint)
        error.add_note(f"{SUBJECT}({n_classes}) raised. {hint}")
        raise
    if not isinstance(handle, Handle):
        fail(f"{SUBJECT}({n_classes}) returned {handle!r:.80}, not a model")
    return handle


@dataclass
class Model:
    """A submission's feature-extraction model, read back: its entries split into backbone and head."""

    entries: list[Entry]
    trainable: dict[str, bool]

    @property
    def backbone(self) -> list[Entry]:
        return self.entries[:BACKBONE_ENTRIES]

    @property
    def head(self) -> list[Entry]:
        return self.entries[BACKBONE_ENTRIES:]


def read(sandbox, handle: Handle, what: str) -> Model:
    entries = state_entries(sandbox, handle, what)
    return Model(entries, {e.name: e.requires_grad for e in entries if e.kind == "parameter"})


def sample_images() -> torch.Tensor:
    """The 4 held-out digits the static checks run a model on."""
    return digits()[1].tensors[0][:4]


@dataclass
class Built:
    """get_resnet_for_feature_extraction(n) as the two static checks see it: its entries, then its eval-mode reply on
    `sample_images()`, or what stopped that call (raised again by the check that looks at the reply)."""

    model: Model
    reply: object = None
    stopped: BaseException | None = None
    _wrong: list[str] | None = None

    def wrong(self) -> list[str]:
        """`pretrained_mismatches` of its backbone's parameters and buffers, compared once (87 MB) for both checks."""
        if self._wrong is None:
            self._wrong = pretrained_mismatches(self.model.backbone, ("parameter", "buffer"))
        return self._wrong


# The two static checks draw the same n_classes (`STATIC_SEED`), and each build of a full ResNet34 costs about half
# a second of the submission's time, so the latest sandbox's builds are read once for both. A build is a pure
# function of n (the worker seeds every call), so a memo gives what a second build would.
STATIC_SEED = 20_241_119
_BUILT: dict = {"sandbox": None, "builds": {}}


def built(sandbox, n_classes: int) -> Built:
    if _BUILT["sandbox"] is None or _BUILT["sandbox"]() is not sandbox:
        _BUILT.update(sandbox=weakref.ref(sandbox), builds={})
    builds = _BUILT["builds"]
    if n_classes not in builds:
        handle = build(sandbox, n_classes)
        entry = Built(read(sandbox, handle, f"{SUBJECT}({n_classes})"))
        try:
            set_mode(sandbox, handle, False)
            entry.reply = sandbox.request("call", handle, (sample_images(),), {}, no_grad=True,
                                          timeout=MODEL_CALL_SECONDS)["value"]
        except (SubmissionRaised, WorkerDied, WireError) as error:
            entry.stopped = error
        if entry.stopped is None:  # the memo holds plain data: the model itself (87 MB) is not needed again
            sandbox.release(handle)
        builds[n_classes] = entry
    return builds[n_classes]


def backbone_alignment(model: Model, what: str) -> None:
    """The first 216 entries have torchvision's backbone shapes and kinds, in order (what copy_weights needs)."""
    expected = pretrained_entries()[:BACKBONE_ENTRIES]
    if len(model.entries) < BACKBONE_ENTRIES:
        fail(f"{what} has {len(model.entries)} state_dict entries; a ResNet34 with a new head has "
             f"{BACKBONE_ENTRIES + 2} ({BACKBONE_ENTRIES} for the backbone, then the head's weight and bias), like "
             "torchvision's resnet34. See the weight_copy area for where the order goes wrong.")
    for index, (mine, (name, value)) in enumerate(zip(model.backbone, expected)):
        kind = "buffer" if name.endswith(("running_mean", "running_var", "num_batches_tracked")) else "parameter"
        if tuple(mine.tensor.shape) != tuple(value.shape) or mine.kind != kind:
            fail(f"{what}: state_dict entry {index} `{mine.name}` ({mine.kind}, shape {tuple(mine.tensor.shape)}) "
                 f"does not line up with torchvision's `{name}` ({kind}, shape {tuple(value.shape)}), so the "
                 "pretrained weights cannot be copied entry by entry (the weight_copy area says more)")


def head_problems(model: Model, n_classes: int, what: str) -> str:
    """Why the entries after the backbone are not one trainable Linear(512, n_classes); empty when they are."""
    head = model.head
    listing = ", ".join(f"`{e.name}` {tuple(e.tensor.shape)}" for e in head) or "nothing"
    if len(head) != 2 or any(e.kind != "parameter" for e in head) or head[0].tensor.ndim != 2 \
            or head[1].tensor.ndim != 1:
        extra = ""
        if len(head) > 2:
            extra = (": the head must be ONE Linear(512, n_classes) that REPLACES the last layer (the ImageNet "
                     "Linear(512, 1000)), not layers added after it")
        return (f"{what}: after the {BACKBONE_ENTRIES} backbone entries come {listing}; expected exactly the "
                f"head's weight ({n_classes}, {FEATURES}) and bias ({n_classes},){extra}")
    weight, bias = head[0].tensor, head[1].tensor
    if tuple(weight.shape) != (n_classes, FEATURES) or tuple(bias.shape) != (n_classes,):
        text = (f"{what}: the head is Linear({weight.shape[1]}, {weight.shape[0]}) (weight {tuple(weight.shape)}, "
                f"bias {tuple(bias.shape)}); expected Linear({FEATURES}, {n_classes})")
        if weight.shape[1] != FEATURES:
            text += f"; it reads the {FEATURES} features the average pool gives (in_features=512)"
        if tuple(weight.shape) == (1000, FEATURES) and n_classes != 1000:
            text += ("; this is still the ImageNet classifier: replace out_layers[-1] with a new "
                     "Linear(512, n_classes)")
        elif weight.shape[0] != n_classes:
            text += f"; its out_features must be n_classes (here {n_classes}), not a fixed number"
        return text
    frozen = [e.name for e in head if not model.trainable.get(e.name, False)]
    if frozen:
        return (f"{what}: the new head's {', '.join(frozen)} do not require grad, so nothing can train. "
                "Freeze the backbone BEFORE creating the head (a new Linear's parameters require grad), or set "
                "requires_grad_(True) on the head afterwards")
    return ""


def identical(name: str, a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical values of the same dtype; a num_batches_tracked counter's dtype is the learner's choice."""
    if name.rpartition(".")[2] == "num_batches_tracked":
        return a.shape == b.shape and torch.equal(a.to(torch.float64), b.to(torch.float64))
    return a.dtype == b.dtype and torch.equal(a, b)


def pretrained_mismatches(entries: list[Entry], kinds: tuple[str, ...]) -> list[str]:
    """Backbone entries of these kinds that are not bit-identical to the pretrained values."""
    expected = pretrained_entries()
    return [e.name for e, (_, value) in zip(entries, expected)
            if e.kind in kinds and not identical(e.name, e.tensor, value)]


def changed(before: list[Entry], after: list[Entry], kinds: tuple[str, ...]) -> list[str]:
    return [b.name for b, a in zip(before, after) if b.kind in kinds and not identical(b.name, a.tensor, b.tensor)]


def fail_if_backbone_moved(before: Model, after: Model, what: str, recipe: str) -> None:
    moved = changed(before.backbone, after.backbone, ("parameter",))
    if moved:
        fail(f"training the head of {what} ({recipe}) changed {len(moved)} backbone parameters ({names(moved)}): "
             "they still require grad. Only the new head may train: freeze the backbone with "
             "requires_grad_(False) before creating the head")


def names(items: list[str], limit: int = 3) -> str:
    return ", ".join(f"`{n}`" for n in items[:limit]) + (", ..." if len(items) > limit else "")


def eval_outputs(sandbox, handle: Handle, x: torch.Tensor, what: str) -> torch.Tensor:
    """The model's eval-mode outputs on x (no grad), as a plain tensor."""
    set_mode(sandbox, handle, False)
    return tensor_of(sandbox.request("call", handle, (x,), {}, no_grad=True, timeout=MODEL_CALL_SECONDS)["value"], what)


def judge_buffers(moved: list[str], strict: bool, advise, when: str) -> None:
    if not moved:
        return
    note = f"{DRIFT_NOTE} ({len(moved)} buffers changed {when}, e.g. {names(moved, 2)})"
    if strict:
        fail(f"{note}. {STRICT_DRIFT}")
    advise(DRIFT_NOTE)


# ---- checks -------------------------------------------------------------------------------------------

@requires(SUBJECT, "ResNet34")
@seed(STATIC_SEED)
@probes(lambda p: {"n_classes": p["n_classes"]})
@example(n_classes=1000)
@given(n_classes=N_CLASS_DRAWS)
def test_feature_extraction_backbone_pretrained_and_frozen(sandbox, n_classes):
    """The backbone holds the pretrained weights (parameters and buffers, bit for bit) and none of it requires grad."""
    what = f"{SUBJECT}({n_classes})"
    entry = built(sandbox, n_classes)
    model = entry.model
    backbone_alignment(model, what)
    wrong = entry.wrong()
    if wrong:
        params = [e.name for e in model.backbone if e.kind == "parameter"]
        if set(params) <= set(wrong):
            fail(f"{what}: none of the backbone's parameters holds the {weights_word()} weights (e.g. "
                 f"{names(wrong, 2)}): they were never copied. Call copy_weights(my_resnet, "
                 "models.resnet34(weights=models.ResNet34_Weights.IMAGENET1K_V1)) before replacing the head")
        fail(f"{what}: {len(wrong)} of the {BACKBONE_ENTRIES} backbone entries do not hold their {weights_word()} "
             f"value ({names(wrong)}); copy_weights must load every entry, buffers included, and nothing may "
             "change them afterwards")
    trainable = [e.name for e in model.backbone if e.kind == "parameter" and model.trainable.get(e.name, False)]
    if trainable:
        total = sum(e.kind == "parameter" for e in model.backbone)
        fail(f"{what}: {len(trainable)} of the backbone's {total} parameters still require grad ({names(trainable)}), "
             "so training would change the pretrained features. Call my_resnet.requires_grad_(False) after copying "
             "the weights and before creating the new head")


@requires(SUBJECT, "ResNet34")
@seed(STATIC_SEED)
@probes(lambda p: {"n_classes": p["n_classes"]})
@example(n_classes=1000)
@given(n_classes=N_CLASS_DRAWS)
def test_feature_extraction_head_is_a_fresh_trainable_linear(sandbox, n_classes):
    """The head is a new, trainable Linear(512, n_classes), not a copy of the pretrained one, and forward uses it."""
    what = f"{SUBJECT}({n_classes})"
    entry = built(sandbox, n_classes)
    model = entry.model
    backbone_alignment(model, what)
    problem = head_problems(model, n_classes, what)
    if problem:
        fail(problem)
    weight, bias = (e.tensor for e in model.head)
    fc_weight, fc_bias = pretrained_entries()[-2][1], pretrained_entries()[-1][1]
    if n_classes <= fc_weight.shape[0] and torch.equal(weight, fc_weight[:n_classes]) \
            and torch.equal(bias, fc_bias[:n_classes]):
        fail(f"{what}: the head holds the pretrained classifier's weights (fc.weight, fc.bias): it was copied after "
             f"the head was replaced, or never replaced. The head must be a fresh Linear. {FRESH_HEAD_HINT}")
    x = sample_images()
    if entry.stopped is not None:
        raise entry.stopped.with_traceback(None)
    got = tensor_of(entry.reply, f"{what} in eval mode on 4 digit images {tuple(x.shape)}")
    if tuple(got.shape) != (len(x), n_classes):
        fail(f"{what} in eval mode on images of shape {tuple(x.shape)} returned shape {tuple(got.shape)}; expected "
             f"({len(x)}, {n_classes}): one logit per class")
    if entry.wrong():
        return  # the backbone check reports it; the logits cannot match the oracle's
    expected = oracle_logits(x, weight, bias)
    if not LOGITS.close(got.to(expected.dtype), expected):
        error = float((got.to(expected.dtype) - expected).abs().nan_to_num(float("inf")).max())
        fail(f"{what} in eval mode on 4 digit images: the logits differ from torchvision's resnet34 holding the same "
             f"{weights_word()} backbone and your head's weight and bias (max abs error {error:.4g}; tolerance "
             f"atol={LOGITS.atol} + rtol={LOGITS.rtol} * |expected|). forward must run the backbone, the average "
             "pool, then the new head, and return its output (the logits)")


@requires(SUBJECT, "ResNet34")
def test_feature_extraction_trains_only_the_head_on_digits(sandbox, strict, advise):
    """Trained on digits the course's way, only the head changes, the loss falls and held-out accuracy beats chance."""
    what = f"{SUBJECT}({N_CLASSES})"
    train, held_out = digits()
    x, y = train.tensors
    x_held, y_held = held_out.tensors
    handle = build(sandbox, N_CLASSES)
    before = read(sandbox, handle, what)
    backbone_alignment(before, what)
    problem = head_problems(before, N_CLASSES, what)
    if problem:
        fail(problem)
    optimiser = f"Adam(lr={FE_HEAD.lr}) over the parameters that require grad, F.cross_entropy, model.train()"
    recipe = f"{optimiser}, {FE_HEAD.recipe()}, 3 channels"
    if any(before.trainable.get(e.name, False) for e in before.backbone if e.kind == "parameter"):
        # Backbone parameters that require grad move at the first step as surely as over the whole training, which
        # costs ten times as much with the backbone's gradients: one batch decides.
        sandbox.fit(handle, x[:FE_HEAD.batch], y[:FE_HEAD.batch], epochs=1, batch_size=FE_HEAD.batch, lr=FE_HEAD.lr,
                    timeout=TRAIN_SECONDS)
        fail_if_backbone_moved(before, read(sandbox, handle, f"{what} after one step"), what,
                               f"{optimiser}, one batch of {FE_HEAD.batch} digits")
        handle = build(sandbox, N_CLASSES)  # nothing moved: train a fresh model as below
        before = read(sandbox, handle, what)
    start = eval_outputs(sandbox, handle, x_held, f"{what} in eval mode on {len(y_held)} held-out digits")
    losses = sandbox.fit(handle, x, y, epochs=FE_HEAD.epochs, batch_size=FE_HEAD.batch, lr=FE_HEAD.lr,
                         timeout=TRAIN_SECONDS)
    after = read(sandbox, handle, f"{what} after training")
    end = eval_outputs(sandbox, handle, x_held, f"{what} after training, in eval mode on the held-out digits")
    fail_if_backbone_moved(before, after, what, recipe)
    if not changed(before.head, after.head, ("parameter",)):
        fail(f"training {what} ({recipe}) left the head unchanged: its parameters got no gradient, so forward does not "
             "use the new head (replace the module forward calls, e.g. out_layers[-1])")
    loss_before, loss_after = (float(F.cross_entropy(o.to(torch.float32), y_held)) for o in (start, end))
    score = accuracy(end, y_held)
    summary = (f"training loss {describe_losses(losses)}; held-out cross-entropy {loss_before:.3f} -> "
               f"{loss_after:.3f}; held-out accuracy {score:.1%} (chance {1 / N_CLASSES:.0%})")
    if not loss_fell(losses, FE_HEAD) or not loss_after < loss_before:
        fail(f"training the head of {what} ({recipe}) did not lower the loss: {summary}. forward must return the "
             "logits of the new head on top of the frozen pretrained features")
    if score < FE_HEAD.min_accuracy:
        fail(f"after training the head of {what} ({recipe}): {summary}; a linear head on the frozen pretrained "
             f"features reaches at least {FE_HEAD.min_accuracy:.0%}. In eval mode the backbone's BatchNorm must use its "
             "running statistics and forward must return the head's logits")
    judge_buffers(changed(before.backbone, after.backbone, ("buffer",)), strict, advise, "while the head trained")


def test_feature_extraction_own_train_trains_only_the_head(sandbox, program, strict, advise):
    """The submission's own train(args), on digits with a short budget, returns a model whose backbone is untouched."""
    plan = skip_unless_own_train(program, "resnet")
    train, held_out = digits()
    x_held, y_held = held_out.tensors
    run = run_own_train(sandbox, plan, (train, held_out), RESNET_ARGS_DEFAULTS, advise, FE_OWN)
    if run is None:
        return
    what = f"the model {run.call} returned"
    model = read(sandbox, run.model, what)
    backbone_alignment(model, what)
    problem = head_problems(model, N_CLASSES, what)
    if problem:
        fail(problem)
    wrong = pretrained_mismatches(model.backbone, ("parameter",))
    if wrong:
        fail(f"{run.call}, run on {len(train)} digits, returned a model whose backbone does not hold the "
             f"{weights_word()} weights: {len(wrong)} parameters differ ({names(wrong)}), changed by training (or "
             "never copied). Feature extraction trains "
             "only the head: build the model with get_resnet_for_feature_extraction (backbone frozen) and give the "
             "optimizer only the head's parameters, e.g. Adam(model.out_layers[-1].parameters())")
    outputs = eval_outputs(sandbox, run.model, x_held, f"{what}, in eval mode on {len(y_held)} held-out digits")
    score = accuracy(outputs, y_held)
    judge_own_run(run, outputs, y_held, len(train), advise)
    if run.losses and not loss_fell(run.losses, FE_OWN):
        fail(f"{run.call}, run on {len(train)} digits: its loss list does not fall: {describe_losses(run.losses)} "
             f"(held-out accuracy {score:.1%}). Each step must compute F.cross_entropy(model(imgs), labels), then "
             "loss.backward(), optimizer.step(), optimizer.zero_grad()")
    if score < FE_OWN.min_accuracy:
        fail(f"{what}, run on {len(train)} digits, reaches {score:.1%} held-out accuracy (chance "
             f"{1 / N_CLASSES:.0%}); one epoch of head training reaches at least {FE_OWN.min_accuracy:.0%}"
             + (f"; its losses: {describe_losses(run.losses)}" if run.losses else ""))
    judge_buffers(pretrained_mismatches(model.backbone, ("buffer",)), strict, advise, f"during {run.call}")
