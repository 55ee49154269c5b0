"""The bug corpus: buggy implementations a learner really writes, each expected to fail its area.

Each bug is a small patch on a correct learner submission under `examples/`, declared
in `corpus/<area>.toml`:

    [[bug]]
    id = "relu-in-place"
    area = "modules"                      # the area that must fail
    checks = ["test_relu_leaves_input"]   # checks that must fail (substrings of check names)
    expect = "modifies its input in place"  # a phrase of the diagnosis the feedback must contain
    # advisory = true                    # a defect of form only: the checks pass, an advisory says `expect`
    description = "ReLU clamps its input in place"
    base = "learner_submission.py"        # optional, the file under examples/ to patch
    [[bug.patch]]
    old = "return t.maximum(x, t.tensor(0.0))"
    new = "return x.clamp_(min=0)"

Every `old` must occur exactly once in the base file, so a patch that no longer applies
is an error, never a silent no-op. `python -m corpus run ID` grades one bug;
`python -m corpus list` lists them.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bug:
    id: str
    area: str
    description: str
    patches: tuple[tuple[str, str], ...]
    checks: tuple[str, ...] = ()
    expect: str = ""
    advisory: bool = False  # a defect of form only (what a repr shows): advised on, never failed
    base: str = "learner_submission.py"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def source(self) -> str:
        text = (EXAMPLES / self.base).read_text()
        for old, new in self.patches:
            count = text.count(old)
            if count != 1:
                raise ValueError(f"bug {self.id}: the patch text occurs {count} times in examples/{self.base} "
                                 f"(it must occur exactly once):\n{old}")
            text = text.replace(old, new)
        return text

    def touched(self) -> set[str] | None:
        """The top-level definitions the patches change, add or remove (None: they change code outside them)."""
        before, after = _split((EXAMPLES / self.base).read_text()), _split(self.source())
        if before[1] != after[1]:
            return None
        return {name for name in before[0].keys() | after[0].keys() if before[0].get(name) != after[0].get(name)}

    def reach(self) -> list[str]:
        """The areas this bug can change: its own, and every area whose checks exercise a definition that uses what
        the patch changed, directly or through other definitions (by the names the file's top-level definitions
        refer to); every area when a patch is outside the definitions or changes a name no check exercises."""
        touched = self.touched()
        exercised = area_names()
        if touched is None or not touched <= set().union(*exercised.values()):
            return list(exercised)
        refers = {}
        for node in _definitions(self.source()):
            refers.setdefault(node.name, set()).update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
        reached, grown = set(touched), True
        while grown:
            users = {name for name, refs in refers.items() if refs & reached} - reached
            reached |= users
            grown = bool(users)
        return [area for area, names in exercised.items() if area == self.area or names & reached]

    def write(self, directory: Path) -> Path:
        path = Path(directory) / f"{self.id}{Path(self.base).suffix}"
        path.write_text(self.source())
        return path


def _split(source: str) -> tuple[dict[str, list[str]], list[str]]:
    """A course script's top-level definitions (name -> the text of each, decorators included), and its other
    lines."""
    lines = source.splitlines()
    texts: dict[str, list[str]] = {}
    inside: set[int] = set()
    for node in _definitions(source):
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        texts.setdefault(node.name, []).append("\n".join(lines[first - 1:node.end_lineno]))
        inside.update(range(first - 1, node.end_lineno))
    return texts, [line for i, line in enumerate(lines) if i not in inside and line.strip()]


def _definitions(source: str) -> list[ast.FunctionDef | ast.ClassDef]:
    """The top-level functions and classes of a course script (its `!` and `%` lines blanked, as a notebook runs
    them apart)."""
    lines = ["" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines()]
    return [node for node in ast.parse("\n".join(lines)).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


@functools.lru_cache(maxsize=1)
def area_names() -> dict[str, set[str]]:
    """The submission names each area's checks exercise (their `requires` markers, read from pytest's collection of
    the checks), in the areas' order."""
    from conformance.areas import AREAS

    script = ("import json, sys, pytest\n"
              "class Names:\n"
              "    found = {}\n"
              "    def pytest_collection_modifyitems(self, items):\n"
              "        for item in items:\n"
              "            area = item.get_closest_marker('area').args[0]\n"
              "            self.found.setdefault(area, set()).update(\n"
              "                n for m in item.iter_markers('requires') for n in m.args)\n"
              "from conformance.launch import harness_argv\n"
              "pytest.main(harness_argv('reference', extra=['--collect-only', '-q']), plugins=[Names()])\n"
              "sys.stderr.flush()\n"
              "print('NAMES' + json.dumps({k: sorted(v) for k, v in Names.found.items()}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    found = json.loads(out[out.rindex("NAMES") + len("NAMES"):])
    return {area: set(found.get(area, ())) for area in AREAS}


def load_bugs() -> list[Bug]:
    from conformance.areas import AREAS

    bugs = []
    for file in sorted(HERE.glob("*.toml")):
        for raw in tomllib.loads(file.read_text()).get("bug", []):
            bug = Bug(
                id=raw["id"], area=raw["area"], description=raw["description"],
                patches=tuple((p["old"], p["new"]) for p in raw["patch"]),
                checks=tuple(raw.get("checks", ())), expect=raw.get("expect", ""),
                advisory=bool(raw.get("advisory", False)), base=raw.get("base", "learner_submission.py"),
            )
            if bug.area not in AREAS:
                raise ValueError(f"{file.name}: bug {bug.id} names unknown area {bug.area!r}")
            bugs.append(bug)
    ids = [b.id for b in bugs]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"duplicated bug ids: {duplicated}")
    return bugs


def grade(impl: Path, areas: list[str], out: Path, *extra: str, profile: str = "corpus",
          fork: bool = False) -> dict:
    """Run the conformance checks of `areas` on `impl`; returns results.json as a dict.

    With `fork=True` the harness runs in a forked copy of this (already warm) process
    instead of a new interpreter: the same checks, seconds less per run. The
    submission's code still runs only in the sandbox worker the harness starts.
    """
    from conformance.launch import harness_argv, isolated_ini, run_forked

    results = out / "results.json"
    # Collect only the areas' own check modules (collecting every module imports scikit-image,
    # scikit-learn and the rest, seconds per run).
    modules = [f"conformance.checks.test_{area}" for area in areas] or ["conformance.checks"]
    arguments = harness_argv(impl, modules=modules, areas=areas, profile=profile, results_json=results,
                             ini=isolated_ini(out), extra=["-q", *extra])  # as `grade` runs it: no conftest of ours
    log = out / "harness.log"
    if fork:
        run_forked(arguments, log, ROOT)
    else:
        with open(log, "w") as handle:
            subprocess.run([sys.executable, "-m", "pytest", *arguments], stdout=handle, stderr=subprocess.STDOUT,
                           cwd=ROOT)
    if not results.exists():
        raise RuntimeError(f"no results from pytest {' '.join(arguments)}:\n{log.read_text()[-4000:]}")
    return json.loads(results.read_text())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("list", "run"):
        print("usage: python -m corpus list | run ID [ID ...]")
        return 2
    bugs = {b.id: b for b in load_bugs()}
    if argv[0] == "list":
        for bug in bugs.values():
            print(f"{bug.area:20} {bug.id:40} {bug.description}")
        return 0
    status = 0
    for bug_id in argv[1:]:
        bug = bugs[bug_id]
        with tempfile.TemporaryDirectory() as tmp:
            data = grade(bug.write(Path(tmp)), [bug.area], Path(tmp))
        failed = [t["name"] for t in data["tests"] if t["outcome"] == "failed"]
        verdict = data["areas"][bug.area]["status"]
        print(f"{bug.id}: area {bug.area} {verdict}; failed checks: {failed}")
        for test in data["tests"]:
            if test["outcome"] == "failed":
                print("  ---", test["name"], "\n  " + test["output"].replace("\n", "\n  ")[:1500])
        outputs = [t["output"] for t in data["tests"] if t["outcome"] == "failed"]
        if bug.advisory:
            outputs = data["advisories"]
        found = bool(bug.expect) and any(bug.expect in output for output in outputs)
        print(f"  expect {bug.expect!r}: {'found' if found else 'NOT FOUND'}")
        if verdict != ("passed" if bug.advisory else "failed") or not found:
            status = 1
    return status
