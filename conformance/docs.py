"""The parts of the documents that the code declares: the areas and the rubric (`conformance/areas.py`) in
docs/interface.md, and the grading options (`conformance/options.py`) in docs/interface.md and the README.

They are written from `AREAS`, `RUBRIC`, `GATE_MIN_ITEMS` and `options.GRADING`, never by hand, so the documents
cannot drift from what the checks, the reports, the gate and the command line read. `python -m conformance.docs`
rewrites them in place; `tests/test_docs.py` fails when a file is out of step.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from . import options
from .areas import AREAS, GATE_MIN_ITEMS, RUBRIC

INTERFACE = Path(__file__).resolve().parent.parent / "docs" / "interface.md"
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- generated from conformance/areas.py: begin -->", "<!-- generated from conformance/areas.py: end -->"
OPTIONS_BEGIN, OPTIONS_END = ("<!-- generated from conformance/options.py: begin -->",
                              "<!-- generated from conformance/options.py: end -->")


CHECKS = Path(__file__).resolve().parent / "checks"


def tagged() -> dict[str, dict[str, int]]:
    """For each rubric item, the areas whose checks carry it with `@item(...)`, and how many; read from the check
    modules' source (importing them would import torch)."""
    found: dict[str, dict[str, int]] = {i: {} for i in RUBRIC}
    for path in sorted(CHECKS.glob("test_*.py")):
        area_id = path.stem.removeprefix("test_")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "item":
                    for arg in decorator.args:
                        found[arg.value][area_id] = found[arg.value].get(area_id, 0) + 1
    return found


def deciders(item_id: str) -> str:
    """Who decides a rubric item: every check of the areas that declare it, and the checks tagged with it."""
    whole = [f"`{area.id}`" for area in AREAS.values() if item_id in area.items]
    some = [f"`{a}` ({n} check{'s' if n > 1 else ''})" for a, n in tagged()[item_id].items()]
    return ", ".join(whole + some)


def tables() -> str:
    lines = ["| area | weight | covers | decides items |", "|---|---|---|---|"]
    lines += [f"| `{a.id}` | {a.weight:g} | {a.covers} | {', '.join(a.items) or '-'} |" for a in AREAS.values()]
    must = [i.id for i in RUBRIC.values() if i.must_pass]
    lines += ["", f"The gate passes when at least {GATE_MIN_ITEMS} of the {len(RUBRIC)} items pass and items "
              f"{', '.join(must)} all pass.", "",
              "| item | question | must pass | decided by |", "|---|---|---|---|"]
    lines += [f"| {i.id} | {i.question} | {'yes' if i.must_pass else 'no'} | {deciders(i.id)} |"
              for i in RUBRIC.values()]
    return "\n".join(lines)


def _between(text: str, begin: str, end: str, body: str, where: Path) -> str:
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"{where} lacks the markers {begin!r} and {end!r}")
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(text: str) -> str:
    """docs/interface.md's `text` with its generated parts replaced by the current tables."""
    text = _between(text, BEGIN, END, tables(), INTERFACE)
    return _between(text, OPTIONS_BEGIN, OPTIONS_END, options.markdown(), INTERFACE)


def render_readme(text: str) -> str:
    """The README's `text` with its table of grading options replaced by the current one."""
    return _between(text, OPTIONS_BEGIN, OPTIONS_END, options.markdown(), README)


def main() -> int:
    INTERFACE.write_text(render(INTERFACE.read_text()))
    README.write_text(render_readme(README.read_text()))
    print(f"wrote {INTERFACE} and {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
