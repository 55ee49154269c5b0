"""The submission's own `train(args)`: found in its source, run in the sandbox, judged here.

Both training checks use it the same way: `test_modules` for the SimpleMLP loop on MNIST,
`test_feature_extraction` for the feature-extraction loop on CIFAR. `own_train` decides
statically which loop the last `train` is; `run_own_train` runs it in the worker with the
course's data helpers returning the harness's digits and a short budget; `judge_own_run`
holds its run to the course's loop and what it returns to the truth: gradients zeroed between
steps and BatchNorm in eval mode for validation (the worker watches the optimizer and the
model: `under_test.worker._TrainLedger`), a loss per step, and a last accuracy that is the
returned model's. The loss and accuracy helpers serve the harness's own training checks too.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

import pytest
import torch

from conformance.areas import GIVEN
from conformance.budgets import TRAIN_SECONDS, Training
from conformance.compare import fail
from under_test.sandbox import SubmissionRaised
from under_test.wire import Handle, Returned

def accuracy(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((outputs.argmax(dim=-1) == labels).to(torch.float64).mean())


def loss_fell(losses: list[float], budget: Training) -> bool:
    """The mean of the last `budget.loss_window` losses is at most `budget.loss_drop` times the first ones'."""
    window = budget.loss_window
    if len(losses) < 2 * window or not all(math.isfinite(v) for v in losses):
        return False
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    return last <= budget.loss_drop * first


def describe_losses(losses: list[float]) -> str:
    shown = [f"{v:.3g}" for v in losses]
    if len(shown) > 12:
        shown = shown[:6] + ["..."] + shown[-6:]
    return f"[{', '.join(shown)}] ({len(losses)} batches)"



RESNET_NAMES = frozenset({"get_resnet_for_feature_extraction", "get_cifar", "get_cifar_subset", "ResNet34", "copy_weights", "ResNetTrainingArgs"})
MLP_NAMES = frozenset({"SimpleMLP", "get_mnist", "SimpleMLPTrainingArgs"})
ARGS_CLASS = {"resnet": "ResNetTrainingArgs", "mlp": "SimpleMLPTrainingArgs"}


@dataclass(frozen=True)
class OwnTrain:
    """The submission's last `train`, read from its source: which course loop it is, which args class it takes."""

    kind: str  # "resnet" (feature extraction) or "mlp" (SimpleMLP on MNIST)
    args_class: str
    where: str


def _annotation_name(node: ast.expr | None) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.strip().rpartition(".")[2]
    return ""


def own_train(program) -> OwnTrain | str:
    """What the submission's `train` is, decided statically; a string says why it is not run."""
    definition = program.last("train")
    if definition is None:
        return "the submission defines no train(args)"
    if definition.stub:
        return "train(args) is only the course's stub"
    node = definition.node
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"train ({definition.where}) is not a function"
    positional = node.args.posonlyargs + node.args.args
    required = len(positional) - len(node.args.defaults)
    if not positional or required > 1 or any(d is None for d in node.args.kw_defaults):
        signature = ", ".join(a.arg for a in positional)
        return (f"the last train ({definition.where}) is train({signature}), not the course's train(args); "
                "it is not run")
    annotation = _annotation_name(positional[0].annotation)
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    if annotation == ARGS_CLASS["resnet"] or (annotation not in MLP_NAMES and used & RESNET_NAMES
                                               and not used & MLP_NAMES):
        kind = "resnet"
    elif annotation == ARGS_CLASS["mlp"] or (used & MLP_NAMES and not used & RESNET_NAMES):
        kind = "mlp"
    else:
        return (f"the last train(args) ({definition.where}) could not be told to be the feature-extraction or the "
                "SimpleMLP loop (no ResNetTrainingArgs/SimpleMLPTrainingArgs annotation, and it uses the names of "
                "both or neither)")
    args_class = annotation if annotation and annotation[0].isupper() else ARGS_CLASS[kind]
    return OwnTrain(kind, args_class, definition.where)


def skip_unless_own_train(program, kind: str) -> OwnTrain:
    """The submission's own train of this kind, or the check is reported `given` (not graded)."""
    plan = own_train(program)
    if isinstance(plan, str):
        pytest.skip(f"{GIVEN}{plan}; the harness's own training checks stand in for it")
    if plan.kind != kind:
        other = {"resnet": "the feature-extraction train(args)", "mlp": "the SimpleMLP train(args)"}[plan.kind]
        pytest.skip(f"{GIVEN}the last train(args) ({plan.where}) is {other}, graded by its own check")
    return plan


def _number(value: object) -> float | None:
    if type(value) in (float, int):
        return float(value)
    if isinstance(value, Returned) and value.type == "torch.Tensor" and value.tensor.numel() == 1 \
            and value.tensor.is_floating_point():
        return float(value.tensor.reshape(()))
    return None


def numbers(value: object) -> list[float] | None:
    """A list of plain numbers (or one-element float tensors) as floats; [] for an empty list; else None."""
    if not isinstance(value, list):
        return None
    found = [_number(v) for v in value]
    return None if any(n is None for n in found) else found


@dataclass(frozen=True)
class Ledger:
    """What the worker saw while train ran (`under_test.worker._TrainLedger`): optimizer steps, and BatchNorm calls."""

    count: int = 0
    stale: int = 0  # steps whose gradients still held the gradients of the step before: nothing zeroed them
    first_stale: int | None = None
    train_mode_no_grad: int = 0  # BatchNorm calls in train mode with gradients off: evaluating without model.eval()

    @classmethod
    def read(cls, value: object) -> Ledger:
        if not isinstance(value, dict):
            return cls()
        count, stale, first, unset = (value.get(k) for k in ("count", "stale", "first_stale", "train_mode_no_grad"))
        ok = all(type(v) is int for v in (count, stale, unset)) and (first is None or type(first) is int)
        return cls(count, stale, first, unset) if ok else cls()


@dataclass
class OwnRun:
    model: Handle
    losses: list[float] | None  # None: train returned no loss list (or not one of numbers)
    accuracies: list[float] | None  # None: train returned no accuracy list
    ledger: Ledger
    call: str


def run_own_train(sandbox, plan: OwnTrain, datasets: tuple, defaults: dict, advise, budget: Training) -> OwnRun | None:
    """Run the submission's train(args) on `datasets` with the short `budget`; its model and lists.

    None (with an advisory) when train returns nothing, as older templates do (they plot instead):
    it ran without an error, and there is no model to judge.
    """
    overrides = {"epochs": budget.epochs, "batch_size": budget.batch}
    try:
        result, used = sandbox.run_train(datasets, args_class=plan.args_class, overrides=overrides,
                                         defaults=defaults, timeout=TRAIN_SECONDS)
    except SubmissionRaised as error:
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
        note = (f"train(args) ({plan.where}) raised, run with {plan.args_class} ({shown}) on {len(datasets[0])} "
                "digits that get_cifar / get_cifar_subset / get_mnist return.")
        if "does not require grad" in error.message:
            note += (" Nothing the loss depends on requires grad: the head was frozen together with the backbone "
                     "(freeze first, then create the new head)")
        error.add_note(note)
        raise
    shown = ", ".join(f"{k}={v!r}" for k, v in used["fields"].items())
    built = used["type"].rpartition(".")[2]
    call = f"train({plan.args_class}({shown}))" if built == plan.args_class else \
        f"train(args) with args = SimpleNamespace({shown}) ({plan.args_class} is not defined; the course's defaults)"
    if result is None:
        advise(f"{call}, run on digits with the course's data helpers, ran without an error but returned nothing, "
               "so the model it trained could not be judged; the course's train returns (loss_list, "
               "accuracy_list, model)")
        return None
    ledger = Ledger.read(used.get("steps"))
    if isinstance(result, Handle):
        return OwnRun(result, None, None, ledger, call)
    items = list(result) if isinstance(result, tuple) else []
    models = [v for v in items if isinstance(v, Handle)]
    if not models:
        fail(f"{call}, run on digits with the course's data helpers, returned {_shape_of(result)}; the course's "
             "train returns the model, (loss_list, model) or (loss_list, accuracy_list, model)")
    losses = numbers(items[0]) if len(items) >= 2 else None
    accuracies = numbers(items[1]) if len(items) >= 3 else None
    return OwnRun(models[-1], losses, accuracies, ledger, call)


def near_ties(outputs: torch.Tensor) -> torch.Tensor:
    """Which rows have two largest outputs so close that another batch size could swap them."""
    if outputs.shape[-1] < 2:
        return torch.zeros(len(outputs), dtype=torch.bool)
    top = outputs.to(torch.float64).topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]) <= 1e-4 * (1 + top[:, 0].abs())


def judge_own_run(run: OwnRun, outputs: torch.Tensor, labels: torch.Tensor, n_train: int, advise) -> None:
    """What every own train(args) is held to, whatever it trains: fresh gradients at every step, and the
    loss and accuracy lists it returns telling the truth about its run.

    `outputs` are the returned model's eval-mode outputs on the held-out `labels`, which the
    course's test loader also gave it.
    """
    steps = run.ledger
    if steps.stale:
        fail(f"{run.call}, run on {n_train} digits: from step {steps.first_stale} on, optimizer.step() used "
             f"gradients that still held those of the step before ({steps.stale} of {steps.count} steps): nothing "
             "zeroes the gradients between steps, so each step follows the sum of every batch so far. Zero them "
             "once per step: loss.backward(), optimizer.step(), optimizer.zero_grad(), as the course's loop does")
    if steps.train_mode_no_grad:
        fail(f"{run.call}, run on {n_train} digits: its model's BatchNorm layers were called "
             f"{steps.train_mode_no_grad} times in train mode with gradients off, which is what a validation loop "
             "without model.eval() does: each test batch was normalised with its own statistics (so the accuracy "
             "is not the model's) and the running statistics absorbed the test set. Call model.eval() before the "
             "validation loop, and model.train() before each epoch's training, as the course's loop does")
    if run.losses == []:
        fail(f"{run.call}, run on {n_train} digits for {steps.count} steps, returned an empty loss list: the "
             "course's train appends loss.item() to loss_list after every step")
    if run.accuracies is None:
        return
    if not run.accuracies:
        fail(f"{run.call} returned an empty accuracy list: the course's train appends, after every epoch, the "
             "fraction of the test set its model classifies right")
    reported, held = run.accuracies[-1], len(labels)
    hits, ties = outputs.argmax(dim=-1) == labels, near_ties(outputs)
    right, sure = int(hits.sum()), int((hits & ~ties).sum())  # a near tie may count either way

    def counts(fraction: float) -> bool:
        return sure - 1e-6 * held <= fraction * held <= sure + int(ties.sum()) + 1e-6 * held

    if counts(reported):
        return
    if counts(reported / 100):
        advise(f"{run.call} reports accuracy in percent ({reported:g} for {right} of {held} right); the course's "
               "accuracy_list holds fractions (num_correct / len(testset))")
        return
    fail(f"{run.call}, run on {n_train} digits: the last entry of its accuracy list is {reported:.4g}, but the model "
         f"it returned classifies {right} of the {held} test digits right ({right / held:.4g}) in eval mode. After "
         "each epoch the course's train calls model.eval(), counts argmax(model(imgs)) == labels over the whole "
         "test loader, and appends num_correct / len(testset)")


def _shape_of(value: object) -> str:
    if isinstance(value, Handle):
        return f"a {value.type}"
    if isinstance(value, Returned):
        return f"a tensor of shape {tuple(value.tensor.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_shape_of(v) for v in value[:4])
        return f"a {type(value).__name__} ({inner}{', ...' if len(value) > 4 else ''})"
    return f"{type(value).__name__} {value!r:.60}"


