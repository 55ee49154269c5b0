"""Section 1: my own versions of the basic modules."""

import numpy as np
import einops
import torch as t
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from jaxtyping import Float, Int


class ReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        # not in place! t.maximum makes a new tensor
        return t.maximum(x, t.tensor(0.0, device=x.device, dtype=x.dtype))


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias=True):
        """
        A simple linear (technically, affine) transformation.

        The fields should be named `weight` and `bias` for compatibility with PyTorch.
        If `bias` is False, set `self.bias` to None.
        """
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / np.sqrt(in_features)

        w = (t.rand(out_features, in_features) * 2 - 1) * bound
        self.weight = nn.Parameter(w)
        if bias:
            b = (t.rand(out_features) * 2 - 1) * bound
            self.bias = nn.Parameter(b)
        else:
            self.bias = None

    def forward(self, x: Float[Tensor, "... in_feats"]) -> Float[Tensor, "... out_feats"]:
        out = x @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(nn.Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:
        """
        Flatten out dimensions from start_dim to end_dim, inclusive of both.
        """
        shape = input.shape
        start = self.start_dim if self.start_dim >= 0 else len(shape) + self.start_dim
        end = self.end_dim if self.end_dim >= 0 else len(shape) + self.end_dim

        middle = 1
        for s in shape[start : end + 1]:
            middle *= s
        new_shape = tuple(shape[:start]) + (middle,) + tuple(shape[end + 1 :])
        return t.reshape(input, new_shape)

    def extra_repr(self) -> str:
        return ", ".join([f"{key}={getattr(self, key)}" for key in ["start_dim", "end_dim"]])


class SimpleMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = Flatten()
        self.linear1 = Linear(28 * 28, 100)
        self.relu = ReLU()
        self.linear2 = Linear(100, 10)

    def forward(self, x: Float[Tensor, "batch 1 28 28"]) -> Float[Tensor, "batch 10"]:
        return self.linear2(self.relu(self.linear1(self.flatten(x))))
