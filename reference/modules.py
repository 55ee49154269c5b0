"""Basic building blocks written from scratch: ReLU, Linear and a small MLP."""

import torch as t
import torch.nn as nn

from .given import Flatten


class ReLU(nn.Module):
    """Elementwise ``max(x, 0)``. Returns a new tensor; never modifies ``x``."""

    def forward(self, x: t.Tensor) -> t.Tensor:
        return t.maximum(x, t.tensor(0.0))


class Linear(nn.Module):
    """Affine map ``y = x @ weight.T + bias``, ``(*, in_features) -> (*, out_features)``.

    ``weight`` has shape ``(out_features, in_features)`` and ``bias`` shape
    ``(out_features,)``; both are initialised uniformly in
    ``[-1/sqrt(in_features), 1/sqrt(in_features)]``, as in PyTorch.
    With ``bias=False``, ``self.bias`` is ``None``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features

        bound = 1 / in_features**0.5
        weight = bound * (2 * t.rand(out_features, in_features) - 1)
        self.weight = nn.Parameter(weight)
        if bias:
            self.bias = nn.Parameter(bound * (2 * t.rand(out_features) - 1))
        else:
            self.bias = None

    def forward(self, x: t.Tensor) -> t.Tensor:
        out = x @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SimpleMLP(nn.Module):
    """MNIST classifier: ``(B, 1, 28, 28)`` images -> ``(B, 10)`` logits (no softmax).

    Flatten -> Linear(784, 100) -> ReLU -> Linear(100, 10): 79,510 parameters.
    """

    def __init__(self):
        super().__init__()
        self.flatten = Flatten()
        self.linear1 = Linear(28 * 28, 100)
        self.relu = ReLU()
        self.linear2 = Linear(100, 10)

    def forward(self, x: t.Tensor) -> t.Tensor:
        return self.linear2(self.relu(self.linear1(self.flatten(x))))
