"""The harness is out of the submission's reach (`under_test/isolation.py`), and loading has its own limits.

Each probe is a function of a small submission that tries something; the worker answers with
what it got, and the harness sees every refused attempt (`Sandbox.take_blocked`).
"""

from __future__ import annotations


import pytest

from under_test.isolation import ROOT, landlock_abi
from under_test.sandbox import Sandbox

PROBES = """
import os
import torch as t
import torch.nn as nn

def import_harness(name):
    try:
        __import__(name)
        return "imported"
    except ImportError as error:
        return f"refused: {error}"

def read(path):
    try:
        with open(path, "rb") as handle:
            return f"read {len(handle.read())} bytes"
    except OSError as error:
        return f"refused: {error.strerror or error}"

def write(path):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        return "written"
    except OSError as error:
        return f"refused: {error.strerror or error}"

def remove(path):
    try:
        os.remove(path)
        return "removed"
    except OSError as error:
        return f"refused: {error.strerror or error}"

def harness_classes():
    return sorted({c.__module__ for c in nn.Module.__subclasses__() if not c.__module__.startswith("torch")})

def loaded_harness_modules():
    import sys
    return sorted(n for n in sys.modules if n.split(".")[0] in ("reference", "conformance", "under_test", "fixtures", "corpus"))

def cat(path):
    import subprocess
    done = subprocess.run(["cat", path], capture_output=True)
    return done.returncode

def where():
    return os.getcwd()
"""

LOGITS = ROOT / "fixtures" / "logits" / "resnet34_logits_224.npy"


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    path = tmp_path_factory.mktemp("sub") / "probes.py"
    path.write_text(PROBES)
    with Sandbox(path, timeout=20) as sandbox:
        yield sandbox


@pytest.mark.parametrize("package", ["reference", "reference.resnet", "conformance", "under_test.trusted",
                                     "fixtures.snapshots", "corpus"])
def test_the_harness_packages_cannot_be_imported(box, package):
    box.take_blocked()
    assert box.call("import_harness", package).startswith("refused: No module named")
    assert box.take_blocked() == [f"import {package.split('.')[0]}"]  # the parent package is looked up first


def test_no_harness_module_or_reference_class_is_in_the_worker(box):
    assert box.call("loaded_harness_modules") == []
    assert box.call("harness_classes") == ["__course__"]  # the course's hand-outs only (Sequential, ...)


@pytest.mark.parametrize("path", [LOGITS, ROOT / "reference" / "resnet.py", ROOT / "examples" / "learner_submission.py"])
def test_the_harness_files_cannot_be_read(box, path):
    box.take_blocked()
    assert box.call("read", str(path)).startswith("refused")
    assert box.take_blocked() == [f"open {path}"]


def test_the_submission_its_libraries_and_its_working_folder_are_usable(box):
    assert box.call("read", box.impl).startswith("read")
    assert box.call("read", __import__("torch").__file__).startswith("read")
    assert box.call("write", "scratch.txt") == "written"
    assert box.call("where") == str(box.workdir)
    assert box.take_blocked() == []


@pytest.mark.skipif(landlock_abi() <= 0, reason="the kernel offers no Landlock")
def test_the_kernel_enforces_it_for_child_processes_and_writes(box, tmp_path):
    assert box.call("cat", str(LOGITS)) != 0
    assert box.call("cat", box.impl) == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    assert box.call("write", str(tmp_path / "new.txt")).startswith("refused")
    assert box.call("remove", str(outside)).startswith("refused")
    assert outside.read_text() == "keep" and not (tmp_path / "new.txt").exists()


def test_a_lent_worker_is_never_the_graded_one(tmp_path):
    """Root-cause re-runs lend trusted blocks to a worker of their own; the submission's worker never sees them."""
    path = tmp_path / "sub.py"
    path.write_text(PROBES + "\nclass Linear(nn.Module):\n    def forward(self, x):\n        return x\n")
    with Sandbox(path, trusted=["Linear"]) as lent:
        assert lent.get(lent.construct("Linear", 2, 3), "__class__.__module__") == "torch.nn.modules.linear"
        assert "under_test.trusted" in lent.call("harness_classes")
    with Sandbox(path) as own:
        assert own.get(own.construct("Linear"), "__class__.__module__") == "__submission__"
        assert "under_test.trusted" not in own.call("harness_classes")


HANGS = """
import torch as t

def ok(x):
    return x + 1

class Stuck:
    while True:
        pass

def also_ok(x):
    return x * 2
"""


def test_a_definition_that_hangs_fails_its_names_once(tmp_path):
    path = tmp_path / "hangs.py"
    path.write_text(HANGS)
    box = Sandbox(path, load_timeout=2)
    try:
        info = box.start()
        assert info.failed == {"Stuck": f"{path}:7: its definition did not finish within 2 s"}
        assert box.call("ok", 1) == 2 and box.call("also_ok", 2) == 4
        assert len(box.skipped) == 1  # remembered: the definition that hung
        box.stop()
        box.start()  # later starts leave it out (`skipped`, passed to the worker) without running it again
        assert "Stuck" in box.load_info.failed and box.call("ok", 1) == 2
    finally:
        box.stop()
