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
    problems: list[str] = field(default_factory=list)  # files that could not be read at all, and why

    @property
    def notes(self) -> list[str]:
        return self.problems + [f"{p.cell.origin}:{p.cell.first_line}: skipped, {p.error}"
                                for p in self.cells if p.error]


def submission_name(path: Path) -> str:
    """The name results are filed under: file name without extension, or directory name."""
    return path.name if path.is_dir() else path.stem


def read_submission(path: str | Path) -> Source:
    """The submission's cells. Only a path that does not exist raises (`SubmissionError`).

    Anything else is a submission, however broken: a file that cannot be read or parsed
    (not UTF-8 text, not a notebook, empty, not Python at all) is kept as a `problem` that
    says which file and what is wrong, and the submission is graded with what remains.
    """
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path}: no such file or directory")
    source = Source(path)
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
            source.problems.append(f"{path}: the directory holds no .py or .ipynb file")
    elif path.suffix in (".py", ".ipynb"):
        files = [path]
    else:
        files = []
        source.problems.append(f"{path}: not a .py file, an .ipynb notebook or a directory, so not read")
    for file in files:
        try:
            cells = _notebook_cells(file) if file.suffix == ".ipynb" else _script_cells(file)
        except SubmissionError as error:
            source.problems.append(str(error))
            continue
        if not any(cell.text.strip() for cell in cells):
            source.problems.append(f"{file}: empty, nothing to grade")
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
    text = _read_text(file)
    if not text.strip():
        return []
    try:
        notebook = json.loads(text)
    except ValueError as error:
        raise SubmissionError(f"{file}: not a valid notebook, its JSON is broken at line {error.lineno}, column "
                              f"{error.colno}: {error.msg}" if hasattr(error, "lineno") else
                              f"{file}: not a valid notebook ({error})") from error
    raw_cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(raw_cells, list):
        raise SubmissionError(f"{file}: not a notebook: its JSON has no list of \"cells\"")
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
        data = file.read_bytes()
    except OSError as error:
        raise SubmissionError(f"{file}: cannot be read ({error.strerror or error})") from error
    nul = data.find(b"\0")
    if nul >= 0:
        raise SubmissionError(f"{file}: a binary file (a NUL byte at byte {nul}), not Python source or a notebook")
    return data.decode("utf-8", errors="replace")


def _parse(cell: Cell) -> ParsedCell:
    try:
        module = ast.parse(cell.text, filename=cell.origin)
    except SyntaxError as error:
        line = (error.lineno or 1) + cell.first_line - 1
        return ParsedCell(cell, None, f"syntax error at line {line}: {error.msg}")
    except (ValueError, RecursionError, MemoryError) as error:  # e.g. absurdly nested expressions
        return ParsedCell(cell, None, f"cannot be parsed: {type(error).__name__}: {error}")
    ast.increment_lineno(module, cell.first_line - 1)
    return ParsedCell(cell, module)
