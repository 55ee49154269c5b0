"""Read a submission (.py, .ipynb or a directory of them) into cells of plain Python.

Nothing here executes submission code: it reads text, drops shell and magic lines,
and parses. `under_test.loader` decides which statements are definitions.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Cell magics whose body is ordinary Python; any other %% cell (writefile, bash...) is dropped.
PYTHON_CELL_MAGICS = {"%%capture", "%%time", "%%timeit"}
CELL_MARKER = re.compile(r"^# ?%%")
SKIPPED_FILE = re.compile(r"^(tests?|test_.*|.*_test|conftest|setup)\.(py|ipynb)$")


class SubmissionError(Exception):
    """The path given is not a submission the harness can read."""


@dataclass
class Cell:
    """One chunk of source that is parsed on its own (a notebook cell, a `# %%` block)."""

    origin: str  # file path, for messages and tracebacks
    first_line: int  # 1-based line of the chunk in its file
    text: str


@dataclass
class ParsedCell:
    cell: Cell
    module: ast.Module | None
    error: str | None = None


@dataclass
class Source:
    path: Path
    cells: list[ParsedCell] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return [f"{p.cell.origin}:{p.cell.first_line}: skipped, {p.error}" for p in self.cells if p.error]


def submission_name(path: Path) -> str:
    """The name results are filed under: file name without extension, or directory name."""
    return path.name if path.is_dir() else path.stem


def read_submission(path: str | Path) -> Source:
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in (".py", ".ipynb")
            and p.is_file()
            and not any(part.startswith((".", "__pycache__")) for part in p.relative_to(path).parts)
            and not SKIPPED_FILE.match(p.name)
        )
        if not files:
            raise SubmissionError(f"{path}: the directory holds no .py or .ipynb file")
    elif path.suffix in (".py", ".ipynb"):
        files = [path]
    else:
        raise SubmissionError(f"{path}: a submission is a .py file, an .ipynb notebook or a directory")
    source = Source(path)
    for file in files:
        cells = _notebook_cells(file) if file.suffix == ".ipynb" else _script_cells(file)
        source.cells.extend(_parse(cell) for cell in cells)
    return source


def _script_cells(file: Path) -> list[Cell]:
    text = _read_text(file)
    whole = Cell(str(file), 1, _drop_shell_lines(text))
    try:
        ast.parse(whole.text)
        return [whole]
    except SyntaxError:
        pass
    # A syntax error somewhere: salvage what parses, block by `# %%` block.
    cells, start, chunk = [], 1, []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if CELL_MARKER.match(line) and chunk:
            cells.append(Cell(str(file), start, _drop_shell_lines("".join(chunk))))
            start, chunk = number, []
        chunk.append(line)
    cells.append(Cell(str(file), start, _drop_shell_lines("".join(chunk))))
    return cells


def _notebook_cells(file: Path) -> list[Cell]:
    try:
        notebook = json.loads(_read_text(file))
        raw_cells = notebook["cells"]
    except (ValueError, KeyError, TypeError) as error:
        raise SubmissionError(f"{file}: not a readable notebook ({error})") from error
    cells = []
    for index, raw in enumerate(raw_cells):
        if not isinstance(raw, dict) or raw.get("cell_type") != "code":
            continue
        text = raw.get("source", "")
        text = "".join(text) if isinstance(text, list) else str(text)
        first = text.lstrip().split("\n", 1)[0].strip()
        if first.startswith("%%"):
            if first.split()[0] not in PYTHON_CELL_MAGICS:
                continue
            text = text.lstrip().split("\n", 1)[1] if "\n" in text.lstrip() else ""
        cells.append(Cell(f"{file}[cell {index}]", 1, _drop_shell_lines(text)))
    return cells


def _drop_shell_lines(text: str) -> str:
    """Replace `%magic` and `!shell` lines by `pass` at the same indentation (keeps blocks valid)."""
    out = []
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            indent = line[: len(line) - len(stripped)]
            line = f"{indent}pass\n"
        out.append(line)
    return "".join(out)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise SubmissionError(f"{file}: cannot read ({error})") from error


def _parse(cell: Cell) -> ParsedCell:
    try:
        module = ast.parse(cell.text, filename=cell.origin)
    except SyntaxError as error:
        return ParsedCell(cell, None, f"syntax error at line {error.lineno}: {error.msg}")
    ast.increment_lineno(module, cell.first_line - 1)
    return ParsedCell(cell, module)
