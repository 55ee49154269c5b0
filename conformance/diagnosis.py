"""Which usual mistake a wrong result is: the tables of the mistakes learners make, and the one matcher.

Each mistake is computed from the oracle's own weights, on the same input, and compared with
what the submission returned (`compare.MISTAKE`). A mistake is named only when its result
differs from the right one on this input (otherwise the input cannot tell them apart) and
equals the submission's. A diagnosis chooses the hint a failure shows; it never decides a
verdict.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .compare import MISTAKE
from .probing import oracle_grad


@dataclass(frozen=True)
class Mistake:
    change: object  # what the mistake changes: keywords of `block_output`, or a function of a copy of the oracle
    what: str  # what the mistaken code computes
    why: str  # what the course asks instead


def matching(got: torch.Tensor, expected: torch.Tensor,
             alternatives: list[tuple[Mistake, torch.Tensor | None]]) -> list[Mistake]:
    """The mistakes whose result (None: it cannot be computed on this input) differs from `expected` and equals
    `got`."""
    found = []
    for mistake, alternative in alternatives:
        if alternative is None or alternative.shape != got.shape or MISTAKE.close(alternative, expected):
            continue
        if MISTAKE.close(got, alternative):
            found.append(mistake)
    return found


# ---- a residual block: torchvision's BasicBlock, computed with one of the usual mistakes ------------------------

def block_output(block, x: torch.Tensor, *, skip=True, relu_end_of_left=False, relu_left_only=False,
                 final_relu=True, stride_second=False, projection_bn=True) -> torch.Tensor:
    """A BasicBlock's forward, or one of the usual mistakes, from the block's own weights. BatchNorm runs
    functionally on copies of the running buffers, so the block is never changed (even in train mode)."""

    def norm(module, h):
        return F.batch_norm(h, module.running_mean.clone(), module.running_var.clone(), module.weight, module.bias,
                            training=block.training, momentum=module.momentum, eps=module.eps)

    s = block.stride
    first, second = (1, s) if stride_second else (s, 1)
    h = F.relu(norm(block.bn1, F.conv2d(x, block.conv1.weight, stride=first, padding=1)))
    left = norm(block.bn2, F.conv2d(h, block.conv2.weight, stride=second, padding=1))
    if block.downsample is None:
        right = x
    else:
        right = F.conv2d(x, block.downsample[0].weight, stride=s)
        if projection_bn:
            right = norm(block.downsample[1], right)
    if relu_end_of_left:
        left = F.relu(left)
    if not skip:
        return F.relu(left)
    if relu_left_only:
        return F.relu(left) + right
    return F.relu(left + right) if final_relu else left + right


STRIDE_SECOND = Mistake(dict(stride_second=True), "a block with the stride on the left branch's SECOND conv",
                        "first_stride belongs to the first 3x3 conv (stride first_stride, padding 1); the second "
                        "conv has stride 1")

BLOCK_MISTAKES = (
    Mistake(dict(skip=False), "relu(left(x))", "the skip connection is missing; return relu(left(x) + right(x)), "
                                               "where right is the identity or the projection"),
    Mistake(dict(relu_end_of_left=True), "relu(relu(left(x)) + right(x))",
            "the left branch ends with a ReLU; it must end with its second BatchNorm, and the only ReLU after it "
            "comes after the addition"),
    Mistake(dict(relu_left_only=True), "relu(left(x)) + right(x)",
            "the ReLU is applied to the left branch before the addition instead of to the sum"),
    Mistake(dict(final_relu=False), "left(x) + right(x)", "the ReLU after the addition is missing"),
    STRIDE_SECOND,
    Mistake(dict(projection_bn=False), "relu(left(x) + conv1x1(x))",
            "the projection's BatchNorm is not applied after its 1x1 conv"),
)


def _shows(mistake: Mistake, block) -> bool:
    """Whether this block can show the mistake at all (a stride of 1 has no place to be wrong; an identity skip
    has no projection BatchNorm to leave out)."""
    if mistake.change.get("stride_second") and block.stride == 1:
        return False
    return not ("projection_bn" in mistake.change and block.downsample is None)


def diagnose_block(got: torch.Tensor, oracle, x: torch.Tensor, train: bool,
                   cotangent: torch.Tensor | None = None) -> str:
    """Which usual mistakes of a residual block the submission matches on this input: its output, or with a
    `cotangent`, its gradient w.r.t. the input. `oracle` (a BasicBlock) holds the state before the forward."""
    oracle.train(train)

    def evaluate(**change) -> torch.Tensor | None:
        if cotangent is None:
            with torch.no_grad():
                return block_output(oracle, x, **change)
        return oracle_grad(lambda v: block_output(oracle, v, **change), x, cotangent)[1]

    expected = evaluate()
    found = matching(got, expected, [(m, evaluate(**m.change)) for m in BLOCK_MISTAKES if _shows(m, oracle)])
    what = "the output equals" if cotangent is None else "the gradient w.r.t. the input is that of"
    lines = [f"{what} {m.what}: {m.why}" for m in found]
    if len(lines) > 1:
        return "on this input, " + "; or ".join(lines)
    return lines[0] if lines else ""


# ---- a ResNet34: the reference model with one of the usual mistakes --------------------------------------------

class _GlobalMax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


def _softmax(model):
    return lambda x: model(x).softmax(dim=-1)


def _unpadded_max_pool(model):
    model.in_layers[3].padding = 0
    return model


def _max_instead_of_average(model):
    model.out_layers[0] = _GlobalMax()
    return model


def _stem_padding(padding: int) -> Callable:
    def change(model):
        model.in_layers[0].padding = padding
        return model
    return change


NETWORK_MISTAKES = (
    Mistake(_softmax, "a softmax at the end",
            "forward must return the logits (the Linear's output): F.cross_entropy applies log-softmax itself, and "
            "probabilities are only for interpreting predictions"),
    Mistake(_unpadded_max_pool, "the stem's max pool without padding",
            "the stem's max pool is MaxPool2d(kernel_size=3, stride=2, padding=1); torch's nn.MaxPool2d defaults "
            "to padding 0"),
    Mistake(_max_instead_of_average, "a global MAX pool before the Linear",
            "the head averages each channel over H and W (AveragePool: x.mean(dim=(2, 3))), then applies the "
            "Linear"),
    Mistake(_stem_padding(1), "the stem's 7x7 conv with padding 1", "the stem's conv has stride 2 and padding 3"),
    Mistake(_stem_padding(0), "the stem's 7x7 conv without padding", "the stem's conv has stride 2 and padding 3"),
)


def diagnose_network(got: torch.Tensor, oracle: torch.nn.Module, x: torch.Tensor, expected: torch.Tensor) -> str:
    """Which usual mistakes of a ResNet34 (the reference `oracle`, in eval mode) the submission's logits match."""

    def evaluate(mistake: Mistake) -> torch.Tensor | None:
        try:
            with torch.no_grad():
                return mistake.change(copy.deepcopy(oracle).eval())(x)
        except RuntimeError:  # the mistaken model cannot run on this input
            return None

    found = matching(got, expected, [(m, evaluate(m)) for m in NETWORK_MISTAKES])
    return "; or ".join(f"the logits are those of a ResNet34 with {m.what}: {m.why}" for m in found)
