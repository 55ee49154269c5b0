"""What the course notebook hands to learners, supplied where a submission lacks it.

Used inside the sandbox worker only: it builds the namespace a submission's
definitions run in, and makes torchvision's pretrained ResNet34 load offline.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

from .loader import GIVEN_NAMES

MODULE_NAME = "__submission__"


def base_namespace() -> dict:
    """The imports and given names every course script starts from."""
    import einops
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
    from jaxtyping import Float, Int

    given = course_given()
    namespace = {
        "__name__": MODULE_NAME,
        "__builtins__": __builtins__,
        "t": torch,
        "torch": torch,
        "nn": nn,
        "F": F,
        "np": np,
        "einops": einops,
        "Tensor": torch.Tensor,
        "Float": Float,
        "Int": Int,
        "torchvision": torchvision,
        "models": torchvision.models,
        "device": "cpu",
        "MAIN": False,
    }
    namespace.update({name: getattr(given, name) for name in GIVEN_NAMES})
    return namespace


GIVEN_FILE = Path(__file__).resolve().parent.parent / "reference" / "given.py"


def course_given() -> types.ModuleType:
    """`reference/given.py` (the course's hand-outs) loaded on its own, as the module `__course__`.

    Not through the `reference` package: that would put the reference solutions in the
    worker's memory, where a submission could find them (`nn.Module.__subclasses__()`).
    """
    if "__course__" in sys.modules:
        return sys.modules["__course__"]
    spec = importlib.util.spec_from_file_location("__course__", GIVEN_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["__course__"] = module
    spec.loader.exec_module(module)
    return module


def submission_module() -> types.ModuleType:
    """A real module, registered in `sys.modules`, that the submission's definitions run in.

    Definitions see it as their module, as they would in a notebook's `__main__`: decorators that
    look their module up (typeguard's `@typechecked`, `jaxtyped`, dataclasses, pickling) work.
    """
    module = types.ModuleType(MODULE_NAME, "the submission's definitions")
    module.__dict__.update(base_namespace())
    sys.modules[MODULE_NAME] = module
    return module


def install_offline_torchvision() -> None:
    """`torchvision.models.resnet34(weights=...)` returns the harness's stand-in, never downloads."""
    import torchvision.models as models
    import torchvision.models.resnet as resnet

    from fixtures.standin import pretrained_resnet34  # imported now: the harness is out of reach once loading starts

    original = resnet.resnet34
    if getattr(original, "_conformance_offline", False):
        return

    @functools.wraps(original)
    def resnet34(*, weights=None, progress: bool = True, **kwargs):
        if kwargs.pop("pretrained", False):  # the pre-0.13 spelling
            weights = "IMAGENET1K_V1"
        if weights is None:
            return original(weights=None, progress=progress, **kwargs)
        return pretrained_resnet34(**kwargs)

    resnet34._conformance_offline = True  # type: ignore[attr-defined]
    resnet.resnet34 = resnet34
    models.resnet34 = resnet34
