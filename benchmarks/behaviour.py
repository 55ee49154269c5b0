"""Behaviour unchanged: every corpus entry graded by two versions of the harness, their results.json compared.

    python -m benchmarks.behaviour --before REV [--after REV] --out DIR [--jobs 2] [--only ID,ID]

A refactor must not change a verdict. This grades every entry of the corpus (each bug of
`corpus/*.toml` written out as a submission, every correct submission of `corpus/correct/`, every
hostile one of `corpus/hostile/`) with `conformance grade` of the version `--before` and of `--after`
(git revisions; HEAD when left out), the same files for both, and compares each submission's
results.json with what may differ taken out:

- the timings (`timing`, `execution_time`, a check's `seconds`), and the advisory that reports one (a
  ResNet34 too slow for the large photos within the probe limit: whether it appears depends on the
  machine's speed at that moment);
- the harness's own hash (`provenance.source_sha256`);
- the folder the submissions were graded from, written absolute by versions before the learner's own
  names (issue 19, item 7), relative to it since, and the worker's temporary folder (a random name);

Each version runs from its own copy (`git archive`, so later edits to this checkout cannot leak into
a grading), imported ahead of the installed package (PYTHONPATH), with this environment's libraries.
A version's grading is kept in DIR/<commit> and reused by a later run with the same DIR: comparing
a new commit with the same `--before` grades only the new one. The exit status is 0 when every results.json is the
same, 1 otherwise; the differences are listed, and written to DIR/differences.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from corpus import ROOT, load_bugs

TIMINGS = ("timing", "execution_time", "seconds")
HASHES = (("provenance", "source_sha256"),)
TIMED_ADVICE = re.compile(r"needs [\d.]+ s for one \d+x\d+ photo")  # test_weight_copy's measured forward
WORKER_FOLDER = re.compile(r"/tmp/conformance-worker-[A-Za-z0-9_]+")


def entries(folder: Path, only: set[str] | None = None) -> list[Path]:
    """Write every corpus entry into `folder` (bugs as files, correct and hostile submissions copied) and return
    their paths; with `only`, just the entries of those names (a bug's id, a file's name without extension)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for bug in load_bugs():
        if only is None or bug.id in only:
            paths.append(bug.write(folder))
    for kind, key in (("correct", "submission"), ("hostile", "case")):
        manifest = tomllib.loads((ROOT / "corpus" / kind / "MANIFEST.toml").read_text())
        for entry in manifest[key]:
            source = ROOT / "corpus" / kind / entry["path"]
            if only is not None and Path(entry["path"]).stem not in only:
                continue
            target = folder / source.name
            if target.exists():
                raise ValueError(f"two corpus entries are named {source.name}")
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
            paths.append(target)
    unknown = sorted((only or set()) - {Path(p).stem for p in paths})
    if unknown:
        raise SystemExit(f"no corpus entry is named {', '.join(unknown)} (`python -m corpus list` lists the bugs)")
    return paths


def commit(revision: str) -> str:
    return subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def checkout(revision: str, folder: Path) -> Path:
    """The harness of `revision`, written into `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def grade(harness: Path, paths: list[Path], out: Path, jobs: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(harness))
    found = subprocess.run([sys.executable, "-c", "import conformance; print(conformance.__file__)"], env=env,
                           cwd=harness, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(harness.resolve()):
        raise RuntimeError(f"the harness under {harness} is shadowed by {found}")
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "conformance", "grade", *map(str, paths), "--out", str(out), "--jobs", str(jobs)]
    done = subprocess.run(command, env=env, cwd=harness, capture_output=True, text=True)
    (out / "grade.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"grade under {harness} exited {done.returncode}; see {out / 'grade.log'}")


def normalised(data, folder: str):
    """results.json with what may differ between two versions taken out (see the module's docstring)."""
    if isinstance(data, dict):
        kept = {key: normalised(value, folder) for key, value in data.items() if key not in TIMINGS}
        for path in HASHES:
            inner = kept
            for key in path[:-1]:
                inner = inner.get(key, {}) if isinstance(inner, dict) else {}
            if isinstance(inner, dict):
                inner.pop(path[-1], None)
        return kept
    if isinstance(data, list):
        return [normalised(value, folder) for value in data
                if not (isinstance(value, str) and TIMED_ADVICE.search(value))]
    if isinstance(data, str):
        return WORKER_FOLDER.sub("<worker folder>", data.replace(folder + os.sep, "").replace(folder, "."))
    return data


def differences(before, after, where: str = "") -> list[str]:
    """Where two normalised results differ, one line each (a JSON path and both values)."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in list(before) + [k for k in after if k not in before]:
            if key not in after or key not in before:
                found.append(f"{where}.{key}: {'only before' if key in before else 'only after'}")
            else:
                found += differences(before[key], after[key], f"{where}.{key}")
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after) or (before and isinstance(before[0], dict) and "name" in before[0]):
            named = all(isinstance(x, dict) and "name" in x for x in before + after)
            if named:  # the checks, matched by name
                return differences({x["name"]: x for x in before}, {x["name"]: x for x in after}, where)
            if len(before) != len(after):
                return [f"{where}: {len(before)} items before, {len(after)} after"]
        found = []
        for index, (old, new) in enumerate(zip(before, after)):
            found += differences(old, new, f"{where}[{index}]")
        return found
    if before != after:
        return [f"{where}: {json.dumps(before)[:300]} -> {json.dumps(after)[:300]}"]
    return []


def compare(folder: Path, before: Path, after: Path) -> dict[str, list[str]]:
    names = sorted({p.name for p in before.iterdir() if p.is_dir()} | {p.name for p in after.iterdir() if p.is_dir()})
    found = {}
    for name in names:
        files = [side / name / "results.json" for side in (before, after)]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            found[name] = [f"no results.json: {', '.join(missing)}"]
            continue
        old, new = (normalised(json.loads(f.read_text()), str(folder)) for f in files)
        lines = differences(old, new)
        if lines:
            found[name] = lines
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.behaviour", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the git revision graded first")
    parser.add_argument("--after", default="HEAD", help="the git revision graded second (default HEAD)")
    parser.add_argument("--out", required=True, help="a new folder for the submissions, both gradings and the report")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", help="only these entries (comma-separated bug ids or file names without extension)")
    options = parser.parse_args(argv)
    out = Path(options.out).resolve()
    folder = out / "submissions"
    wanted = set(options.only.split(",")) if options.only else None
    written = out / "entries.json"
    if written.exists():
        if json.loads(written.read_text()) != sorted(wanted or ["*"]):
            raise SystemExit(f"{out} holds gradings of other entries: give another --out")
        paths = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    else:
        paths = entries(folder, wanted)
        written.write_text(json.dumps(sorted(wanted or ["*"])))
    print(f"{len(paths)} corpus entries in {folder}", flush=True)
    sides = {}
    for side in ("before", "after"):
        revision = getattr(options, side)
        sha = commit(revision)
        sides[side] = out / sha
        if (sides[side] / "done").exists():
            print(f"{side}: {revision} ({sha[:10]}) graded already, in {sides[side]}", flush=True)
            continue
        print(f"{side}: grading with {revision} ({sha[:10]}) ...", flush=True)
        shutil.rmtree(sides[side], ignore_errors=True)
        grade(checkout(sha, out / "harness" / sha), paths, sides[side], options.jobs)
        (sides[side] / "done").write_text(sha + "\n")
    found = compare(folder, sides["before"], sides["after"])
    graded = len([p for p in sides["after"].iterdir() if p.is_dir()])
    (out / "differences.json").write_text(json.dumps(found, indent=1))
    print(f"{graded} submissions graded by both; {len(found)} with a different results.json")
    for name, lines in found.items():
        print(f"  {name}:")
        for line in lines[:20]:
            print(f"    {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
