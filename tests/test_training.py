"""Training in the sandbox: the harness's loop (`fit`), the submission's own train(args) (`run_train`),
the digit data they use, and how the checks read a submission's train and its results."""

from __future__ import annotations

import re

import pytest
import torch

from conformance.budgets import FE_OWN, MLP, TRAIN_SECONDS
from conformance.compare import CheckFailure
from conformance.training import Ledger, OwnRun, OwnTrain, judge_own_run, loss_fell, near_ties, numbers, own_train
from corpus import ROOT, grade
from fixtures import digits
from fixtures.digits import HELD_OUT_EVERY, mnist_digits, resnet_digits
from under_test.loader import extract
from under_test.sandbox import Sandbox, SubmissionRaised
from under_test.wire import Handle, Returned
from under_test.worker import _QuietProgress

TOY = """
import torch as t
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(t.relu(self.body(x)))

def frozen_body():
    model = Tiny()
    model.body.requires_grad_(False)
    return model

def all_frozen():
    model = Tiny()
    model.requires_grad_(False)
    return model

class ToyArgs:
    batch_size = 64
    epochs = 5
    learning_rate = 0.05
    note = "kept"

def get_cifar():
    raise RuntimeError("would download")

def train(args):
    trainset, testset = get_cifar_subset(trainset_size=10)
    model = frozen_body()
    optimizer = t.optim.Adam(model.head.parameters(), lr=args.learning_rate)
    losses = []
    for epoch in tqdm(range(args.epochs)):
        pbar = tqdm(DataLoader(trainset, batch_size=args.batch_size, shuffle=True))
        for x, y in pbar:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            pbar.set_postfix(loss=f"{loss.item():.3f}")
    line(losses)
    return losses, [len(testset)], model
"""


def toy_data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen)
    return x, x[:, :3].argmax(dim=1)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    path = tmp_path_factory.mktemp("sub") / "toy.py"
    path.write_text(TOY)
    with Sandbox(path, timeout=20) as sandbox:
        yield sandbox


def entries(box, handle) -> dict[str, torch.Tensor]:
    return {name: value.tensor for name, _, value in box.state(handle)["entries"]}


# ---- fit: the harness's training loop --------------------------------------------------------

def test_fit_trains_only_what_requires_grad_and_returns_plain_losses(box):
    box.begin_check()
    handle = box.call("frozen_body")
    before = entries(box, handle)
    x, y = toy_data()
    losses = box.fit(handle, x, y, epochs=3, batch_size=16, lr=0.05, timeout=TRAIN_SECONDS)
    assert len(losses) == 3 * 3 and all(type(v) is float for v in losses)
    after = entries(box, handle)
    assert torch.equal(after["body.weight"], before["body.weight"]) and torch.equal(after["body.bias"], before["body.bias"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert sum(losses[-3:]) < sum(losses[:3])
    assert all(training for _, training in box.state(handle)["training"])  # the course's loop: train mode


def test_fit_is_deterministic(box):
    x, y = toy_data()
    runs = []
    for _ in range(2):
        box.begin_check()
        handle = box.call("frozen_body")
        runs.append(box.fit(handle, x, y, epochs=2, batch_size=8, lr=0.01, seed=3, timeout=TRAIN_SECONDS))
    assert runs[0] == runs[1]


def test_fit_refuses_a_model_with_nothing_to_train(box):
    box.begin_check()
    handle = box.call("all_frozen")
    x, y = toy_data()
    with pytest.raises(SubmissionRaised, match="nothing to train"):
        box.fit(handle, x, y, timeout=TRAIN_SECONDS)


# ---- run_train: the submission's own train(args) ----------------------------------------------

def test_run_train_uses_the_harness_data_and_the_args_class_with_the_budget(box):
    box.begin_check()
    x, y = toy_data()
    datasets = (torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:7], y[:7]))
    result, used = box.run_train(datasets, args_class="ToyArgs", overrides={"epochs": 1, "batch_size": 10,
                                                                           "not_a_field": 3}, timeout=TRAIN_SECONDS)
    assert used["type"].endswith("ToyArgs")
    assert used["fields"] == {"batch_size": 10, "epochs": 1, "learning_rate": 0.05, "note": "kept"}
    losses, accuracies, model = result
    assert len(losses) == 4 and all(type(v) is float for v in losses)  # one epoch of 40 in batches of 10
    assert accuracies == [7]  # the held-out set the harness sent
    assert isinstance(model, Handle) and model.type.endswith("Tiny")


def test_run_train_restores_the_namespace(box):
    box.begin_check()
    x, y = toy_data()
    datasets = (torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x, y))
    box.run_train(datasets, args_class="ToyArgs", overrides={"epochs": 1}, timeout=TRAIN_SECONDS)
    with pytest.raises(SubmissionRaised, match="would download"):
        box.call("get_cifar")
    for name in ("get_cifar_subset", "tqdm", "line"):
        with pytest.raises(SubmissionRaised, match="defines no"):
            box.call(name)


def test_run_train_without_the_args_class_uses_the_defaults(box):
    box.begin_check()
    x, y = toy_data()
    datasets = (torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x, y))
    result, used = box.run_train(datasets, args_class="MissingArgs", overrides={"epochs": 2},
                                 defaults={"batch_size": 20, "epochs": 9, "learning_rate": 0.01}, timeout=TRAIN_SECONDS)
    assert used["type"] == "types.SimpleNamespace"
    assert used["fields"] == {"batch_size": 20, "epochs": 2, "learning_rate": 0.01}
    assert len(result[0]) == 4


def test_quiet_progress_stands_in_for_every_tqdm_spelling():
    for make in (_QuietProgress, _QuietProgress.tqdm, _QuietProgress.notebook.tqdm, _QuietProgress.auto.tqdm):
        bar = make(range(3), desc="x", leave=False)
        assert list(bar) == [0, 1, 2] and len(bar) == 3
        bar.set_postfix(loss=1.0)
        bar.set_description("y")
        bar.update(1)
        bar.close()
    assert list(_QuietProgress.trange(2)) == [0, 1]
    with _QuietProgress(total=5) as bar:
        bar.update(5)


# ---- the digits -------------------------------------------------------------------------------

def test_resnet_digits_are_normalised_3_channel_images_with_a_fixed_split():
    train, held_out = resnet_digits(100, 50, size=32)
    x, y = train.tensors
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert held_out.tensors[0].shape == (50, 3, 32, 32)
    assert set(y.tolist()) == set(range(10)) and set(held_out.tensors[1].tolist()) == set(range(10))
    # ImageNet normalisation of [0, 1] pixels: the background (0) maps to -mean/std per channel.
    assert torch.allclose(x.amin(dim=(0, 2, 3)), torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    again, _ = resnet_digits(100, 50, size=32)
    assert torch.equal(again.tensors[0], x)
    # Disjoint: no held-out image is a training image.
    flat, held = x.flatten(1), held_out.tensors[0].flatten(1)
    assert not any(bool((flat == row).all(dim=1).any()) for row in held)


def test_digits_are_read_as_scikit_learn_reads_them():
    from sklearn.datasets import load_digits

    images, labels = digits._raw()
    bunch = load_digits()
    assert torch.equal(images, torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1) / 16.0)
    assert torch.equal(labels, torch.from_numpy(bunch.target).to(torch.int64))


def test_mnist_digits_match_what_simple_mlp_eats():
    train, held_out = mnist_digits(64, 32)
    assert train.tensors[0].shape == (64, 1, 28, 28) and held_out.tensors[0].shape == (32, 1, 28, 28)
    assert HELD_OUT_EVERY == 4
    with pytest.raises(ValueError, match="split has"):
        mnist_digits(5000, 10)


# ---- reading a submission's train -----------------------------------------------------------

@pytest.mark.parametrize("source, expected", [
    ("def train(args: ResNetTrainingArgs):\n    return args\n", ("resnet", "ResNetTrainingArgs")),
    ("def train(args: 'SimpleMLPTrainingArgs'):\n    return args\n", ("mlp", "SimpleMLPTrainingArgs")),
    ("def train(args):\n    model = get_resnet_for_feature_extraction(args.n_classes)\n    return model\n",
     ("resnet", "ResNetTrainingArgs")),
    ("def train(args):\n    model = SimpleMLP()\n    trainset, testset = get_mnist()\n    return model\n",
     ("mlp", "SimpleMLPTrainingArgs")),
    ("def train(args: ResNetFinetuningArgs):\n    return get_cifar()\n", ("resnet", "ResNetFinetuningArgs")),
    ("def train(model, trainloader, epochs=3, lr=1e-3):\n    return []\n", "not the course's train(args)"),
    ("def train(args):\n    raise NotImplementedError()\n", "stub"),
    ("def train(args):\n    return args\n", "could not be told"),
    ("def other():\n    pass\n", "defines no train"),
])
def test_own_train_is_read_from_the_source(write, source, expected):
    plan = own_train(extract(write("sub.py", source)))
    if isinstance(expected, tuple):
        assert isinstance(plan, OwnTrain) and (plan.kind, plan.args_class) == expected
    else:
        assert isinstance(plan, str) and expected in plan


def test_loss_lists_and_falling_losses():
    tensor = Returned("torch.Tensor", torch.tensor(0.5), False)
    assert numbers([1.0, 2, tensor]) == [1.0, 2.0, 0.5]
    assert numbers([1.0, Returned("torch.Tensor", torch.zeros(3), False)]) is None
    assert numbers([]) == [] and numbers("nope") is None
    assert loss_fell([2.3, 2.2, 2.1, 1.0, 0.8, 0.5], FE_OWN)
    assert not loss_fell([2.3, 2.2, 2.1, 2.2, 2.0, 2.1], FE_OWN)
    assert not loss_fell([2.3, float("nan"), 2.1, 0.1, 0.1, 0.1], FE_OWN)
    assert not loss_fell([2.3, 0.1], FE_OWN)
    # The harness's own SimpleMLP run asks more: the last five at most half the first five.
    assert not loss_fell([2.3, 2.2, 2.1, 1.0, 0.8, 0.5], MLP)
    assert loss_fell([2.3] * 5 + [1.1] * 5, MLP) and not loss_fell([2.3] * 5 + [1.2] * 5, MLP)


# ---- strict mode: a frozen backbone's BatchNorm buffers ---------------------------------------

BN_KEPT_IN_EVAL = """
    # new (trainable) head
    my_resnet.out_layers[-1] = Linear(my_resnet.out_features_per_group[-1], n_classes)

    # keep the frozen backbone's BatchNorm statistics fixed: the backbone stays in eval mode
    def train(mode=True):
        nn.Module.train(my_resnet, mode)
        my_resnet.in_layers.eval()
        my_resnet.residual_layers.eval()
        return my_resnet

    my_resnet.train = train
"""


@pytest.mark.parametrize("variant", ["reference", "backbone-bn-in-eval"])
def test_strict_mode_requires_a_frozen_backbone_to_keep_its_batchnorm_statistics(variant, tmp_path):
    if variant == "reference":
        impl = ROOT / "reference"
    else:
        text = (ROOT / "examples" / "learner_submission.py").read_text()
        old = ("    # new (trainable) head\n"
               "    my_resnet.out_layers[-1] = Linear(my_resnet.out_features_per_group[-1], n_classes)\n")
        assert text.count(old) == 1
        impl = tmp_path / "bn_in_eval.py"
        impl.write_text(text.replace(old, BN_KEPT_IN_EVAL))
    check = "test_feature_extraction_trains_only_the_head_on_digits"
    out = tmp_path / "out"
    out.mkdir()
    strict = grade(impl, ["feature_extraction"], out, "--strict-conventions", "-k", check)
    (test,) = [t for t in strict["tests"] if check in t["name"]]
    if variant == "reference":  # ARENA's recipe: BatchNorm statistics drift while the head trains
        assert test["outcome"] == "failed" and "--strict requires a frozen backbone" in test["output"]
        default = grade(impl, ["feature_extraction"], tmp_path, "-k", check)
        (lenient,) = [t for t in default["tests"] if check in t["name"]]
        assert lenient["outcome"] == "passed", lenient["output"]
        assert any("BatchNorm running statistics changed" in a for a in default["advisories"])
    else:  # passing under --strict, it passes by default too (strict only adds a requirement)
        assert test["outcome"] == "passed", test["output"]
        assert not strict["advisories"]


# ---- the optimizer's steps, watched while the submission's train runs ---------------------------

STEPS_TOY = """
import torch as t
import torch.nn.functional as F
from torch.utils.data import DataLoader

def train(args):
    trainset, testset = get_cifar_subset()
    t.manual_seed(0)
    model = t.nn.Sequential(t.nn.Linear(4, 8), t.nn.ReLU(), t.nn.Linear(8, 3))
    optimizer = t.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for x, y in DataLoader(trainset, batch_size=8, shuffle=True):
{body}
        losses.append(loss.item())
    return losses, model
"""

LOOPS = {  # how the gradients are (or are not) zeroed between steps -> steps that used stale gradients
    "the course's order": ("loss = F.cross_entropy(model(x), y)", "loss.backward()", "optimizer.step()",
                           "optimizer.zero_grad()"),
    "zero_grad first": ("optimizer.zero_grad()", "loss = F.cross_entropy(model(x), y)", "loss.backward()",
                        "optimizer.step()"),
    "the model's zero_grad": ("model.zero_grad()", "loss = F.cross_entropy(model(x), y)", "loss.backward()",
                              "optimizer.step()"),
    "grads set to None": ("loss = F.cross_entropy(model(x), y)", "loss.backward()", "optimizer.step()",
                          "for p in model.parameters(): p.grad = None"),
    "two backwards per step": ("loss = F.cross_entropy(model(x), y)", "loss.backward()",
                               "F.cross_entropy(model(x[:4]), y[:4]).backward()", "optimizer.step()",
                               "optimizer.zero_grad()"),
    "clipped": ("loss = F.cross_entropy(model(x), y)", "loss.backward()",
                "t.nn.utils.clip_grad_norm_(model.parameters(), 0.1)", "optimizer.step()", "optimizer.zero_grad()"),
    "never zeroed": ("loss = F.cross_entropy(model(x), y)", "loss.backward()", "optimizer.step()"),
}


@pytest.mark.parametrize("loop", LOOPS)
def test_run_train_counts_the_steps_that_used_gradients_left_from_the_step_before(loop, tmp_path):
    path = tmp_path / "steps.py"
    path.write_text(STEPS_TOY.format(body="\n".join(8 * " " + line for line in LOOPS[loop])))
    x, y = toy_data()
    datasets = (torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x, y))
    with Sandbox(path, timeout=20) as sandbox:
        sandbox.begin_check()
        (losses, model), used = sandbox.run_train(datasets, args_class=None, timeout=TRAIN_SECONDS)
        assert isinstance(model, Handle) and len(losses) == 5
        steps = Ledger.read(used["steps"])
        if loop == "never zeroed":
            assert steps == Ledger(count=5, stale=4, first_stale=2)
        else:
            assert steps == Ledger(count=5, stale=0, first_stale=None)
        # the hooks are gone with train: a step taken afterwards is not watched
        assert sandbox.grad(model, (x[:2],), torch.ones(2, 3))["param_grads"]


VALIDATION_TOY = """
import torch as t
import torch.nn.functional as F
from torch.utils.data import DataLoader

def train(args):
    trainset, testset = get_cifar_subset()
    model = t.nn.Sequential(t.nn.Linear(4, 8), t.nn.BatchNorm1d(8), t.nn.ReLU(), t.nn.Linear(8, 3))
    optimizer = t.optim.Adam(model.parameters(), lr=0.01)
    for x, y in DataLoader(trainset, batch_size=8):
        model.train()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
{switch}
    with t.inference_mode():
        right = sum(int((model(x).argmax(-1) == y).sum()) for x, y in DataLoader(testset, batch_size=8))
    return [0.0], [right / len(testset)], model
"""


@pytest.mark.parametrize("switch, calls", [("    model.eval()", 0), ("", 5), ("    model.train(False)", 0)])
def test_run_train_counts_batchnorm_calls_in_train_mode_with_gradients_off(switch, calls, tmp_path):
    path = tmp_path / "validation.py"
    path.write_text(VALIDATION_TOY.format(switch=switch))
    x, y = toy_data()
    with Sandbox(path, timeout=20) as sandbox:
        sandbox.begin_check()
        _, used = sandbox.run_train((torch.utils.data.TensorDataset(x, y),) * 2, args_class=None,
                                  timeout=TRAIN_SECONDS)
    assert Ledger.read(used["steps"]) == Ledger(count=5, stale=0, first_stale=None, train_mode_no_grad=calls)


def own_run(losses=(2.0, 1.0), accuracies=None, steps=Ledger(4, 0, None)) -> OwnRun:
    return OwnRun(None, None if losses is None else list(losses),
                  None if accuracies is None else list(accuracies), steps, "train(Args())")


def held_out_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Ten held-out answers, seven of them right, none near a tie."""
    labels = torch.arange(10) % 3
    guesses = torch.where(torch.arange(10) < 7, labels, (labels + 1) % 3)
    return torch.nn.functional.one_hot(guesses, 3).float() * 5, labels


@pytest.mark.parametrize("run, verdict", [
    (own_run(), "passes"),
    (own_run(accuracies=[0.5, 0.7]), "passes"),
    (own_run(accuracies=[0.5, 70.0]), "advises"),  # percent: not the course's fraction, not wrong
    (own_run(accuracies=[0.8]), "fails: classifies 7 of the 10"),  # num_correct started at 1
    (own_run(accuracies=[0.3]), "fails: classifies 7 of the 10"),  # == turned into !=
    (own_run(accuracies=[70.0 * 10]), "fails: classifies 7 of the 10"),  # multiplied by len(testset)
    (own_run(accuracies=[]), "fails: empty accuracy list"),
    (own_run(losses=[]), "fails: empty loss list"),
    (own_run(steps=Ledger(4, 3, 2)), "fails: from step 2 on, optimizer.step() used gradients that still held"),
    (own_run(steps=Ledger(4, 0, None, 12)), "fails: called 12 times in train mode with gradients off"),
    (own_run(losses=None), "passes"),  # train returned the model alone
])
def test_an_own_run_is_held_to_what_it_reports(run, verdict):
    outputs, labels = held_out_outputs()
    advice: list[str] = []
    if verdict.startswith("fails"):
        with pytest.raises(CheckFailure, match=re.escape(verdict.removeprefix("fails: "))):
            judge_own_run(run, outputs, labels, 40, advice.append)
        return
    judge_own_run(run, outputs, labels, 40, advice.append)
    assert bool(advice) == (verdict == "advises")


def test_a_near_tie_is_given_the_benefit_of_the_doubt():
    outputs, labels = held_out_outputs()
    assert not near_ties(outputs).any()
    outputs[0] = torch.tensor([1.0, 1.0 + 1e-6, 0.0])  # wrong by 1e-6 here (6 of 10 right): another batch may say right
    assert near_ties(outputs).tolist() == [True] + [False] * 9
    for reported in (0.6, 0.7):
        judge_own_run(own_run(accuracies=[reported]), outputs, labels, 40, print)
    for reported in (0.5, 0.8):
        with pytest.raises(CheckFailure):
            judge_own_run(own_run(accuracies=[reported]), outputs, labels, 40, print)
