"""A failure's reproduction snippet: plain torch code that, pasted after the learner's definitions, shows it."""

from __future__ import annotations

import re
import subprocess
import sys

import torch

from conformance import repro
from corpus import ROOT, grade, load_bugs
from under_test.wire import Handle, Returned


def test_the_snippet_names_objects_and_writes_inputs_out():
    model, same = Handle(1, "Conv2d"), Handle(1, "Conv2d")
    calls = [["construct", ("Conv2d", (1, 2, 3), {"padding": 1}), {"seed": 0}, model, None],
             ["method", (same, "train", (False,), {}), {}, same, None],
             ["call", (model, (torch.zeros(1, 1, 2, 2),), {}), {"no_grad": True}, None, None],
             ["state", (model,), {}, None, None],
             ["call", ("conv2d", (Returned("torch.Tensor", torch.ones(2, 300), False),), {"stride": 2}), {}, None,
              "RuntimeError: shapes"],
             ["call", (model, (), {}), {}, None, None]]
    code = repro.snippet(calls)
    assert "torch.manual_seed(0)\nmodel = Conv2d(1, 2, 3, padding=1)\nmodel.train(False)\n" in code
    assert "with torch.no_grad():\n    out = model(torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]], dtype=torch.float32))" in code
    assert "state_dict" not in code  # reading a state changes nothing
    assert re.search(r"x = torch.randn\(\(2, 300\)\).to\(torch.float32\)  # the check's own values: mean 1", code)
    assert code.rstrip().endswith("out2 = conv2d(x, stride=2)\n# ^ raised RuntimeError: shapes")  # stops there
    compile(code, "snippet", "exec")


LOAD_AND_RUN = """
import sys
from under_test.course import base_namespace, install_offline_torchvision
from under_test.loader import execute, extract

install_offline_torchvision()
namespace = base_namespace()
execute(extract(sys.argv[1]), namespace)
exec(open(sys.argv[2]).read(), namespace)
print(tuple(namespace["out"].shape))
"""


def test_a_failure_carries_a_snippet_that_shows_it_in_the_learners_code(tmp_path):
    """Pasted after the learner's definitions (loaded the way the harness loads them), the snippet of a failed
    check gives the output the failure reports."""
    bug = next(b for b in load_bugs() if b.id == "conv-ignores-padding")
    impl = bug.write(tmp_path)
    (tmp_path / "out").mkdir()
    results = grade(impl, ["conv"], tmp_path / "out", profile="conformance")
    assert not any("@reproduce_failure" in t["output"] for t in results["tests"])
    shown = []
    for test in results["tests"]:
        reported = re.search(r"output shape \((\d+(?:, \d+)*)\), expected", test["output"])
        if test["outcome"] != "failed" or not reported:
            continue
        assert repro.HEADING in test["output"], test["output"]
        block = test["output"].split(repro.HEADING, 1)[1].split("\n\nreproduce: ", 1)[0]
        script = tmp_path / f"{len(shown)}.py"
        script.write_text("\n".join(line.removeprefix("    ") for line in block.strip("\n").splitlines()))
        done = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(impl), str(script)], capture_output=True,
                              text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"({reported.group(1)})", (test["name"], script.read_text())
        shown.append(test["name"])
    assert len(shown) >= 2, shown  # the wrong output shapes of several conv checks
