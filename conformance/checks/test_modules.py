"""Area `modules` (rubric item 2): ReLU, Linear, Flatten, Sequential and SimpleMLP.

Oracles, all computed in the harness: `torch.relu`, `F.linear`, `torch.flatten`, torch's
own modules applied one after another (for Sequential, which is also handed torch's
modules, so that only the container is judged), and for SimpleMLP the logits
`F.linear(F.relu(F.linear(x.flatten(1), w1, b1)), w2, b2)` of the same weights together
with the gradients of `F.cross_entropy` on them. Linear's initialisation is judged on
seeded constructions (the worker seeds torch's RNG), with statistical margins that
U(+-1/sqrt(in_features)) meets for every seed (verified on 300 seeds per size, with a
margin of at least 4x on each statistic) and that the usual wrong inits miss by far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.areas import area, requires
from conformance.course import probes
from conformance.compare import CheckFailure, MISTAKE, SMALL_MISTAKE, assert_close, assert_equal, fail, tensor_of
from conformance.probing import (
    advise_on_repr, describe_state, load_state, oracle_grad, printable, set_dtype, state_entries, state_tensors,
)
from conformance.strategies import DTYPE, DTYPES, SEEDS, TensorCase, arrays, exact_values, tensors
from under_test.sandbox import SubmissionRaised

pytestmark = [area("modules")]

DIMS = st.integers(1, 3)


def shapes(min_dims: int, max_dims: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(DIMS, min_size=min_dims, max_size=max_dims).map(tuple)


def cotangent_like(x: torch.Tensor) -> torch.Tensor:
    """A fixed, nowhere-zero weighting of the output, to backpropagate through it."""
    n = max(x.numel(), 1)
    return (torch.arange(1, x.numel() + 1, dtype=torch.float64) / n * (-1) ** torch.arange(x.numel())) \
        .reshape(x.shape).to(x.dtype)


# ---- ReLU ------------------------------------------------------------------------------

# course: ReLU gets activations of rank >= 1: tests.py's test_relu (10,), SimpleMLP's (B, 100), the ResNet's
# (B, C, H, W); float32. A 0-dim input is beyond its API: only advised on (ZERO_DIM).
RELU_INPUTS = shapes(1, 4).flatmap(tensors)
ZERO_DIM = ("ReLU does not return torch.relu(x) for a 0-dim x (a scalar tensor): its shape or dtype changes, or it "
            "raises. Not graded (the course applies ReLU to activations of rank 1 and more), but nn.ReLU keeps any "
            "shape and dtype: compare with a 0-dim zero, e.g. t.maximum(x, t.tensor(0.0)), so nothing is broadcast")


@requires("ReLU")
@probes(lambda p: {"x": TensorCase(exact_values(p["shape"]))})
@given(x=RELU_INPUTS)
def test_relu_values(sandbox, advise, x):
    """ReLU()(x) equals torch.relu(x) for tensors of rank >= 1, any dtype and memory layout (0-dim: advised on)."""
    handle = sandbox.construct("ReLU")
    printable(sandbox, handle, "ReLU()")
    inp = x.build()
    got = sandbox.call(handle, inp)
    assert_close(got, torch.relu(inp), f"ReLU()(x) for x of shape {x.shape} ({x.dtype})",
                 hint="ReLU keeps positive values, sets negative ones to 0, and keeps the input's shape and dtype "
                      "(compare with a 0-dim zero, e.g. t.maximum(x, t.tensor(0.0)), so nothing is broadcast)")
    scalar = inp.flatten()[0].clone()  # beyond the course's API: an advisory, never a failure
    try:
        value = tensor_of(sandbox.call(handle, scalar), "ReLU()(x) for a 0-dim x")
        kept = value.shape == () and value.dtype == scalar.dtype and torch.equal(value, torch.relu(scalar))
    except (CheckFailure, SubmissionRaised):
        kept = False
    if not kept:
        advise(ZERO_DIM)


IN_PLACE = ("ReLU modifies its input in place: the forward pass must return a new tensor and leave x untouched "
            "(use t.maximum(x, t.tensor(0.0)) or x.clamp(min=0), not clamp_, relu_, x[x < 0] = 0 or "
            "inplace=True). In a network, an in-place ReLU overwrites a tensor that autograd or the caller "
            "still needs.")


@requires("ReLU")
@given(x=RELU_INPUTS)
def test_relu_leaves_its_input_untouched(sandbox, x):
    """ReLU returns a new tensor without modifying its input, and passes gradients only where x > 0."""
    handle = sandbox.construct("ReLU")
    inp = x.build()
    cotangent = cotangent_like(inp)
    try:
        # The worker hands the module a leaf that requires grad: autograd refuses any
        # in-place change to it, so an in-place ReLU shows itself here.
        got = sandbox.grad(handle, (inp,), cotangent)
    except SubmissionRaised as error:
        if "in-place" in error.message or "inplace" in error.message:
            fail(f"{IN_PLACE}\nOn an input that requires grad it raised {error.type_name}: {error.message}")
        if "does not require grad" in error.message:
            fail("ReLU's output is cut off from autograd (no gradient reaches its input): compute it with torch "
                 f"operations on x itself, not through .detach(), .numpy() or a new tensor.\n{error.message}")
        raise
    assert_close(got["value"], torch.relu(inp), f"ReLU()(x) for x of shape {x.shape} ({x.dtype})")
    grad = got["input_grads"][0]
    if grad is None:
        fail("no gradient reached ReLU's input: its output must be computed from x with differentiable torch ops")
    grad = tensor_of(grad, "the gradient of ReLU's input")
    expected = torch.where(inp > 0, cotangent, torch.zeros_like(cotangent))
    if grad.shape == inp.shape and grad.dtype == inp.dtype:
        # At exactly x == 0 the conventions differ (relu: 0, maximum: 1/2, clamp: 1): any is accepted.
        grad = torch.where(inp == 0, expected, grad)
    assert_close(grad, expected, "gradient of ReLU w.r.t. its input (away from x == 0)",
                 hint="the gradient is the upstream gradient where x > 0 and 0 where x < 0; a gradient that also "
                      "flows where x < 0 means the module returned (a modified) x itself: " + IN_PLACE)


# ---- Linear ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearCall:
    """How Linear is constructed in one example: positionally, by keyword, or with the default bias."""

    n_in: int
    n_out: int
    bias: bool
    form: str

    @property
    def args(self) -> tuple:
        return {"defaults": (self.n_in, self.n_out), "positional": (self.n_in, self.n_out, self.bias),
                "keyword": ()}[self.form]

    @property
    def kwargs(self) -> dict:
        if self.form != "keyword":
            return {}
        return {"in_features": self.n_in, "out_features": self.n_out, "bias": self.bias}

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Linear({', '.join(parts)})"


# course: Linear(784, 100), Linear(in_features=28 * 28, out_features=100), Linear(512, n_classes); tests.py builds
# Linear(2, 3) and Linear(512, 64) with bias True or False; interface.md: constructors positional or by keyword.
@st.composite
def linear_calls(draw, n_in=st.integers(1, 4), n_out=st.integers(1, 4)) -> LinearCall:
    i, o = draw(n_in, label="in_features"), draw(n_out, label="out_features")
    form = draw(st.sampled_from(["positional", "keyword", "defaults"]), label="form")
    bias = True if form == "defaults" else draw(st.booleans(), label="bias")
    return LinearCall(i, o, bias, form)


@requires("Linear")
@probes(lambda p: {"call": LinearCall(p["n_in"], p["n_out"], True, "defaults")})
@given(call=linear_calls())
def test_linear_parameters(sandbox, call):
    """weight (out, in) then bias (out,) are trainable parameters; with bias=False, bias is None and unregistered."""
    handle = sandbox.construct("Linear", *call.args, **call.kwargs)
    entries = state_entries(sandbox, handle, repr(call))
    got = [(e.name, e.kind, tuple(e.tensor.shape)) for e in entries]
    expected = [("weight", "parameter", (call.n_out, call.n_in))] + \
        ([("bias", "parameter", (call.n_out,))] if call.bias else [])
    if got != expected:
        fail(f"{call} has state_dict entries [{describe_state(entries)}]; expected, in this order, "
             f"{[f'{n} ({k}, {s})' for n, k, s in expected]}. weight is an nn.Parameter of shape "
             "(out_features, in_features) (the forward pass uses x @ weight.T), registered before bias; "
             "with bias=False set self.bias = None so that no bias is registered")
    if not call.bias:
        bias = sandbox.get(handle, "bias")
        if bias is not None:
            fail(f"{call}.bias is {getattr(bias, 'type', type(bias).__name__)}, expected None "
                 "(torch's convention: no bias means self.bias = None)")
    frozen = [n for n, trainable in sandbox.state(handle)["parameters"] if not trainable]
    if frozen:
        fail(f"{call}: parameters {frozen} do not require grad; nn.Parameter(...) makes them trainable")


# course: forward's hint is Float[Tensor, "... in_feats"] -> "... out_feats" (docstring "(*, in_features)"): any
# number of leading dims (0 to 3 here); tests.py feeds (10, 512), SimpleMLP (B, 784) and (B, 100), the ResNet (B, 512).
@dataclass(frozen=True)
class LinearCase:
    """One Linear forward: how it is built, the weights loaded into it, and its input."""

    call: LinearCall
    weight: np.ndarray
    bias: np.ndarray | None
    x: TensorCase

    @property
    def lead(self) -> tuple[int, ...]:
        return self.x.shape[:-1]


@st.composite
def linear_cases(draw) -> LinearCase:
    call = draw(linear_calls(), label="call")
    lead = draw(shapes(0, 3), label="lead")
    dtype = draw(DTYPE, label="dtype")
    weight = draw(arrays((call.n_out, call.n_in)), label="weight")
    bias = draw(arrays((call.n_out,)), label="bias") if call.bias else None
    return LinearCase(call, weight, bias, draw(tensors((*lead, call.n_in), dtype=dtype), label="x"))


def course_linear(probe: dict) -> dict:
    """Linear(512, 64[, bias=False]) on rand(10, 512), the course's weights replaced by known ones."""
    n_in, n_out = probe["n_in"], probe["n_out"]
    call = LinearCall(n_in, n_out, probe["bias"], "defaults" if probe["bias"] else "keyword")
    weight = exact_values((n_out, n_in)) / 8
    bias = exact_values((n_out,)) if probe["bias"] else None
    return {"case": LinearCase(call, weight, bias, TensorCase(exact_values((*probe["lead"], n_in))))}


@requires("Linear")
@probes(course_linear)
@given(case=linear_cases())
def test_linear_forward(sandbox, case):
    """Linear maps (*, in_features) to (*, out_features) as x @ weight.T + bias, with matching gradients."""
    call, lead, x, dtype = case.call, case.lead, case.x, case.x.dtype
    dt = DTYPES[dtype]
    state = {"weight": torch.tensor(case.weight, dtype=dt)}
    if case.bias is not None:
        state["bias"] = torch.tensor(case.bias, dtype=dt)
    handle = sandbox.construct("Linear", *call.args, **call.kwargs)
    set_dtype(sandbox, handle, dtype)
    load_state(sandbox, handle, state, repr(call))
    inp = x.build()
    expected_shape = (*lead, call.n_out)
    cotangent = cotangent_like(torch.empty(expected_shape, dtype=dt))
    try:
        got = sandbox.grad(handle, (inp,), cotangent)
    except SubmissionRaised as error:
        if len(lead) != 1:
            error.add_note(f"{call} was called on an input of shape {x.shape}. Linear takes any number of leading "
                           "dimensions, (*, in_features) -> (*, out_features): x @ self.weight.T, F.linear, or "
                           "an einsum with '... in, out in -> ... out' all do; 'b i, o i -> b o' handles 2-D input "
                           "only")
        raise
    params = {name: value.clone().requires_grad_(True) for name, value in state.items()}
    expected, input_grad = oracle_grad(lambda v: F.linear(v, params["weight"], params.get("bias")), inp, cotangent)
    what = f"{call} on x of shape {x.shape} ({dtype})"
    assert_close(got["value"], expected, what,
                 hint="Linear computes x @ weight.T + bias (bias only when bias=True); weight has shape "
                      "(out_features, in_features)")
    assert_close(got["input_grads"][0], input_grad, f"gradient w.r.t. the input of {what}")
    for name, param in params.items():
        grad = got["param_grads"].get(name)
        if grad is None:
            fail(f"Linear.{name} got no gradient: the forward pass must use the parameter itself "
                 "(not .data, .detach() or a copy)")
        assert_close(grad, param.grad, f"gradient w.r.t. Linear.{name} of {what}")


INIT_SIZES = [(400, 50), (100, 300)]  # course: Linear(784, 100), Linear(100, 10), Linear(512, n_classes)


@requires("Linear")
@given(size=st.sampled_from(INIT_SIZES), seed=st.integers(0, 2**32 - 1))
def test_linear_init(sandbox, size, seed):
    """weight and bias start uniform in [-1/sqrt(in_features), 1/sqrt(in_features)], as in torch."""
    n_in, n_out = size
    bound = 1 / math.sqrt(n_in)
    what = f"Linear({n_in}, {n_out}) constructed after torch.manual_seed({seed})"
    handle = sandbox.construct("Linear", n_in, n_out, seed=seed)
    values = state_tensors(sandbox, handle, what)
    for name in ("weight", "bias"):
        if name not in values:
            fail(f"{what} has no {name} in its state_dict (entries: {sorted(values)})")
    hint = (f"initialise both weight and bias uniformly in [-b, b] with b = 1/sqrt(in_features) = {bound:.4g} "
            "(e.g. (t.rand(shape) * 2 - 1) * b): that keeps the output's scale independent of in_features")
    for name, v in values.items():
        v = v.to(torch.float64).flatten()
        if not bool(torch.isfinite(v).all()):
            fail(f"{what}.{name} holds non-finite values (uninitialised t.empty?)\n{hint}")
        largest = float(v.abs().max())
        if largest > bound * (1 + 1e-6):
            fail(f"{what}.{name} has a value of magnitude {largest:.4g}, beyond the bound "
                 f"1/sqrt(in_features) = {bound:.4g}\n{hint}")
        if name == "weight":
            # 20,000+ draws: max |w| of U(-b, b) is above 0.9997 b; the mean and std are within 1.3% of 0 and
            # b/sqrt(3) for every seed tried, so 5% leaves a wide margin.
            if largest < 0.95 * bound:
                fail(f"{what}.weight never comes near the bound: max |w| = {largest:.4g} < 0.95 * {bound:.4g}; "
                     f"the range is too narrow\n{hint}")
            mean, std = float(v.mean()), float(v.std())
            if abs(mean) > 0.05 * bound:
                fail(f"{what}.weight has mean {mean:.4g}, expected about 0 (|mean| <= {0.05 * bound:.3g}): the "
                     f"range is not centred on 0\n{hint}")
            if abs(std / (bound / math.sqrt(3)) - 1) > 0.05:
                fail(f"{what}.weight has standard deviation {std:.4g}; U(-b, b) gives b/sqrt(3) = "
                     f"{bound / math.sqrt(3):.4g} (within 5%): the values are not spread uniformly\n{hint}")
        else:
            # 50+ draws: max |b| of U(-b, b) stays above 0.87 b and each sign holds at least 26% of the values.
            if largest < 0.5 * bound:
                fail(f"{what}.bias never comes near the bound: max |bias| = {largest:.4g} < 0.5 * {bound:.4g} "
                     f"(a zero bias is not torch's init)\n{hint}")
            negative, positive = int((v < 0).sum()), int((v > 0).sum())
            if min(negative, positive) < 0.1 * v.numel():
                fail(f"{what}.bias has {negative} negative and {positive} positive values out of {v.numel()}: "
                     f"it is not centred on 0 (U(0, 1) instead of U(-b, b)?)\n{hint}")


# course: print(model) on Linear(784, 100), Linear(100, 10), Linear(512, 1000 or n_classes); bias positional as above.
@st.composite
def distinct_features(draw) -> tuple[int, int]:
    n_in = draw(st.integers(2, 64), label="in_features")
    n_out = draw(st.integers(2, 63), label="out_features")
    return n_in, n_out + (n_out >= n_in)


@requires("Linear")
@given(features=distinct_features(), bias=st.booleans())
def test_linear_repr(sandbox, advise, features, bias):
    """print(Linear(in, out)) works (what it shows is advised on, never failed)."""
    n_in, n_out = features
    what = f"Linear({n_in}, {n_out}, bias={bias})"
    text = printable(sandbox, sandbox.construct("Linear", n_in, n_out, bias), what)
    advise_on_repr(advise, text, what, {"in_features": n_in, "out_features": n_out})


# ---- Flatten ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FlattenCall:
    ndim: int
    start: int  # as passed (>= 0)
    end: int  # as passed (maybe negative)
    form: str

    @property
    def args(self) -> tuple:
        return {"defaults": (), "positional": (self.start, self.end), "keyword": (), "start keyword": ()}[self.form]

    @property
    def kwargs(self) -> dict:
        if self.form == "start keyword":  # end_dim omitted: its default, -1
            return {"start_dim": self.start}
        return {"start_dim": self.start, "end_dim": self.end} if self.form == "keyword" else {}

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Flatten({', '.join(parts)})"


# course: Flatten() in SimpleMLP on (B, 28, 28) / (B, 1, 28, 28); the old tests.py's test_flatten on (2, 3, 4) with
# start_dim 0 or 1 and end_dim 1, -2 or -1, by keyword. The given Flatten normalises a negative end_dim only, so
# start_dim is drawn >= 0; end_dim of either sign.
@st.composite
def flatten_calls(draw) -> FlattenCall:
    """A valid (start_dim >= 0, end_dim) for an input of ndim 1..5: start <= end once normalised."""
    ndim = draw(st.integers(1, 5), label="ndim")
    forms = ["positional", "keyword"] + (["defaults"] if ndim >= 2 else [])
    form = draw(st.sampled_from(forms), label="form")
    if form == "defaults":
        return FlattenCall(ndim, 1, -1, form)
    start = draw(st.integers(0, ndim - 1), label="start")
    end = draw(st.integers(start, ndim - 1), label="end")
    end -= draw(st.sampled_from([0, ndim]), label="end shift")
    return FlattenCall(ndim, start, end, form)


@st.composite
def flatten_cases(draw) -> tuple[FlattenCall, TensorCase]:
    """A Flatten call and an input of its ndim, in any dtype and memory layout."""
    call = draw(flatten_calls(), label="call")
    return call, draw(shapes(call.ndim, call.ndim).flatmap(tensors), label="x")


# Flatten() as SimpleMLP calls it, on a (B, 1, H, W) batch whose H and W are transposed in memory (view cannot merge
# them): every generated draw may miss this, so it is always tried first.
TRANSPOSED_BATCH = (FlattenCall(4, 1, -1, "defaults"),
                    TensorCase(np.arange(18.0).reshape(2, 1, 3, 3) / 2 - 4, "float32", "transposed"))


def course_flatten(probe: dict) -> dict:
    """The course's Flatten(start_dim=..., end_dim=...) calls, by keyword, on a (2, 3, 4) input."""
    ndim = len(probe["shape"])
    form = "keyword" if "end_dim" in probe else "start keyword"
    call = FlattenCall(ndim, probe["start_dim"], probe.get("end_dim", -1), form)
    return {"case": (call, TensorCase(exact_values(probe["shape"])))}


@requires("Flatten")
@probes(course_flatten)
@example(case=TRANSPOSED_BATCH)
@given(case=flatten_cases())
def test_flatten_values(sandbox, case):
    """Flatten(start_dim, end_dim) equals torch.flatten(x, start_dim, end_dim): both ends inclusive, end_dim < 0 too."""
    call, x = case
    handle = sandbox.construct("Flatten", *call.args, **call.kwargs)
    inp = x.build()
    hint = ("dims start_dim..end_dim, both inclusive, become one; a negative dim counts from the end "
            "(-1 is the last: normalise with end_dim % x.ndim); use reshape, not view, so non-contiguous inputs "
            "work too")
    try:
        got = sandbox.call(handle, inp)
    except SubmissionRaised as error:
        error.add_note(f"{call} on x of shape {x.shape} ({x.layout} layout) raised. Flatten's {hint}")
        raise
    assert_close(got, torch.flatten(inp, call.start, call.end), f"{call} on x of shape {x.shape} ({x.layout})",
                 hint=hint)


@requires("Flatten")
@given(start=st.integers(0, 2), end=st.integers(-3, 2))  # course: start_dim >= 0, end_dim of either sign (above)
def test_flatten_repr(sandbox, start, end):
    """print(Flatten(start_dim, end_dim)) works."""
    printable(sandbox, sandbox.construct("Flatten", start, end), f"Flatten({start}, {end})")


# ---- Sequential ------------------------------------------------------------------------

@dataclass(frozen=True)
class Stack:
    """A list of torch layers for a Sequential: ("ReLU", None) or ("Linear", (weight, bias) arrays)."""

    layers: tuple

    def modules(self) -> list[torch.nn.Module]:
        built = []
        for kind, values in self.layers:
            if kind == "ReLU":
                built.append(torch.nn.ReLU())
                continue
            weight, bias = values
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
            with torch.no_grad():
                linear.weight.copy_(torch.tensor(weight))
                linear.bias.copy_(torch.tensor(bias))
            built.append(linear)
        return built

    def __repr__(self) -> str:
        return "Sequential(" + ", ".join(
            "nn.ReLU()" if kind == "ReLU" else f"nn.Linear(weight={v[0].tolist()}, bias={v[1].tolist()})"
            for kind, v in self.layers) + ")"


# course: Sequential(*modules) is given; it chains modules (the ResNet's (B, C, H, W), the old tests.py's Linear(1, 2),
# ReLU(), Linear(2, 1) on a (1,) input) and is indexed by ints, negative ones too (out_layers[-1] = Linear(...)).
@st.composite
def stacks(draw, width: int, min_size: int = 1, max_size: int = 4) -> Stack:
    kinds = draw(st.lists(st.sampled_from(["Linear", "ReLU"]), min_size=min_size, max_size=max_size), label="kinds")
    layers = []
    for i, kind in enumerate(kinds):
        if kind == "ReLU":
            layers.append(("ReLU", None))
        else:
            layers.append(("Linear", (draw(arrays((width, width)), label=f"weight {i}"),
                                      draw(arrays((width,)), label=f"bias {i}"))))
    return Stack(tuple(layers))


@requires("Sequential")
@given(data=st.data(), width=st.integers(1, 3))
def test_sequential_applies_modules_in_order(sandbox, data, width):
    """Sequential(m0, m1, ...)(x) is ...m1(m0(x)): each module's output feeds the next, in the given order."""
    stack = data.draw(stacks(width), label="modules")
    x = data.draw(tensors((data.draw(DIMS, label="batch"), width), dtype="float64"), label="x")
    handle = sandbox.construct("Sequential", *stack.modules())
    inp = x.build()
    expected = inp
    for module in stack.modules():
        expected = module(expected)
    assert_close(sandbox.call(handle, inp), expected.detach(), f"{stack} on x of shape {x.shape}",
                 hint="forward feeds x through every module in order, each one's output being the next one's "
                      "input (x = module(x) in the loop), and returns the last output")


@requires("Sequential")
@given(stack=stacks(2, min_size=1, max_size=4), replacement=arrays((2, 2)))
def test_sequential_indexing_and_state(sandbox, stack, replacement):
    """seq[i] and seq[i - len] are the i-th module; state_dict keys are "0.weight", ...; seq[-1] = m replaces it."""
    modules = stack.modules()
    n = len(modules)
    handle = sandbox.construct("Sequential", *modules)
    printable(sandbox, handle, repr(stack))
    ids = []
    for i, module in enumerate(modules):
        try:
            forward, backward = sandbox.get(handle, str(i)), sandbox.get(handle, str(i - n))
        except SubmissionRaised as error:
            error.add_note(f"indexing {stack}: seq[{i}] and seq[{i - n}] must both return module {i} "
                           "(negative indices count from the end, as for a list)")
            raise
        expected_type = f"{type(module).__module__}.{type(module).__qualname__}"
        if getattr(forward, "type", None) != expected_type:
            fail(f"{stack}[{i}] is {forward!r}, expected the {type(module).__name__} passed at position {i}")
        if getattr(backward, "id", None) != forward.id:
            fail(f"{stack}[{i - n}] is not the same module as [{i}]: a negative index counts from the end")
        ids.append(forward.id)
    if len(set(ids)) != n:
        fail(f"{stack}: seq[0..{n - 1}] do not return {n} different modules (got object ids {ids})")
    expected_keys = [f"{i}.{p}" for i, (kind, _) in enumerate(stack.layers) if kind == "Linear"
                     for p in ("weight", "bias")]
    entries = state_entries(sandbox, handle, repr(stack))
    got_keys = [e.name for e in entries]
    if got_keys != expected_keys:
        fail(f"{stack}.state_dict() keys are {got_keys}, expected {expected_keys}: register each module as a "
             "child named by its position (self._modules[str(i)] = module or self.add_module(str(i), module)); "
             "a plain Python list hides the parameters from state_dict, .parameters() and the optimizer")
    expected_state = {f"{i}.{name}": value for i, module in enumerate(modules)
                      for name, value in module.state_dict().items()}
    for entry in entries:
        assert_close(entry.tensor, expected_state[entry.name], f"{stack}.state_dict()[{entry.name!r}]")
    new = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        new.weight.copy_(torch.tensor(replacement))
        new.bias.zero_()
    try:
        sandbox.set(handle, "-1", new)
        last = sandbox.get(handle, str(n - 1))
    except SubmissionRaised as error:
        error.add_note(f"seq[-1] = nn.Linear(2, 2) on {stack} must replace the last module")
        raise
    replaced = state_tensors(sandbox, last, f"{stack}[{n - 1}] after seq[-1] = nn.Linear(2, 2)")
    if "weight" not in replaced:
        fail(f"after seq[-1] = nn.Linear(2, 2), {stack}[{n - 1}] is not the new Linear")
    assert_close(replaced["weight"], new.weight.detach(), f"weight of {stack}[{n - 1}] after seq[-1] = new Linear")
    keys_after = [e.name for e in state_entries(sandbox, handle, repr(stack))]
    expected_after = [k for k in expected_keys if not k.startswith(f"{n - 1}.")] + [f"{n - 1}.weight", f"{n - 1}.bias"]
    assert_equal(keys_after, expected_after, f"{stack}.state_dict() keys after seq[-1] = nn.Linear(2, 2)",
                 hint="__setitem__ stores the new module under the same key, str(index % len)")


# ---- SimpleMLP -------------------------------------------------------------------------

MLP_ENTRIES = [("linear1.weight", (100, 784)), ("linear1.bias", (100,)),
               ("linear2.weight", (10, 100)), ("linear2.bias", (10,))]
MLP_PARAMETERS = 79_510


def mlp_keys(sandbox, handle) -> dict[str, str]:
    """The course's SimpleMLP key -> the submission's own key, by position (the names are the learner's choice)."""
    entries = state_entries(sandbox, handle, "SimpleMLP()")
    got = [(e.kind, tuple(e.tensor.shape)) for e in entries]
    expected = [("parameter", shape) for _, shape in MLP_ENTRIES]
    if got != expected:
        fail(f"SimpleMLP().state_dict() is [{describe_state(entries)}]; expected, in this order, the weight and bias "
             f"of Linear(784, 100), then those of Linear(100, 10): {[shape for _, shape in MLP_ENTRIES]}. "
             "Declare flatten, the first Linear, the ReLU and the second Linear in this order, so that a saved "
             "state_dict loads into the course's model (the attribute names are yours to choose)")
    return {name: entry.name for (name, _), entry in zip(MLP_ENTRIES, entries)}


@requires("SimpleMLP")
def test_simple_mlp_structure(sandbox):
    """SimpleMLP has Linear(784, 100) then Linear(100, 10): 4 trainable entries, 79,510 parameters, in order."""
    handle = sandbox.construct("SimpleMLP")
    mlp_keys(sandbox, handle)
    parameters = sandbox.state(handle)["parameters"]
    frozen = [n for n, trainable in parameters if not trainable]
    if frozen:
        fail(f"SimpleMLP parameters {frozen} do not require grad")
    count = sum(e.tensor.numel() for e in state_entries(sandbox, handle, "SimpleMLP()") if e.kind == "parameter")
    assert_equal(count, MLP_PARAMETERS, "number of parameters of SimpleMLP()")
    printable(sandbox, handle, "SimpleMLP()")


def mlp_weights(seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def uniform(*shape, fan_in):
        return ((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) / math.sqrt(fan_in)).to(dtype)

    return {"linear1.weight": uniform(100, 784, fan_in=784), "linear1.bias": uniform(100, fan_in=784),
            "linear2.weight": uniform(10, 100, fan_in=100) * 4, "linear2.bias": uniform(10, fan_in=100)}


def mlp_logits(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = F.relu(F.linear(x.flatten(1), w["linear1.weight"], w["linear1.bias"]))
    return F.linear(hidden, w["linear2.weight"], w["linear2.bias"])


LOGITS_WHY = ("F.cross_entropy(logits, labels) applies log_softmax itself, so the classifier must return the raw "
              "scores of linear2 (logits); probabilities are computed only where wanted, e.g. in predict(). A "
              "softmax inside the model is applied twice by the loss and squashes the gradients (they vanish as "
              "soon as one class dominates), so the model trains badly.")


# course: SimpleMLP gets MNIST batches (B, 1, 28, 28) from its DataLoader and tests.py's (10, 28, 28); float32 (float64
# here through .double(), which the course's modules survive).
@st.composite
def mnist_batches(draw) -> tuple[tuple[int, ...], int, str]:
    batch = draw(st.integers(1, 3), label="batch")
    shape = draw(st.sampled_from([(batch, 28, 28), (batch, 1, 28, 28)]), label="shape")
    return shape, draw(SEEDS, label="seed"), draw(DTYPE, label="dtype")


def mlp_with_weights(sandbox, seed: int, dtype: str):
    dt = DTYPES[dtype]
    weights = mlp_weights(seed, dt)
    handle = sandbox.construct("SimpleMLP")
    set_dtype(sandbox, handle, dtype)
    keys = mlp_keys(sandbox, handle)
    load_state(sandbox, handle, {keys[name]: value for name, value in weights.items()}, "SimpleMLP()")
    return handle, weights, keys


def mnist_input(shape, seed: int, dtype: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(DTYPES[dtype])


@requires("SimpleMLP")
@probes(lambda p: {"case": (p["shape"], 0, "float32")})
@given(case=mnist_batches())
def test_simple_mlp_returns_logits(sandbox, case):
    """SimpleMLP(x) for (B, 28, 28) or (B, 1, 28, 28) images is linear2(relu(linear1(flatten(x)))): raw logits."""
    shape, seed, dtype = case
    handle, weights, keys = mlp_with_weights(sandbox, seed, dtype)
    x = mnist_input(shape, seed, dtype)
    got = tensor_of(sandbox.call(handle, x), f"SimpleMLP() on x of shape {shape}")
    logits = mlp_logits(x, weights)
    if got.shape == logits.shape and got.dtype == logits.dtype:
        for dim in (-1, 0):
            if SMALL_MISTAKE.close(got, F.softmax(logits, dim)):
                fail(f"SimpleMLP returns softmax probabilities (softmax over dim {dim} of the logits), not the "
                     f"logits.\n{LOGITS_WHY}")
            if MISTAKE.close(got, F.log_softmax(logits, dim)):
                fail(f"SimpleMLP returns log-probabilities (log_softmax over dim {dim} of the logits), not the "
                     f"logits.\n{LOGITS_WHY}")
    assert_close(got, logits, f"SimpleMLP() on x of shape {shape} ({dtype}), with given weights",
                 hint="forward is flatten -> linear1 -> relu -> linear2, returning linear2's output unchanged. "
                      + LOGITS_WHY)


@requires("SimpleMLP")
@given(case=mnist_batches())
def test_simple_mlp_cross_entropy_gradients(sandbox, case):
    """Backpropagating F.cross_entropy through SimpleMLP gives the parameter gradients of the true logits."""
    shape, seed, dtype = case
    handle, weights, keys = mlp_with_weights(sandbox, seed, dtype)
    x = mnist_input(shape, seed, dtype)
    labels = torch.randint(0, 10, (shape[0],), generator=torch.Generator().manual_seed(seed + 2))
    params = {name: value.clone().requires_grad_(True) for name, value in weights.items()}
    logits = mlp_logits(x, params)
    loss = F.cross_entropy(logits, labels)
    (cotangent,) = torch.autograd.grad(loss, logits, retain_graph=True)
    loss.backward()
    # The worker backpropagates (model(x) * cotangent).sum(): with cotangent = dloss/dlogits this is exactly
    # the gradient of F.cross_entropy(model(x), labels) when the model returns the logits.
    got = sandbox.grad(handle, (x,), cotangent.detach())
    for name, param in params.items():
        grad = got["param_grads"].get(keys[name])
        if grad is None:
            fail(f"SimpleMLP's {keys[name]} got no gradient from the loss: every layer must stay in the autograd graph")
        assert_close(grad, param.grad, f"gradient of F.cross_entropy(SimpleMLP()(x), labels) w.r.t. {name}, "
                                       f"x of shape {shape} ({dtype})",
                     hint="the loss consumes the model's logits; a softmax inside the model, a detached layer or a "
                          "ReLU that blocks gradients changes these gradients. " + LOGITS_WHY)


# ---- SimpleMLP trained on real digits: logits are the training object --------------------------
# The harness trains the submission's SimpleMLP the course's way (Adam, F.cross_entropy on its outputs, train
# mode) in the sandbox worker on scikit-learn's digits as 1x28x28 MNIST-normalised images (`fixtures.digits`),
# then judges from plain data: the loss of every batch and the eval-mode outputs on held-out digits. The
# submission's own SimpleMLP train(args), when it is the last `train`, runs on the same digits with a short
# budget (`conformance.training`, shared with `test_feature_extraction`).

from conformance.training import (  # noqa: E402
    accuracy, describe_losses, judge_own_run, loss_fell, run_own_train, skip_unless_own_train,
)
from conformance.budgets import MLP, MLP_OWN, TRAIN_SECONDS  # noqa: E402
from fixtures.digits import mnist_digits  # noqa: E402

MLP_ARGS_DEFAULTS = {"batch_size": 16, "epochs": 1, "learning_rate": 1e-3}
# Cross-entropy of a probability vector over 10 classes is at least log(1 + 9/e) (all mass on the right class):
# a model with softmax inside can never train its loss below it. Logits reach about 0.3 here.
SOFTMAX_FLOOR = math.log(1 + 9 / math.e)


def mlp_digits():
    return mnist_digits(MLP.train, MLP.held_out)


def mlp_outputs(sandbox, handle, x: torch.Tensor, what: str) -> torch.Tensor:
    sandbox.method(handle, "train", False)
    got = tensor_of(sandbox.call(handle, x, no_grad=True), what)
    if tuple(got.shape) != (len(x), 10):
        fail(f"{what} has shape {tuple(got.shape)}; expected ({len(x)}, 10): ten logits per image")
    return got.to(torch.float32)


def probabilities(outputs: torch.Tensor) -> bool:
    return bool((outputs >= 0).all()) and bool(((outputs.sum(dim=-1) - 1).abs() < 1e-3).all())


FLOOR_WHY = (f"Cross-entropy of probabilities can never go below log(1 + 9/e) = {SOFTMAX_FLOOR:.3f} (even with all "
             "the probability on the right class, F.cross_entropy takes their softmax again), so the loss stalls "
             "and the gradients shrink.")


@requires("SimpleMLP")
def test_simple_mlp_training_lowers_the_loss_on_digits(sandbox):
    """Trained with F.cross_entropy on digits (Adam, 2 epochs), SimpleMLP's loss falls well below the softmax floor."""
    train, held_out = mlp_digits()
    x, y = train.tensors
    x_held, y_held = held_out.tensors
    handle = sandbox.construct("SimpleMLP")
    losses = sandbox.fit(handle, x, y, epochs=MLP.epochs, batch_size=MLP.batch, lr=MLP.lr, timeout=TRAIN_SECONDS)
    outputs = mlp_outputs(sandbox, handle, x_held, f"SimpleMLP() after training, on {len(y_held)} held-out digits")
    held_loss, score = float(F.cross_entropy(outputs, y_held)), accuracy(outputs, y_held)
    recipe = f"Adam(lr={MLP.lr}), F.cross_entropy(model(x), y), {MLP.recipe()}, 1 channel"
    summary = (f"training loss {describe_losses(losses)}; held-out cross-entropy {held_loss:.3f}, accuracy "
               f"{score:.1%} (chance 10%)")
    if probabilities(outputs):
        fail(f"SimpleMLP trained with {recipe}: {summary}. Its outputs are probabilities (every row is >= 0 and sums "
             f"to 1): the model applies softmax. {FLOOR_WHY}\n{LOGITS_WHY}")
    if not loss_fell(losses, MLP) or held_loss >= MLP.max_held_out_loss:
        floor = f" {FLOOR_WHY}" if min(losses, default=0.0) >= SOFTMAX_FLOOR - 1e-3 else ""
        fail(f"SimpleMLP trained with {recipe} does not learn: {summary}; the course's model gets below "
             f"{MLP.max_held_out_loss} held-out cross-entropy.{floor}\n{LOGITS_WHY}")
    if score < MLP.min_accuracy:
        fail(f"SimpleMLP trained with {recipe}: {summary}; the course's model reaches at least {MLP.min_accuracy:.0%}")


def test_simple_mlp_training_own_train_on_digits(sandbox, program, advise):
    """The submission's own SimpleMLP train(args), run on digits for one epoch: its loss falls, its model classifies."""
    plan = skip_unless_own_train(program, "mlp")
    train, held_out = mlp_digits()
    x_held, y_held = held_out.tensors
    run = run_own_train(sandbox, plan, (train, held_out), MLP_ARGS_DEFAULTS, advise, MLP_OWN)
    if run is None:
        return
    what = f"the model {run.call} returned"
    outputs = mlp_outputs(sandbox, run.model, x_held, f"{what}, in eval mode on {len(y_held)} held-out digits")
    held_loss, score = float(F.cross_entropy(outputs, y_held)), accuracy(outputs, y_held)
    summary = f"held-out cross-entropy of its logits {held_loss:.3f}, accuracy {score:.1%} (chance 10%)"
    judge_own_run(run, outputs, y_held, len(train), advise)
    if run.losses:
        if not loss_fell(run.losses, MLP_OWN):
            fail(f"{run.call}, run on {len(train)} digits: its loss list does not fall: {describe_losses(run.losses)}; "
                 f"{summary}. Each step computes loss = F.cross_entropy(model(imgs), labels), then loss.backward(), "
                 "optimizer.step(), and optimizer.zero_grad() before the next backward (not between backward and "
                 "step, which throws the gradients away)")
        if min(run.losses) >= SOFTMAX_FLOOR - 1e-3 and held_loss < SOFTMAX_FLOOR - 0.2:
            fail(f"{run.call}, run on {len(train)} digits: its loss never goes below {SOFTMAX_FLOOR:.3f} "
                 f"({describe_losses(run.losses)}) while its model's logits reach {held_loss:.3f} held-out "
                 "cross-entropy: the loop applies softmax before F.cross_entropy. " + FLOOR_WHY + "\n" + LOGITS_WHY)
    if score < MLP_OWN.min_accuracy:
        fail(f"{what}, run on {len(train)} digits for one epoch: {summary}; the course's loop reaches at least "
             f"{MLP_OWN.min_accuracy:.0%}" + (f"; its losses: {describe_losses(run.losses)}" if run.losses else ""))
