"""Load, don't run: what the loader keeps, drops and reports, read statically and executed."""

from __future__ import annotations

import json

import re

import pytest
import torch

from under_test.course import base_namespace
from under_test.loader import execute, extract
from under_test.source import SubmissionError, read_submission, submission_name


def run(path, aliases=None):
    program = extract(path)
    namespace = base_namespace()
    return program, namespace, execute(program, namespace, aliases)


def test_keeps_definitions_and_skips_side_effects(write):
    path = write("answers.py", """
        %pip install einops
        !wget http://example.invalid/data.zip
        import torch as t
        import part2_cnns.tests as tests
        print("downloading MNIST")
        raise SystemExit("a script that exits at top level")
        root = next(p for p in Path.cwd().parents)
        IntOrPair = int | tuple[int, int]
        SCALE: float = 2.0
        def double(x):
            return x * SCALE
        tests.test_double(double)
        if MAIN:
            double(1 / 0)
    """)
    program, namespace, report = run(path)
    assert namespace["double"](3) == 6.0
    assert namespace["IntOrPair"] == int | tuple[int, int]
    assert "root" not in namespace
    assert "tests" in report.failed and "ModuleNotFoundError" in report.failed["tests"]
    assert any("import skipped" in note for note in report.notes)


def test_dataclasses_and_future_flags_of_the_harness_do_not_leak(write):
    path = write("answers.py", """
        from dataclasses import dataclass
        @dataclass
        class ResNetTrainingArgs:
            batch_size: int = 64
            epochs: int = 5
        def hint(x: Tensor) -> int:
            return 1
    """)
    _, namespace, report = run(path)
    assert not report.failed
    assert namespace["ResNetTrainingArgs"]().epochs == 5
    assert namespace["hint"].__annotations__["x"] is namespace["Tensor"]  # not a string: no inherited future import


def test_shell_lines_inside_blocks_keep_the_block_valid(write):
    path = write("answers.py", """
        def f():
            !echo hi
        def g():
            return 1
    """)
    _, namespace, _ = run(path)
    assert namespace["f"]() is None and namespace["g"]() == 1


def test_last_definition_wins_and_stub_status(write):
    path = write("answers.py", """
        class ReLU(nn.Module):
            def forward(self, x):
                return x.clamp(min=0)
        class ReLU(nn.Module):
            def forward(self, x):
                raise NotImplementedError()
        def train(args):
            return "first"
        def train(args):
            return "last"
        class Linear(nn.Module):
            def __init__(self, a, b):
                super().__init__()
                raise NotImplementedError()
        def conv2d(x, w):
            '''docstring'''
            ...
        def maxpool2d(x, k):
            return x
            raise NotImplementedError()
        class AveragePool(nn.Module):
            def __init__(self):
                super().__init__()
            def forward(self, x):
                return x.mean((2, 3))
        class Flatten(nn.Module):
            def forward(self, x):
                pass
    """)
    program, namespace, _ = run(path)
    assert namespace["train"](None) == "last"
    assert program.status("ReLU") == "stub"  # the last one is the stub
    assert program.status("Linear") == "stub"
    assert program.status("conv2d") == "stub"
    assert program.status("maxpool2d") == "defined"  # unreachable raise after real code
    assert program.status("AveragePool") == "defined"  # an __init__ that only calls super() is complete
    assert program.status("Flatten") == "stub"
    assert program.status("BatchNorm2d") == "missing"
    assert program.status("Sequential") == "given"


def test_course_names_are_supplied_and_own_definitions_override(write):
    path = write("answers.py", """
        class Flatten(nn.Module):
            def forward(self, x):
                return "mine"
    """)
    _, namespace, _ = run(path)
    assert namespace["Flatten"]()(None) == "mine"
    assert namespace["force_pair"](3) == (3, 3)
    assert namespace["device"] == "cpu"
    assert namespace["MaxPool2d"](3, 2).padding == 1  # the course's default padding


def test_aliases_map_renamed_names(write):
    path = write("answers.py", """
        def get_resnet34_for_feature_extraction(n):
            return n
    """)
    program, namespace, _ = run(path, {"get_resnet34_for_feature_extraction": "get_resnet_for_feature_extraction"})
    assert namespace["get_resnet_for_feature_extraction"](7) == 7
    assert program.status("get_resnet_for_feature_extraction",
                          {"get_resnet34_for_feature_extraction": "get_resnet_for_feature_extraction"}) == "defined"


def test_failed_definition_is_reported(write):
    path = write("answers.py", """
        from jaxtyping import jaxtyped
        @jaxtyped(typechecker=typechecker)
        def f(x):
            return x
    """)
    _, namespace, report = run(path)
    assert "f" not in namespace and "NameError" in report.failed["f"]


def test_notebook_cells_and_magics(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": ["# Title\n", "def not_code(): pass"]},
        {"cell_type": "code", "source": ["%pip install einops\n", "import torch as t\n"]},
        {"cell_type": "code", "source": ["%%capture\n", "def captured():\n", "    return 1\n"]},
        {"cell_type": "code", "source": ["%%bash\n", "echo not python\n"]},
        {"cell_type": "code", "source": ["def broken(:\n"]},
        {"cell_type": "code", "source": "def joined():\n    return 2\n"},
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    program, namespace, _ = run(path)
    assert namespace["captured"]() == 1 and namespace["joined"]() == 2
    assert "not_code" not in namespace
    assert any("syntax error" in note for note in program.notes)


def test_script_with_a_syntax_error_keeps_the_other_cells(write):
    path = write("answers.py", """
        # %%
        def good():
            return 1
        # %%
        def bad(:
            pass
        # %%
        def also_good():
            return 2
    """)
    program, namespace, _ = run(path)
    assert namespace["good"]() == 1 and namespace["also_good"]() == 2
    assert len(program.notes) == 1


def test_directory_merges_files_and_drops_relative_imports(tmp_path):
    package = tmp_path / "sub"
    package.mkdir()
    (package / "a_blocks.py").write_text("from .b_base import Base\nclass Block(Base):\n    pass\n")
    (package / "b_base.py").write_text("class Base:\n    kind = 'base'\n")
    (package / "tests.py").write_text("def not_graded(): pass\n")
    program, namespace, report = run(package)
    assert namespace["Block"].kind == "base"  # defined after a retry: its base was in a later file
    assert "not_graded" not in namespace and not report.failed
    assert submission_name(package) == "sub"


def test_only_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(SubmissionError, match="no such file"):
        read_submission(tmp_path / "absent.py")


@pytest.mark.parametrize("name, content, problem", [
    ("notes.txt", "x", r"notes.txt: not a .py file, an .ipynb notebook or a directory"),
    ("empty", None, r"empty: the directory holds no .py or .ipynb file"),
    ("bad.ipynb", "{not json", r"bad.ipynb: not a valid notebook, its JSON is broken at line 1, column 2"),
    ("list.ipynb", "[1, 2]", r"list.ipynb: not a notebook: its JSON has no list of \"cells\""),
    ("blank.py", "\n\n", r"blank.py: empty, nothing to grade"),
    ("binary.py", b"\x7fELF\x00\x01", r"binary.py: a binary file \(a NUL byte at byte 4\)"),
])
def test_a_broken_submission_is_read_with_its_problem(tmp_path, name, content, problem):
    """Anything that exists is a submission: what cannot be read is a problem naming the file, graded 0."""
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    source = read_submission(path)
    assert len(source.problems) == 1
    assert re.search(problem, source.problems[0]), source.problems
    assert extract(path).definitions == [] and extract(path).notes == source.problems


def test_a_syntax_error_names_its_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\n\ndef relu(x):\n    return x.clamp(min=0\n")
    assert extract(path).notes == [f"{path}:1: skipped, syntax error at line 4: '(' was never closed"]


def test_pretrained_resnet34_never_downloads(write, monkeypatch):
    import torch
    import torchvision

    from under_test.course import install_offline_torchvision

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torchvision.models, "resnet34", torchvision.models.resnet34)
    monkeypatch.setattr(torchvision.models.resnet, "resnet34", torchvision.models.resnet.resnet34)
    install_offline_torchvision()
    model = torchvision.models.resnet34(weights=torchvision.models.ResNet34_Weights.IMAGENET1K_V1)
    again = torchvision.models.resnet34(pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == 21_797_672
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_a_failing_import_binds_nothing_and_earlier_definitions_stand(tmp_path):
    folder = tmp_path / "answers"
    folder.mkdir()
    (folder / "part1.py").write_text("class Linear:\n    mine = True\n")
    (folder / "part2.py").write_text("from part2_cnns.solutions import Linear, Conv2d\n")
    program, namespace, report = run(folder)
    assert namespace["Linear"].mine
    assert "Linear" not in report.failed  # the learner's own Linear is graded
    assert "Conv2d" in report.failed and "No module named" in report.failed["Conv2d"]
    assert any("import skipped" in n and "Linear keeps the submission's earlier definition" in n for n in report.notes)


def test_future_annotations_of_the_submission_apply_to_its_definitions(write):
    path = write("answers.py", """
        from __future__ import annotations
        def hint(x: Tensor) -> int:
            return 1
    """)
    _, namespace, report = run(path)
    assert not report.failed
    assert namespace["hint"].__annotations__["x"] == "Tensor"


def test_typeguard_checked_definitions_load_in_a_registered_module(write):
    import sys

    import typeguard

    from under_test.course import MODULE_NAME, submission_module

    path = write("answers.py", """
        from __future__ import annotations
        %pip install typeguard
        from typeguard import typechecked
        @typechecked
        def double(x: int) -> int:
            return 2 * x
        class Scale(nn.Module):
            @typechecked
            def forward(self, x: Tensor) -> Tensor:
                return 3 * x
    """)
    module = submission_module()
    try:
        report = execute(extract(path), module.__dict__)
        assert not report.failed, report.failed
        assert module.double(2) == 4 and module.Scale()(torch.ones(1)).item() == 3
        with pytest.raises(typeguard.TypeCheckError):
            module.double("not an int")  # typeguard really instrumented the learner's function
    finally:
        sys.modules.pop(MODULE_NAME, None)


def test_a_directory_imports_its_own_packages_without_running_them(tmp_path):
    import sys

    from under_test import packages

    root = tmp_path / "submission"
    (root / "mlpkit").mkdir(parents=True)
    (root / "resnetkit").mkdir()
    (root / "mlpkit" / "__init__.py").write_text("")
    (root / "mlpkit" / "layers.py").write_text(
        "import torch as t\nprint('side effect')\nraise SystemExit('top-level code must not run')\n"
        "class Linear:\n    kind = 'mine'\n")
    (root / "resnetkit" / "blocks.py").write_text("from .base import Base\nclass Block(Base):\n    pass\n")
    (root / "resnetkit" / "base.py").write_text("class Base:\n    kind = 'base'\n")
    (root / "main.py").write_text("from mlpkit.layers import Linear\nfrom resnetkit.blocks import Block\n")
    program = extract(root)
    namespace = base_namespace()
    finder = packages.install(root, namespace)
    try:
        report = execute(program, namespace)
        assert not report.failed, report.failed
        assert namespace["Linear"].kind == "mine" and namespace["Block"].kind == "base"
        assert sys.modules["mlpkit.layers"].Linear.kind == "mine"  # loaded by its definitions, not run
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in ("mlpkit", "resnetkit")]:
            del sys.modules[name]
