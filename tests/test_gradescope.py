"""`conformance gradescope`: the autograder bundle, and its run_autograder against a fake /autograder tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from conformance import gradescope, provenance
from corpus import ROOT

GOOD_BATCHNORM = (ROOT / "reference" / "batchnorm.py").read_text()


def test_the_bundle_holds_what_gradescope_runs_and_the_pinned_harness(tmp_path):
    done = subprocess.run([sys.executable, "-m", "conformance", "gradescope", "--out", tmp_path / "autograder.zip"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(tmp_path / "autograder.zip") as bundle:
        names = bundle.namelist()
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in bundle.infolist()}
        requirements = bundle.read("requirements.txt").decode().split()
        setup = bundle.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt"} <= set(names)
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    libraries = provenance.installed()["libraries"]
    assert f"torch=={libraries['torch']}" in requirements and f"hypothesis=={libraries['hypothesis']}" in requirements
    assert "harness/conformance/cli.py" in names and "harness/fixtures/standin.py" in names
    assert "harness/pyproject.toml" in names and not any("__pycache__" in n for n in names)
    assert subprocess.run(["bash", "-n", "-c", setup]).returncode == 0  # it parses
    assert "pip install --no-deps ./harness" in setup and gradescope.CPU_INDEX in setup


def test_run_autograder_grades_the_upload_into_results_json(tmp_path):
    bundle = gradescope.build(tmp_path / "autograder.zip")
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as opened:
        opened.extractall(root / "source")
    (root / "submission").mkdir()
    (root / "submission" / "my_solution.py").write_text(GOOD_BATCHNORM)
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), CONFORMANCE_PYTHON=sys.executable,
               PYTHONPATH=str(root / "source" / "harness"))  # the bundle's own harness, not this checkout
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["areas"]["batchnorm"]["status"] == "passed" and results["score"] > 0
    assert results["provenance"]["source_sha256"] == provenance.installed()["source_sha256"]  # the same files
    assert all({"name", "score", "max_score", "status", "output"} <= set(t) for t in results["tests"])


def test_run_autograder_without_an_upload_says_what_to_upload(tmp_path):
    (tmp_path / "submission").mkdir()
    env = dict(os.environ, AUTOGRADER_ROOT=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "from conformance.gradescope import run; raise SystemExit(run())"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and "upload your solution" in results["output"]


def test_the_submission_is_the_one_file_or_else_the_folder(tmp_path):
    assert gradescope.find_submission(tmp_path) is None
    (tmp_path / "answer.ipynb").write_text("{}")
    assert gradescope.find_submission(tmp_path) == tmp_path / "answer.ipynb"
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "blocks.py").write_text("")
    assert gradescope.find_submission(tmp_path) == tmp_path
