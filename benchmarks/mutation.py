"""Mutation testing: does the harness kill small automatic edits of a correct submission?

    python -m benchmarks.mutation [--base corpus/correct/course_template.py] [--jobs 2] [--out DIR]
                                  [--only OPERATOR ...] [--ids PATTERN ...] [--limit N] [--list]
                                  [--against thorough]

Every mutant is one small edit of the base (a correct submission written as the course's template writes it), at a
site inside a graded definition: its last definition, the one a learner's file ends up with. The operators are
the classic ones:

- `arithmetic`: + and -, * and /, // and / swapped;
- `comparison`: < and <=, > and >=, == and != swapped;
- `constant`: an integer shifted by one (n -> n + 1), a float doubled;
- `boolean`: True and False, `and` and `or` swapped;
- `sign`: a unary minus dropped;
- `statement`: a statement replaced by `pass`;
- `arguments`: the first two positional arguments of a call swapped.

The edit is made on the source text at the node's own position, so the rest of the file (and the line numbers a
failure points at) is the base's. Mutants are graded with `conformance grade --each --jobs N` at the default
profile; a mutant is killed when any check fails (or the harness could not grade it), and survives when every area
passes. Survivors are either killed by a new or sharper check, or recorded as equivalent in
`benchmarks/equivalent_mutants.toml` with a one-line reason. The report (`report.md` and `mutants.json` in --out)
gives killed, survived, equivalent and timed out, by area and by operator.

The default profile's example budgets (`conformance.budgets`) are proven against the mutants too: every mutant that
survives the default profile, equivalent ones included, is graded again at `--against` (default `thorough`), and the
report shows the two verdicts side by side. A mutant the thorough profile kills and the default one does not is a
budget to raise (or a check to sharpen); an "equivalent" mutant it kills was not equivalent.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from corpus import ROOT

HERE = Path(__file__).resolve().parent
BASE = ROOT / "corpus" / "correct" / "course_template.py"
EQUIVALENT = HERE / "equivalent_mutants.toml"

OPERATORS = ("arithmetic", "comparison", "constant", "boolean", "sign", "statement", "arguments")
_ARITHMETIC = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.FloorDiv: "/"}
_COMPARISON = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "=="}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Lt: "<", ast.LtE: "<=",
           ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


@dataclass(frozen=True)
class Mutant:
    id: str  # "<definition>:<line>:<operator>:<n>", stable for one base
    definition: str  # the graded name whose definition is edited
    operator: str
    line: int
    before: str  # the edited source segment, and what replaces it
    after: str

    def apply(self, source: str, start: int, end: int) -> str:
        return source[:start] + self.after + source[end:]


def graded_areas() -> dict[str, str]:
    """Every name a check requires (its `requires` marks), with its own area: that of the checks whose subject (first
    required name) it is, else of the first check module requiring it; and `train`, which the own-training checks
    call (the last `train` of a course file is feature extraction's)."""
    import importlib
    import pkgutil

    import conformance.checks

    subject_of, user_of = {"train": "feature_extraction"}, {}
    for info in pkgutil.iter_modules(conformance.checks.__path__):
        module = importlib.import_module(f"conformance.checks.{info.name}")
        area = info.name.removeprefix("test_")
        marks = list(getattr(module, "pytestmark", []))
        for value in vars(module).values():
            marks += getattr(value, "pytestmark", [])
        for mark in (m for m in marks if m.name == "requires" and m.args):
            subject_of.setdefault(mark.args[0], area)
            for name in mark.args:
                user_of.setdefault(name, area)
    return {**user_of, **subject_of}


def _offsets(source: str) -> list[int]:
    starts, total = [0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def _span(node: ast.AST, starts: list[int]) -> tuple[int, int]:
    return starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset


def _between(source: str, left: ast.AST, right: ast.AST, starts: list[int]) -> tuple[int, int]:
    """The text between two operands: where a binary or comparison operator is written."""
    return _span(left, starts)[1], _span(right, starts)[0]


def _sites(node: ast.AST, source: str, starts: list[int]):
    """(operator, start, end, replacement) for each mutation of `node` itself."""
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        start, end = _between(source, node.left, node.right, starts)
        text = source[start:end]
        symbol = _SYMBOL[type(node.op)]
        at = text.find(symbol)
        if at >= 0:
            yield "arithmetic", start + at, start + at + len(symbol), _ARITHMETIC[type(node.op)]
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARISON:
        start, end = _between(source, node.left, node.comparators[0], starts)
        symbol = _SYMBOL[type(node.ops[0])]
        at = source[start:end].find(symbol)
        if at >= 0:
            yield "comparison", start + at, start + at + len(symbol), _COMPARISON[type(node.ops[0])]
    elif isinstance(node, ast.Constant) and not isinstance(node.value, str):
        start, end = _span(node, starts)
        if isinstance(node.value, bool):
            yield "boolean", start, end, str(not node.value)
        elif isinstance(node.value, int):
            yield "constant", start, end, str(node.value + 1)
        elif isinstance(node.value, float) and node.value != 0.0:
            yield "constant", start, end, repr(node.value * 2)
    elif isinstance(node, ast.BoolOp):
        start, end = _between(source, node.values[0], node.values[1], starts)
        word = "and" if isinstance(node.op, ast.And) else "or"
        at = source[start:end].find(word)
        if at >= 0:
            yield "boolean", start + at, start + at + len(word), "or" if word == "and" else "and"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        start, end = _span(node, starts)
        operand = _span(node.operand, starts)
        yield "sign", start, end, source[operand[0]:operand[1]]
    elif isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
        (a0, a1), (b0, b1) = _span(node.args[0], starts), _span(node.args[1], starts)
        first, second = source[a0:a1], source[b0:b1]
        if first != second:
            yield "arguments", a0, b1, second + source[a1:b0] + first
    # Not a docstring, nor a bare annotation (`running_mean: Float[Tensor, "c"]` in a class body declares nothing).
    if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign)) and not (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) and not (
            isinstance(node, ast.AnnAssign) and node.value is None):
        start, end = _span(node, starts)
        yield "statement", start, end, "pass"


def python_only(source: str) -> str:
    """IPython lines (`%pip install ...`, `!ls`) blanked out, offsets kept: the harness's loader skips them too."""
    return re.sub(r"(?m)^[ \t]*[%!].*$", lambda line: " " * len(line.group(0)), source)


def generate(source: str, names: set[str]) -> list[tuple[Mutant, int, int]]:
    """Every mutant of `source` inside the last definition of each graded name (its parameters' defaults included;
    its type hints and decorators not), with the span of source it replaces."""
    tree = ast.parse(python_only(source))
    starts = _offsets(source)
    last: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            last[node.name] = node
    mutants = []
    for name, definition in last.items():
        skipped = {id(n) for hint in _hints(definition) for n in ast.walk(hint)}
        count: Counter = Counter()
        for node in ast.walk(definition):
            if id(node) in skipped:
                continue
            for operator, start, end, after in _sites(node, source, starts):
                count[(node.lineno, operator)] += 1
                ident = f"{name}:{node.lineno}:{operator}:{count[(node.lineno, operator)]}"
                mutants.append((Mutant(ident, name, operator, node.lineno, source[start:end], after), start, end))
    return sorted(mutants, key=lambda m: m[1])


def _hints(definition: ast.AST):
    """Type hints and decorators: not behaviour."""
    for node in ast.walk(definition):
        if isinstance(node, ast.arg) and node.annotation is not None:
            yield node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from node.decorator_list
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.ClassDef):
            yield from node.decorator_list
            yield from node.bases
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def load_equivalent() -> dict[str, str]:
    if not EQUIVALENT.exists():
        return {}
    return {entry["id"]: entry["reason"] for entry in tomllib.loads(EQUIVALENT.read_text()).get("mutant", [])}


def write_mutants(base: Path, folder: Path, only: set[str] | None, limit: int | None,
                  ids: list[str] | None = None) -> list[Mutant]:
    source = base.read_text()
    chosen = [(m, s, e) for m, s, e in generate(source, set(graded_areas())) if not only or m.operator in only]
    if ids:
        chosen = [(m, s, e) for m, s, e in chosen if any(fnmatch.fnmatchcase(m.id, pattern) for pattern in ids)]
    if limit:
        step = max(1, len(chosen) // limit)
        chosen = chosen[::step][:limit]
    folder.mkdir(parents=True, exist_ok=True)
    for mutant, start, end in chosen:
        mutated = mutant.apply(source, start, end)
        try:
            compile(python_only(mutated), mutant.id, "exec")
        except SyntaxError:
            continue
        (folder / f"{_file_name(mutant.id)}.py").write_text(mutated)
    return [m for m, _, _ in chosen if (folder / f"{_file_name(m.id)}.py").exists()]


def _file_name(ident: str) -> str:
    return ident.replace(":", "__")


def verdict(results: dict) -> str:
    tests = results.get("tests", [])
    if any("did not answer within" in (t.get("output") or "") for t in tests if t["outcome"] == "failed"):
        return "timed out"
    if any(t["outcome"] in ("failed", "error") for t in tests) or results.get("harness_errors"):
        return "killed"
    return "survived"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="where mutants and results go (default: a temp dir)")
    parser.add_argument("--only", nargs="*", choices=OPERATORS, help="these operators only")
    parser.add_argument("--ids", nargs="*", metavar="PATTERN",
                        help="these mutants only, by id or shell pattern (e.g. 'train:*' or 'Linear:68:statement:1')")
    parser.add_argument("--limit", type=int, default=None, help="an evenly spread sample of N mutants")
    parser.add_argument("--profile", default="conformance")
    parser.add_argument("--against", default="thorough",
                        help="the profile the survivors are graded at again, side by side ('' for none)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="grade nothing: write the report again from what --out already holds (e.g. after "
                             "reviewing equivalent_mutants.toml), keeping the time the grading took")
    options = parser.parse_args(argv)
    if options.report_only and options.out is None:
        parser.error("--report-only reads --out DIR")
    out = options.out or Path(tempfile.mkdtemp(prefix="mutation-"))
    folder = out / "mutants"
    if options.report_only:
        return _report_again(options, out)
    shutil.rmtree(folder, ignore_errors=True)
    mutants = write_mutants(options.base, folder, set(options.only or ()), options.limit, options.ids)
    if options.list:
        for m in mutants:
            print(f"{m.id}\t{m.before!r} -> {m.after!r}")
        print(f"{len(mutants)} mutants", file=sys.stderr)
        return 0
    print(f"{len(mutants)} mutants of {options.base.name} in {folder}; grading with --jobs {options.jobs}",
          file=sys.stderr)
    started = time.perf_counter()
    outcomes, code = grade_all(folder, out / "graded", mutants, options.jobs, options.profile)
    rows = _rows(mutants, outcomes)
    alive = [m for m, row in zip(mutants, rows) if row["outcome"] in ("survived", "equivalent")]
    if options.against and alive:
        print(f"{len(alive)} survivors (equivalent ones included) graded again at --profile {options.against}",
              file=sys.stderr)
        again = out / f"mutants-{options.against}"
        shutil.rmtree(again, ignore_errors=True)
        again.mkdir(parents=True)
        for m in alive:
            shutil.copy(folder / f"{_file_name(m.id)}.py", again)
        second, _ = grade_all(again, out / f"graded-{options.against}", alive, options.jobs, options.against)
        for row in rows:
            if row["id"] in second:
                row[options.against], row[f"failed at {options.against}"] = second[row["id"]]
    seconds = time.perf_counter() - started
    (out / "seconds.txt").write_text(f"{seconds:.0f}\n")
    (out / "mutants.json").write_text(json.dumps(rows, indent=1))
    (out / "report.md").write_text(report(rows, options.base, seconds, options.profile, options.against))
    print((out / "report.md").read_text())
    return 0 if code in (0, 1) else code


def _rows(mutants: list[Mutant], outcomes: dict) -> list[dict]:
    equivalent = load_equivalent()
    areas = graded_areas()
    rows = []
    for m in mutants:
        outcome, failed = outcomes[m.id]
        if outcome == "survived" and m.id in equivalent:
            outcome = "equivalent"
        rows.append({**asdict(m), "area": areas[m.definition], "outcome": outcome,
                     "reason": equivalent.get(m.id, ""), "failed": failed})
    return rows


def _report_again(options, out: Path) -> int:
    """The report of an earlier run in `out`, from its graded results, with today's equivalent list and areas."""
    names = {p.name for p in (out / "graded").iterdir() if (p / "results.json").exists()}
    mutants = [m for m, _, _ in generate(options.base.read_text(), set(graded_areas())) if _file_name(m.id) in names]
    rows = _rows(mutants, read_outcomes(out / "graded", mutants))
    again = out / f"graded-{options.against}"
    if options.against and again.exists():
        alive = [m for m in mutants if (again / _file_name(m.id) / "results.json").exists()]
        for m_id, value in read_outcomes(again, alive).items():
            row = next(r for r in rows if r["id"] == m_id)
            row[options.against], row[f"failed at {options.against}"] = value
    recorded = out / "seconds.txt"
    seconds = float(recorded.read_text()) if recorded.exists() else float("nan")
    (out / "mutants.json").write_text(json.dumps(rows, indent=1))
    (out / "report.md").write_text(report(rows, options.base, seconds, options.profile, options.against))
    print((out / "report.md").read_text())
    return 0


def grade_all(folder: Path, graded: Path, mutants: list[Mutant], jobs: int, profile: str) -> tuple[dict, int]:
    """Grade every mutant file in `folder` with `conformance grade --each`: each mutant's outcome and the checks that
    failed on it, and grade's exit code."""
    done = subprocess.run([sys.executable, "-m", "conformance", "grade", str(folder), "--each", "--out", str(graded),
                           "--jobs", str(jobs), "--profile", profile], cwd=ROOT)
    return read_outcomes(graded, mutants), done.returncode


def read_outcomes(graded: Path, mutants: list[Mutant]) -> dict:
    """Each mutant's outcome in `graded` (a `grade --each` output folder), with the checks that failed on it."""
    outcomes = {}
    for m in mutants:
        path = graded / _file_name(m.id) / "results.json"
        results = json.loads(path.read_text()) if path.exists() else {"harness_errors": ["no results"]}
        failed = sorted(t["name"].partition(": ")[2] or t["name"] for t in results.get("tests", [])
                        if t["outcome"] in ("failed", "error"))
        outcomes[m.id] = (verdict(results), failed)
    return outcomes


def choose_sample(rows: list[dict], size: int = 28) -> list[dict]:
    """About `size` killed mutants spread over every area and operator, each with the check of its own area that
    killed it (`tests/test_mutants.py` grades them with that check alone); deterministic for one run's rows."""
    killed = [r for r in rows if r["outcome"] == "killed"
              and any(name.partition("[")[0].startswith("test_") for name in r.get("failed", []))]

    def check_of(row: dict) -> str | None:
        own = [n for n in row["failed"] if _area_of_check(n) == row["area"]]
        return (own or [None])[0]

    killed = [r for r in killed if check_of(r)]
    chosen: list[dict] = []
    for key in ("area", "operator"):  # one of each area, then one of each operator not yet in
        for value in sorted({r[key] for r in killed}):
            if not any(c[key] == value for c in chosen):
                chosen.append(next(r for r in killed if r[key] == value and r not in chosen))
    pairs = sorted({(r["area"], r["operator"]) for r in killed} - {(c["area"], c["operator"]) for c in chosen})
    for area, operator in pairs:  # then new (area, operator) pairs, until `size`
        if len(chosen) >= size:
            break
        chosen.append(next(r for r in killed if (r["area"], r["operator"]) == (area, operator)))
    return [{"id": r["id"], "check": check_of(r).partition("[")[0]} for r in chosen]


def _area_of_check(name: str) -> str:
    """The area of a check, from the name results.json gives it ("area: test_..." is cut to the test name)."""
    import importlib
    import pkgutil

    import conformance.checks

    function = name.partition("[")[0]
    for info in pkgutil.iter_modules(conformance.checks.__path__):
        if hasattr(importlib.import_module(f"conformance.checks.{info.name}"), function):
            return info.name.removeprefix("test_")
    return ""


def _verdict_cell(row: dict, profile: str) -> str:
    """The outcome at `profile`, with the checks that failed when any did."""
    failed = row.get(f"failed at {profile}") or []
    return row.get(profile, "") + (f" ({', '.join(failed)})" if failed else "")


def report(rows: list[dict], base: Path, seconds: float, profile: str = "conformance", against: str = "") -> str:
    outcomes = ("killed", "timed out", "survived", "equivalent")
    lines = [f"# Mutation testing: {len(rows)} mutants of {base.name}", "",
             f"graded in {seconds:.0f} s; " + ", ".join(f"{sum(r['outcome'] == o for r in rows)} {o}"
                                                       for o in outcomes), ""]
    for key in ("area", "operator"):
        lines += [f"## By {key}", "", f"| {key} | " + " | ".join(outcomes) + " |",
                  "|---|" + "---|" * len(outcomes)]
        for value in sorted({r[key] for r in rows}):
            mine = [r for r in rows if r[key] == value]
            lines.append(f"| {value} | " + " | ".join(str(sum(r["outcome"] == o for r in mine)) for o in outcomes)
                         + " |")
        lines.append("")
    alive = [r for r in rows if r["outcome"] in ("survived", "equivalent")]
    if alive:
        again = [against] if against and any(against in r for r in alive) else []
        lines += ["## Survivors, side by side", "",
                  "| mutant | edit | " + " | ".join([profile] + again) + " | reason it is equivalent |",
                  "|---|---|" + "---|" * (1 + len(again)) + "---|"]
        for r in alive:
            cells = [r["outcome"]] + [_verdict_cell(r, a) for a in again]
            edit = f"`{r['before']}` -> `{r['after']}`".replace("|", "\\|")
            lines.append(f"| `{r['id']}` | {edit} | " + " | ".join(cells) + f" | {r['reason']} |")
        if again:
            caught = [r["id"] for r in alive if r.get(against) in ("killed", "timed out")]
            lines += ["", f"Killed at `{against}` but not at `{profile}`: "
                      + (", ".join(f"`{i}`" for i in caught) if caught else "none") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
