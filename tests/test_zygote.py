"""The worker template (`under_test.zygote`): clones are the harness's own children, start at once, and a zygote
in trouble costs time, never a verdict. (That a clone holds nothing of the harness is
`tests/test_isolation.py`'s: its worker is a clone.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from under_test import processes, zygote
from under_test.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]

SUBMISSION = '''
import os
import torch as t
def double(x):
    return x * 2
def parent(x):
    return os.getppid()
def die(x):
    os._exit(5)
'''


@pytest.fixture()
def path(tmp_path):
    file = tmp_path / "submission.py"
    file.write_text(SUBMISSION)
    return file


def test_a_clone_is_the_harness_child_and_restarts_in_a_blink(path):
    with Sandbox(path, timeout=20) as box:
        assert isinstance(box.process, zygote.Cloned)
        assert box.call("parent", torch.zeros(1)) == os.getpid()  # CLONE_PARENT: not the zygote's child
        assert os.getpgid(box.process.pid) == box.process.pid  # its own process group, killed as a whole
        with pytest.raises(BaseException, match="exited with status 5"):
            box.call("die", torch.zeros(1))
        box.begin_check()
        assert torch.equal(box.call("double", torch.ones(2)).tensor, torch.full((2,), 2.0))  # restarted
        assert isinstance(box.process, zygote.Cloned)  # a clone again, not a new interpreter importing torch
        assert box.restarts == 1


def test_a_dead_zygote_means_workers_from_scratch_with_the_same_answers(path):
    template = processes.own_zygote()
    assert template is not None
    template.process.kill()
    template.process.wait()
    try:
        with Sandbox(path, timeout=60) as box:
            assert not isinstance(box.process, zygote.Cloned)  # started from scratch
            assert torch.equal(box.call("double", torch.ones(2)).tensor, torch.full((2,), 2.0))
    finally:
        processes.stop_zygote()  # the next sandbox starts a fresh zygote


def test_without_a_zygote_when_asked(path, monkeypatch):
    monkeypatch.setenv(zygote.DISABLE_ENV, "0")
    with Sandbox(path, timeout=60) as box:
        assert not isinstance(box.process, zygote.Cloned)
        assert torch.equal(box.call("double", torch.ones(2)).tensor, torch.full((2,), 2.0))


def test_the_zygote_reads_hypothesis_constants_without_taking_each_clones_storage(tmp_path):
    """`_local_constants` neither warns (Hypothesis's advice to pytest plugins) nor writes in the zygote's folder, and a
    clone still finds its own storage folder from HYPOTHESIS_STORAGE_DIRECTORY."""
    code = "\n".join([
        "import os, warnings",
        "warnings.simplefilter('error')",
        "import _hypothesis_pytestplugin, hypothesis",
        "from under_test import zygote",
        "zygote._local_constants()",
        "os.environ['HYPOTHESIS_STORAGE_DIRECTORY'] = os.environ['CLONE_STORAGE']",
        "from hypothesis.configuration import storage_directory",
        "print(storage_directory('constants', intent_to_write=False).path)",
    ])
    folder, storage = tmp_path / "zygote", tmp_path / "clone"
    folder.mkdir()
    env = dict(os.environ, CLONE_STORAGE=str(storage), PYTHONPATH=str(ROOT))
    env.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(storage / "constants")
    assert not (folder / ".hypothesis").exists()


def test_a_process_whose_parent_ended_before_it_asked_to_die_with_it_ends_at_once():
    """Ctrl-C while a harness or worker is being started: its parent may end before the process asks the kernel to
    kill it with its parent. Told which parent it must have, it then ends at once instead of running on."""
    import subprocess
    import sys

    script = ("import os, sys\nfrom under_test.worker import _die_with_parent\n"
              "_die_with_parent(int(sys.argv[1]) if sys.argv[1] != 'own' else os.getppid())\nprint('running on')\n")
    orphan = subprocess.run([sys.executable, "-c", script, "1"], capture_output=True, text=True)
    assert orphan.returncode == 1 and "running on" not in orphan.stdout
    child = subprocess.run([sys.executable, "-c", script, "own"], capture_output=True, text=True)
    assert child.returncode == 0 and "running on" in child.stdout
