"""Area `batchnorm` (rubric item 6): BatchNorm2d's state, train mode, eval mode, running statistics.

Oracle: `torch.nn.BatchNorm2d` loaded with the same state. Train mode normalises with
the batch mean and biased variance and updates the running buffers with momentum;
eval mode uses the running buffers and changes nothing. PyTorch updates running_var
with the unbiased batch variance, the ARENA reference with the biased one: both are
accepted with an advisory, PyTorch's only under --strict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.areas import area, requires
from conformance.compare import (
    NORMALISED_MEAN, NORMALISED_VARIANCE, SMALL_MISTAKE, assert_close, assert_equal, fail, rounding_slack,
    tensor_of, tolerance,
)
from conformance.course import probes
from conformance.probing import (
    advise_on_repr, describe_state, load_state, oracle_grad, printable, set_dtype, set_mode, state_entries,
    state_tensors,
)
from conformance.strategies import DTYPE, DTYPES, SEEDS, TensorCase, exact_values, tensors

pytestmark = [area("batchnorm"), requires("BatchNorm2d")]

# course: BatchNorm2d(num_features, eps=1e-05, momentum=0.1): float eps and momentum; tests.py builds BatchNorm2d(2) and
# BatchNorm2d(3, momentum=0.6), the ResNet BatchNorm2d(c); interface.md: constructors positional or by keyword.
EPS = st.sampled_from([1e-5, 1e-3, 0.5])
MOMENTUM = st.sampled_from([0.1, 0.5, 0.9])
EXPECTED_ENTRIES = [("weight", "parameter"), ("bias", "parameter"), ("running_mean", "buffer"),
                    ("running_var", "buffer"), ("num_batches_tracked", "buffer")]


# course: forward gets (batch, channels, height, width) (its docstring): tests.py's randn(100, 2, 3, 4) and
# arange(12).view(2, 3, 2, 1), float32; the ResNet's activations; eval mode any batch (predict on 10 images).
@st.composite
def batches(draw, channels: int, dtype: str, n: int = 1, train: bool = True):
    """`n` input batches of shape (B, C, H, W); in train mode B*H*W >= 2 (a variance exists)."""
    h = draw(st.integers(1, 3), label="H")
    w = draw(st.integers(1, 3), label="W")
    b = draw(st.integers(1 if (h * w >= 2 or not train) else 2, 3), label="B")
    return [draw(tensors((b, channels, h, w), dtype=dtype), label=f"batch {i}") for i in range(n)]


def random_affine(channels: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    # course: copy_weights loads trained weight and bias (and running buffers) into every BatchNorm2d
    gen = torch.Generator().manual_seed(seed)
    return {"weight": (torch.rand(channels, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype),
            "bias": (torch.rand(channels, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)}


def make_pair(sandbox, channels, eps, momentum, dtype, state=None):
    """The submission's BatchNorm2d and the oracle, same arguments, same state."""
    handle = sandbox.construct("BatchNorm2d", channels, eps=eps, momentum=momentum)
    oracle = torch.nn.BatchNorm2d(channels, eps=eps, momentum=momentum).to(DTYPES[dtype])
    set_dtype(sandbox, handle, dtype)
    if state:
        load_state(sandbox, handle, state, "BatchNorm2d")
        oracle.load_state_dict(state, strict=False)
    return handle, oracle


@probes(lambda p: {"channels": p["num_features"], "eps": 1e-5, "momentum": 0.1})
@given(channels=st.integers(1, 4), eps=EPS, momentum=MOMENTUM)  # course: see EPS; positional here
def test_batchnorm_parameters_and_buffers(sandbox, advise, channels, eps, momentum):
    """weight/bias are parameters, running_mean/running_var/num_batches_tracked buffers, in torch's order."""
    handle = sandbox.construct("BatchNorm2d", channels, eps, momentum)  # positional, as the course calls it
    entries = state_entries(sandbox, handle, "BatchNorm2d")
    got = [(e.name, e.kind) for e in entries]
    if got != EXPECTED_ENTRIES:
        fail(f"BatchNorm2d({channels}) state_dict entries are [{describe_state(entries)}]; expected, in this "
             f"order, {EXPECTED_ENTRIES} (parameters are registered with nn.Parameter, buffers with "
             "register_buffer, so the state_dict lines up with torch's and torchvision's)")
    oracle = torch.nn.BatchNorm2d(channels).state_dict()
    for entry in entries:
        counter = entry.name == "num_batches_tracked"
        assert_close(entry.tensor, oracle[entry.name], f"BatchNorm2d({channels}).{entry.name} at init",
                     check_dtype=not counter)
        if counter and entry.tensor.dtype != oracle[entry.name].dtype:
            advise(f"BatchNorm2d's num_batches_tracked is a {entry.tensor.dtype} tensor; torch's is an integer "
                   "count, t.tensor(0) (int64). It counts the same either way.")
    parameters = dict(sandbox.state(handle)["parameters"])
    if not all(parameters.get(n) for n in ("weight", "bias")):
        fail(f"BatchNorm2d weight and bias must be trainable (requires_grad=True); got {parameters}")
    what = f"BatchNorm2d({channels}, {eps}, {momentum})"
    text = printable(sandbox, handle, what)
    advise_on_repr(advise, text, what, {"num_features": channels}, ("num_features", "eps", "momentum"))


# course: see EPS and batches (by keyword here); float64 through .double()
@given(data=st.data(), channels=st.integers(1, 3), eps=EPS, dtype=DTYPE,
       seed=SEEDS)
def test_batchnorm_train_mode_normalises_with_batch_statistics(sandbox, data, channels, eps, dtype, seed):
    """Train mode: (x - batch mean) / sqrt(biased batch var + eps) * weight + bias, and its gradients."""
    (x,) = data.draw(batches(channels, dtype), label="x")
    judge_train_step(sandbox, x.build(), eps, seed)


def judge_train_step(sandbox, inp: torch.Tensor, eps: float, seed: int) -> None:
    channels, dtype = inp.shape[1], "float64" if inp.dtype == torch.float64 else "float32"
    affine = random_affine(channels, DTYPES[dtype], seed)
    handle, oracle = make_pair(sandbox, channels, eps, 0.1, dtype, affine)
    set_mode(sandbox, handle, True)
    cotangent = torch.linspace(-1, 1, inp.numel(), dtype=inp.dtype).reshape(inp.shape)
    got = sandbox.grad(handle, (inp,), cotangent)
    expected, input_grad = oracle_grad(oracle.train(), inp, cotangent)
    slack = Rounding.of(inp, eps, affine["weight"], cotangent)
    hint = "train mode normalises with the batch mean and the biased batch variance, eps inside the sqrt, " \
           "then scales by weight and shifts by bias"
    assert_close(got["value"], expected, "BatchNorm2d train-mode output", hint=hint,
                 atol=slack.atol(expected, slack.output))
    assert_close(got["input_grads"][0], input_grad, "gradient of BatchNorm2d's train-mode output w.r.t. its input",
                 hint="the batch statistics must stay in the autograd graph (do not detach the mean or variance)",
                 atol=slack.atol(input_grad, slack.input_grad))
    for name in ("weight", "bias"):
        if name not in got["param_grads"] or got["param_grads"][name] is None:
            fail(f"BatchNorm2d.{name} got no gradient in train mode: is it used in forward?")
        expected_grad = getattr(oracle, name).grad
        assert_close(got["param_grads"][name], expected_grad, f"gradient w.r.t. BatchNorm2d.{name}",
                     atol=slack.atol(expected_grad, slack.weight_grad if name == "weight" else 0.0))


@dataclass(frozen=True)
class Rounding:
    """How far a correct train step on x may stray from the oracle's digits by float rounding alone.

    x - mean(x) computed in another order is off by a few ulps of |x| (`compare.rounding_slack`), and a train step
    divides it by the batch's std: a channel of nearly equal values (var far below eps) magnifies that error by
    |x| / sqrt(eps), and its input gradient by |x| / eps. Elsewhere these allowances are far below the tolerance.
    """

    output: float
    input_grad: float
    weight_grad: float

    @classmethod
    def of(cls, x: torch.Tensor, eps: float, weight: torch.Tensor, cotangent: torch.Tensor) -> Rounding:
        x64, dims = x.to(torch.float64), (0, 2, 3)
        std = (x64.var(dim=dims, unbiased=False) + eps).sqrt()
        x_hat = x64.abs().amax(dim=dims) / std  # how much the normalisation magnifies the rounding of x - mean
        per_channel, c = x.numel() // x.shape[1], float(cotangent.abs().max())
        w = weight.to(torch.float64).abs()
        return cls(output=rounding_slack(x.dtype, float((x_hat * w).max())),
                   input_grad=rounding_slack(x.dtype, float((x_hat * w / std).max()) * 2 * c * per_channel ** 0.5),
                   weight_grad=rounding_slack(x.dtype, float(x_hat.max()) * c * per_channel))

    @staticmethod
    def atol(expected: torch.Tensor, slack: float) -> float:
        return tolerance(expected.dtype, float(expected.abs().max()))[1] + slack


class Oracle:
    """nn.BatchNorm2d, or the same with running_var updated from the biased variance (ARENA)."""

    def __init__(self, channels, eps, momentum, dtype, unbiased: bool):
        self.module = torch.nn.BatchNorm2d(channels, eps=eps, momentum=momentum).to(DTYPES[dtype])
        self.unbiased, self.momentum = unbiased, momentum

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        self.module.train(train)
        before = self.module.running_var.clone()
        out = self.module(x).detach()
        if train and not self.unbiased:
            batch_var = x.var(dim=(0, 2, 3), unbiased=False)
            self.module.running_var.copy_((1 - self.momentum) * before + self.momentum * batch_var)
        return out


BIASED_NOTE = "running_var is updated with the biased batch variance (ARENA convention); PyTorch uses the unbiased one"
UNBIASED_NOTE = ("running_var is updated with the unbiased batch variance (PyTorch convention); ARENA's reference uses "
                 "the biased one")


def check_sequence(sandbox, strict, advise, channels, eps, momentum, dtype, modes, xs, omit_defaults=False):
    """Run train/eval steps on the submission, then judge them against either convention's oracle.

    With `omit_defaults`, the submission is built as BatchNorm2d(channels): eps and momentum must be the defaults.
    """
    if omit_defaults:
        handle = sandbox.construct("BatchNorm2d", channels)
    else:
        handle = sandbox.construct("BatchNorm2d", channels, eps=eps, momentum=momentum)
    set_dtype(sandbox, handle, dtype)
    outputs = []
    for train, x in zip(modes, xs):
        set_mode(sandbox, handle, train)
        outputs.append(sandbox.call(handle, x.build()))
    entries = {e.name: e for e in state_entries(sandbox, handle, "BatchNorm2d")}
    for name in ("running_mean", "running_var"):
        if name in entries and entries[name].requires_grad:
            fail(f"BatchNorm2d.{name} requires grad after a train step: update the running buffers under "
                 "torch.no_grad() (or from detached statistics), or every step grows an autograd graph")
    steps = ["train" if m else "eval" for m in modes]

    def run_oracle(unbiased: bool) -> Oracle:
        oracle = Oracle(channels, eps, momentum, dtype, unbiased)
        for train, x in zip(modes, xs):
            oracle(x.build(), train)
        return oracle

    errors = []
    for unbiased in (True, False):
        oracle = Oracle(channels, eps, momentum, dtype, unbiased)
        try:
            for step, (train, x, got) in enumerate(zip(modes, xs, outputs)):
                expected = oracle(x.build(), train)
                ones = torch.ones(channels)  # a fresh BatchNorm2d: weight 1, bias 0
                slack = Rounding.of(x.build(), eps, ones, torch.ones(1)).output if train else 0.0
                atol = Rounding.atol(expected, slack)
                assert_close(got, expected, f"output of step {step} ({steps[step]} mode) of {steps}", atol=atol,
                             hint="train mode: batch statistics; eval mode: the running buffers")
            assert_close(entries["running_mean"].tensor, oracle.module.running_mean, f"running_mean after {steps}",
                         hint="running = (1 - momentum) * running + momentum * batch statistic, per train step")
            assert_close(entries["running_var"].tensor, oracle.module.running_var, f"running_var after {steps}",
                         hint="PyTorch updates running_var with the unbiased batch variance (divide by n - 1)")
        except AssertionError as error:
            errors.append(error)
            continue
        if not unbiased:
            if strict:
                fail(f"{BIASED_NOTE}. --strict requires PyTorch's convention: update with var * n / (n - 1)")
            advise(BIASED_NOTE)
        elif not torch.allclose(oracle.module.running_var, run_oracle(False).module.running_var):
            advise(UNBIASED_NOTE)  # both conventions are accepted; say which one was seen (where they differ)
        break
    else:
        raise errors[0]
    if "num_batches_tracked" not in entries:
        fail(f"BatchNorm2d has no num_batches_tracked buffer after {steps}: register its buffers with register_buffer "
             "(running_mean, running_var, and num_batches_tracked = t.tensor(0), counting train-mode steps)")
    assert_equal(int(entries["num_batches_tracked"].tensor), sum(modes),
                 f"num_batches_tracked after {steps} (it counts train-mode steps only)")


@dataclass(frozen=True)
class TrainSteps:
    """BatchNorm2d(channels, eps=eps, momentum=momentum) run in train mode on each of `xs`, in turn."""

    channels: int
    eps: float
    momentum: float
    dtype: str
    xs: tuple[TensorCase, ...]


# course: see EPS and batches
@st.composite
def train_steps(draw) -> TrainSteps:
    channels, eps, momentum = draw(st.integers(1, 3), label="channels"), draw(EPS, label="eps"), draw(MOMENTUM, label="momentum")
    dtype = draw(DTYPE, label="dtype")
    steps = draw(st.integers(1, 4), label="steps")
    return TrainSteps(channels, eps, momentum, dtype, tuple(draw(batches(channels, dtype, n=steps), label="batches")))


def course_running_mean(probe: dict) -> dict:
    """tests.py's test_batchnorm2d_running_mean: the same batch, arange(12).view(2, 3, 2, 1), `steps` times."""
    x = TensorCase(np.arange(12.0).reshape(2, probe["num_features"], 2, 1))
    return {"case": TrainSteps(probe["num_features"], 1e-5, probe["momentum"], "float32", (x,) * probe["steps"])}


@probes(course_running_mean)
@given(case=train_steps())
def test_batchnorm_running_statistics_after_train_steps(sandbox, strict, advise, case):
    """After k train steps the running buffers match nn.BatchNorm2d's; num_batches_tracked == k."""
    check_sequence(sandbox, strict, advise, case.channels, case.eps, case.momentum, case.dtype,
                   [True] * len(case.xs), list(case.xs))


# course: BatchNorm2d(c) with eps and momentum omitted (tests.py's BatchNorm2d(2), the ResNet's); see batches
@given(data=st.data(), channels=st.integers(1, 3), steps=st.integers(1, 3), dtype=DTYPE)
def test_batchnorm_defaults_are_eps_1e5_momentum_01(sandbox, strict, advise, data, channels, steps, dtype):
    """BatchNorm2d(num_features) with eps and momentum omitted means eps=1e-05, momentum=0.1 (torch's defaults)."""
    xs = data.draw(batches(channels, dtype, n=steps + 1), label="batches")
    try:
        check_sequence(sandbox, strict, advise, channels, 1e-5, 0.1, dtype, [True] * steps + [False], xs,
                       omit_defaults=True)
    except AssertionError as error:
        error.add_note(f"BatchNorm2d({channels}) was built with eps and momentum omitted: the signature is "
                       "BatchNorm2d(num_features, eps=1e-05, momentum=0.1), and the defaults are part of the API "
                       "(a ResNet writes BatchNorm2d(64))")
        raise


# course: eval mode after copy_weights loaded trained buffers (num_batches_tracked an int64 count); see batches
@st.composite
def eval_batches(draw) -> tuple[int, str, TensorCase]:
    """(channels, dtype, x) for one eval-mode forward."""
    channels, dtype = draw(st.integers(1, 3), label="channels"), draw(DTYPE, label="dtype")
    (x,) = draw(batches(channels, dtype, train=False), label="x")
    return channels, dtype, x


# Two channels in float64 with eps=0.5: eps inside or outside the square root differ far beyond rounding (running_var
# is drawn from [0.25, 3.25]), so that mistake is recognised whatever the draws.
EPS_SHOWS = dict(case=(2, "float64", TensorCase(exact_values((2, 2, 2, 2)), "float64")), eps=0.5, momentum=0.1,
                 seed=0, tracked=3)


@example(**EPS_SHOWS)
@given(case=eval_batches(), eps=EPS, momentum=MOMENTUM, seed=SEEDS, tracked=st.integers(0, 50))
def test_batchnorm_eval_mode_uses_running_buffers_and_changes_nothing(sandbox, case, eps, momentum, seed, tracked):
    """Eval mode normalises with running_mean/running_var (any batch size, even 1) and updates no buffer."""
    channels, dtype, x = case
    gen = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    state = {**random_affine(channels, dt, seed),
             "running_mean": (torch.rand(channels, generator=gen, dtype=torch.float64) * 4 - 2).to(dt),
             "running_var": (torch.rand(channels, generator=gen, dtype=torch.float64) * 3 + 0.25).to(dt),
             "num_batches_tracked": torch.tensor(tracked)}
    handle, oracle = make_pair(sandbox, channels, eps, momentum, dtype, state)
    set_mode(sandbox, handle, False)
    inp = x.build()
    got = sandbox.call(handle, inp)
    expected = oracle.eval()(inp).detach()
    hint = "eval mode normalises with the running buffers, not with the batch's own statistics"
    shape = (1, channels, 1, 1)
    outside = ((inp - state["running_mean"].view(shape)) / (state["running_var"].view(shape).sqrt() + eps)
               * state["weight"].view(shape) + state["bias"].view(shape))
    value = tensor_of(got, "BatchNorm2d eval-mode output")
    if value.shape == expected.shape and not torch.allclose(outside, expected) \
            and SMALL_MISTAKE.close(value.to(outside.dtype), outside):
        hint = ("eps is added outside the square root: normalise with (x - mean) / sqrt(var + eps), eps inside, "
                "as torch does")
    assert_close(got, expected, "BatchNorm2d eval-mode output", hint=hint)
    after = state_tensors(sandbox, handle, "BatchNorm2d")
    for name, before in state.items():
        if not torch.equal(after[name].to(before.dtype), before):
            fail(f"BatchNorm2d.{name} changed during an eval-mode forward (from {before.tolist()} to "
                 f"{after[name].tolist()}): eval mode must update no buffer")


# course: train() and eval() alternate (the trainers' epochs, tests.py's bn.eval() after training); see batches
@given(data=st.data(), channels=st.integers(1, 3), momentum=MOMENTUM,
       modes=st.lists(st.booleans(), min_size=2, max_size=5))
def test_batchnorm_train_and_eval_steps_interleaved(sandbox, strict, advise, data, channels, momentum, modes):
    """Any sequence of train and eval steps: every output and the final buffers match the oracle."""
    xs = data.draw(batches(channels, "float64", n=len(modes)), label="batches")
    check_sequence(sandbox, strict, advise, channels, 1e-5, momentum, "float64", modes, xs)


def test_batchnorm_train_mode_output_statistics(sandbox):
    """A fixed example anyone can reproduce: in train mode each channel comes out with mean 0 and variance 1."""
    x = torch.arange(48, dtype=torch.float64).reshape(2, 3, 2, 4) ** 1.5
    handle = sandbox.construct("BatchNorm2d", 3)
    set_dtype(sandbox, handle, torch.float64)
    set_mode(sandbox, handle, True)
    out = tensor_of(sandbox.call(handle, x), "BatchNorm2d(3) on a (2, 3, 2, 4) batch")
    assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64),
                 "per-channel mean of the train-mode output", **NORMALISED_MEAN.at())
    assert_close(out.var(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64),
                 "per-channel biased variance of the train-mode output", **NORMALISED_VARIANCE.at(),
                 hint="normalise with the biased variance (divide by n), eps inside the square root")
