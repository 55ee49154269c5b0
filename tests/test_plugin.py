"""The plugin's own judgements: harness errors are never the learner's; composites are told the root cause."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conformance.launch import harness_argv
from corpus import ROOT, Bug, grade, load_bugs

pytestmark = pytest.mark.slow  # grades whole submissions: not in the fast lane (`-m 'not slow'`)

BUGS = {bug.id: bug for bug in load_bugs()}


def test_an_exception_in_the_harness_is_a_harness_error_not_a_failure(tmp_path):
    checks = tmp_path / "test_fake_area.py"
    checks.write_text(textwrap.dedent("""
        from conformance.areas import area, requires
        from conformance.compare import fail

        pytestmark = [area("pooling"), requires("AveragePool")]

        def test_harness_bug(sandbox):
            return undefined_in_the_harness  # noqa: F821 - the point of this test

        def test_learner_bug(sandbox):
            fail("the values differ")
    """))
    results = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "pytest",
                          *harness_argv(ROOT / "reference", modules=[str(checks)], results_json=results, extra=["-q"])],
                         capture_output=True, text=True, cwd=tmp_path)
    data = json.loads(results.read_text())
    outcomes = {t["name"]: t for t in data["tests"] if t["tags"][0] == "pooling"}
    harness, learner = outcomes["pooling: test_harness_bug"], outcomes["pooling: test_learner_bug"]
    assert harness["outcome"] == "error" and harness["max_score"] == 0 and "NameError" in harness["output"]
    assert learner["outcome"] == "failed" and learner["max_score"] == 6
    assert data["harness_errors"] == ["pooling: test_harness_bug"]
    assert "HARNESS ERROR in" in run.stderr + run.stdout


CASCADES = [  # (bug in a building block, composite check that uses the block, the block named)
    ("bn-unbiased-normalisation", "residual", "test_residual_forward_train_matches_torchvision", "BatchNorm2d"),
    ("linear-extra-repr-typo", "resnet34", "test_resnet34_repr", "Linear"),
]


@pytest.mark.parametrize("bug_id, area, check, block", CASCADES, ids=[c[0] for c in CASCADES])
def test_a_composite_is_told_which_block_it_inherits_a_bug_from(bug_id, area, check, block, tmp_path):
    bug = BUGS[bug_id]
    data = grade(bug.write(tmp_path), [area], tmp_path, "-k", check, fork=True)
    (test,) = [t for t in data["tests"] if t["name"].split(": ", 1)[-1] == check]
    assert test["outcome"] == "passed", test["output"]
    advice = [a for a in data["advisories"] if "inherits" in a]
    assert advice and block in advice[0] and f"see the {bug.area} area" in advice[0], data["advisories"]
    (tmp_path / "own").mkdir()
    own = grade(bug.write(tmp_path / "own"), [bug.area], tmp_path / "own", "-k", " or ".join(bug.checks), fork=True)
    assert own["areas"][bug.area]["status"] == "failed"  # charged to the block's own area


def test_slow_but_correct_resnet_passes_the_snapshot_comparison_at_the_size_it_affords(tmp_path):
    """A correct ResNet34 far too slow for 224 px photos within the probe limit: compared at 64 px, advised."""
    slow = Bug("slow-but-correct", "weight_copy", "a correct ResNet34 whose forward takes 0.1 ms per input pixel",
               (('''        x = self.in_layers(x)
''', '''        import time
        time.sleep(1e-4 * x.shape[0] * x.shape[-2] * x.shape[-1])  # as slow as a loop-heavy own conv2d
        x = self.in_layers(x)
'''),))
    data = grade(slow.write(tmp_path), ["weight_copy"], tmp_path, "-k", "test_weight_copy_pretrained_logits_match_snapshot",
                 profile="conformance", fork=True)
    (test,) = [t for t in data["tests"] if t["name"].endswith("test_weight_copy_pretrained_logits_match_snapshot")]
    assert test["outcome"] == "passed", test["output"]
    assert any("compared at 64x64 only" in a for a in data["advisories"]), data["advisories"]


def test_a_hang_is_paid_once_and_charged_to_the_area_of_the_name_that_hangs(tmp_path):
    """ResNet34's forward never returns: the first resnet34 check that calls it waits its probe limit; every later
    call of it, in resnet34 and in the areas built on it, fails at once with that reason, and those areas pass
    with the reference's ResNet34 in its place (issue 17, item 3)."""
    hangs = Bug("resnet-forward-hangs", "resnet34", "ResNet34's forward never returns",
                (('''        x = self.in_layers(x)
        x = self.residual_layers(x)
''', '''        while True:
            pass
        x = self.in_layers(x)
        x = self.residual_layers(x)
'''),))
    data = grade(hangs.write(tmp_path), ["resnet34", "weight_copy", "feature_extraction"], tmp_path,
                 "--probe-timeout", "3", fork=True)
    statuses = {area: data["areas"][area]["status"] for area in ("resnet34", "weight_copy", "feature_extraction")}
    assert statuses == {"resnet34": "failed", "weight_copy": "passed", "feature_extraction": "passed"}, statuses
    failed = [t["output"] for t in data["tests"] if t["outcome"] == "failed"]
    waited = [o for o in failed if "did not answer within 3 s while calling <ResNet34 object>" in o
              and "earlier," not in o]
    assert len(waited) == 1, failed
    assert len(failed) > 1 and all("earlier, ResNet34's forward did not answer within 3 s" in o
                                   for o in failed if o not in waited), failed
    assert any("inherits ResNet34's bug (see the resnet34 area)" in a for a in data["advisories"]), data["advisories"]


# A ResidualBlock with one bug (its output shifted by 0.5), added to a correct submission whatever its style: the
# last definition of a name wins, and the subclass keeps the submission's own structure and names.
SHIFTED_BLOCK = '''

_ResidualBlockAsWritten = ResidualBlock


class ResidualBlock(_ResidualBlockAsWritten):
    def forward(self, x):
        return super().forward(x) + 0.5
'''
# A ResNet34 with one bug (its logits shifted by 0.5), likewise.
SHIFTED_RESNET = '''

_ResNet34AsWritten = ResNet34


class ResNet34(_ResNet34AsWritten):
    def forward(self, x):
        return super().forward(x) + 0.5
'''
STYLES = ["resnet_flat_sequential.py", "resnet_modulelist.py", "resnet_renamed_attributes.py",
          "resnet_without_blockgroup.py", "copy_weights_method.py"]


# A ResidualBlock bug in every style; a ResNet34 bug where ResNet34's own names matter to the code built on it.
CASES = [(style, SHIFTED_BLOCK, "residual", "ResidualBlock") for style in STYLES] + \
        [(style, SHIFTED_RESNET, "resnet34", "ResNet34") for style in ("resnet_renamed_attributes.py",
                                                                      "copy_weights_method.py")]


@pytest.mark.parametrize("style, bug, own, part", CASES, ids=[f"{c[3]}-in-{c[0]}" for c in CASES])
def test_the_swap_follows_the_submissions_names_not_its_module_tree(style, bug, own, part, tmp_path):
    """Whatever holds the blocks (a flat Sequential, a ModuleList, attributes of any name, a ResNet34 without
    BlockGroup) and wherever copy_weights is written (a method), a bug of one part fails its own area only."""
    source = (ROOT / "corpus" / "correct" / style).read_text() + bug
    (tmp_path / style).write_text(source)
    areas = ["residual", "resnet34", "weight_copy", "feature_extraction"]
    data = grade(tmp_path / style, areas[areas.index(own):], tmp_path, fork=True)
    statuses = {area: data["areas"][area]["status"] for area in areas[areas.index(own):]}
    assert statuses == {area: "failed" if area == own else "passed" for area in statuses}, \
        [t["output"][:800] for t in data["tests"] if t["outcome"] == "failed"]
    assert any(f"inherits {part}'s bug (see the {own} area)" in a or f"comes from {part}'s bug" in a
               for a in data["advisories"]), data["advisories"]
