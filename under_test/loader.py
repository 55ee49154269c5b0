"""Load, don't run: take a submission's top-level definitions and nothing else.

`extract` is static (it only reads the syntax tree) and is what the harness uses to
know which names a submission defines, which are only the course's stubs, and which
are missing. `execute` runs the kept definitions; it is called only inside the
sandbox worker, never in the harness process.
"""

from __future__ import annotations

import __future__
import ast
import linecache
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .source import Source, read_submission

# Names the course notebook hands to learners; supplied when the submission lacks them.
GIVEN_NAMES = ("IntOrPair", "Pair", "force_pair", "Sequential", "Flatten", "MaxPool2d", "copy_weights")

# Expression nodes allowed in a kept constant assignment: nothing that calls code.
_SIMPLE = (
    ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple, ast.List,
    ast.Set, ast.Dict, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Starred, ast.Lambda, ast.arguments, ast.arg, ast.Load, ast.Store,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context,
)


@dataclass
class Definition:
    """A kept top-level statement and the names it binds."""

    node: ast.stmt
    origin: str
    names: tuple[str, ...]
    stub: bool = False
    flags: int = 0  # compiler flags of the `from __future__` imports of its file

    @property
    def is_import(self) -> bool:
        return isinstance(self.node, (ast.Import, ast.ImportFrom))

    @property
    def where(self) -> str:
        return f"{self.origin}:{self.node.lineno}"


@dataclass
class Program:
    """What a submission defines, in order, as far as can be told without running it."""

    path: Path
    definitions: list[Definition] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # origin -> the text its line numbers refer to

    def last(self, name: str) -> Definition | None:
        """The definition that wins for `name` (the last one), if any."""
        for definition in reversed(self.definitions):
            if name in definition.names:
                return definition
        return None

    def status(self, name: str, aliases: dict[str, str] | None = None) -> str:
        """'defined', 'stub', 'given' (the course supplies it) or 'missing'."""
        definition = self.last(name)
        if definition is None:
            for old, new in (aliases or {}).items():
                if new == name:
                    definition = self.last(old)
        if definition is not None:
            return "stub" if definition.stub else "defined"
        return "given" if name in GIVEN_NAMES else "missing"


def extract(path: str | Path) -> Program:
    return extract_source(read_submission(path))


def extract_source(source: Source, *, relative_imports: bool = False) -> Program:
    """The kept definitions of every cell, in order.

    `relative_imports` keeps `from .x import y` (a module of the submission's own package,
    loaded on its own); in a merged directory they are dropped, the names being merged anyway.
    """
    program = Program(source.path, notes=list(source.notes))
    flags: dict[str, int] = {}
    for parsed in source.cells:
        origin = parsed.cell.origin
        program.sources[origin] = program.sources.get(origin, "") + parsed.cell.text
        if parsed.module is None:
            continue
        flags[origin] = flags.get(origin, 0) | _future_flags(parsed.module)
        for node in parsed.module.body:
            definition = _definition(node, origin, relative_imports)
            if definition is not None:
                definition.flags = flags[origin]
                program.definitions.append(definition)
    return program


def _future_flags(module: ast.Module) -> int:
    """The compiler flags of the file's `from __future__ import ...` statements (e.g. annotations)."""
    flags = 0
    for node in module.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
    return flags


def _definition(node: ast.stmt, origin: str, relative_imports: bool = False) -> Definition | None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return Definition(node, origin, (node.name,), _is_stub_function(node))
    if isinstance(node, ast.ClassDef):
        return Definition(node, origin, (node.name,), _is_stub_class(node))
    if isinstance(node, ast.Import):
        return Definition(node, origin, tuple((a.asname or a.name).split(".")[0] for a in node.names))
    if isinstance(node, ast.ImportFrom):
        if node.module == "__future__":  # a compiler flag of its file (`Definition.flags`), not a binding
            return None
        if node.level and not relative_imports:  # inside a merged directory: its names come from the merged files
            return None
        return Definition(node, origin, tuple(a.asname or a.name for a in node.names))
    if isinstance(node, ast.Assign) and _is_simple(node.value) and all(map(_is_name_target, node.targets)):
        return Definition(node, origin, tuple(n for t in node.targets for n in _target_names(t)))
    if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
        if _is_simple(node.value):
            return Definition(node, origin, (node.target.id,))
    if hasattr(ast, "TypeAlias") and isinstance(node, ast.TypeAlias):
        return Definition(node, origin, (node.name.id,))
    return None  # a call, a loop, `if MAIN:`, a print... : skipped


def _is_simple(expr: ast.AST) -> bool:
    return all(isinstance(n, _SIMPLE) for n in ast.walk(expr))


def _is_name_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, (ast.Tuple, ast.List)) and all(map(_is_name_target, target.elts))


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    return [n for elt in target.elts for n in _target_names(elt)]  # type: ignore[attr-defined]


def _is_super_init(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and isinstance(stmt.value.func, ast.Attribute)
        and stmt.value.func.attr == "__init__"
    )


def _is_stub_body(body: list[ast.stmt]) -> bool:
    """A body that is only a docstring, `pass`, `...` or `raise NotImplementedError`."""
    rest = _strip_trivia(body)
    return not rest or _raises_not_implemented(rest)


def _strip_trivia(body: list[ast.stmt]) -> list[ast.stmt]:
    return [
        s for s in body
        if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str))
        and not isinstance(s, ast.Pass)
        and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and s.value.value is Ellipsis)
        and not _is_super_init(s)
    ]


def _raises_not_implemented(rest: list[ast.stmt]) -> bool:
    if len(rest) == 1 and isinstance(rest[0], ast.Raise) and rest[0].exc is not None:
        exc = rest[0].exc
        name = exc.func if isinstance(exc, ast.Call) else exc
        return isinstance(name, ast.Name) and name.id == "NotImplementedError"
    return False


def _is_stub_function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return _is_stub_body(node.body)


def _is_stub_class(node: ast.ClassDef) -> bool:
    """The course's class stubs leave `__init__` or `forward` raising NotImplementedError.

    An `__init__` that only calls `super().__init__()` is complete; a `forward` that does
    nothing is a stub.
    """
    for method in node.body:
        if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if method.name == "__init__" and _raises_not_implemented(_strip_trivia(method.body)):
            return True
        if method.name in ("forward", "__call__") and _is_stub_body(method.body):
            return True
    return False


@dataclass
class LoadReport:
    """What happened when the definitions ran: names whose definition raised."""

    failed: dict[str, str] = field(default_factory=dict)  # name -> one-line error
    notes: list[str] = field(default_factory=list)


def execute(program: Program, namespace: dict, aliases: dict[str, str] | None = None, *,
            skip: dict[int, str] | None = None, progress=None) -> LoadReport:
    """Run the kept definitions into `namespace` (sandbox worker only).

    The last definition of a name wins. A definition that raises is recorded and
    retried once after the others (a directory's files may refer to each other), and
    only while no later definition of its names succeeded. An import that fails binds
    nothing, as in a notebook: a name an earlier cell defined keeps that definition.

    `skip` maps the index of a definition that must not run (it hung or crashed the worker
    on an earlier start) to why; its names fail with that reason. `progress(index)` is
    called before each definition runs (the harness times each one).
    """
    report = LoadReport()
    _register_sources(program)
    skip = skip or {}
    pending: list[tuple[int, Definition]] = []
    done_at: dict[str, int] = {}

    def run(index: int, definition: Definition) -> str | None:
        if index in skip:
            return skip[index]
        if progress is not None:
            progress(index)
        return _run(definition, namespace)

    for index, definition in enumerate(program.definitions):
        if run(index, definition) is None:
            done_at.update({name: index for name in definition.names})
        else:
            pending.append((index, definition))
    for index, definition in pending:
        if any(done_at.get(name, -1) > index for name in definition.names):
            continue
        error = run(index, definition)
        if error is None:
            done_at.update({name: index for name in definition.names})
            continue
        if definition.is_import:
            kept = [name for name in definition.names if name in done_at]
            report.notes.append(f"{definition.where}: import skipped ({error})"
                                + (f"; {', '.join(kept)} keep{'s' if len(kept) == 1 else ''} the submission's "
                                   "earlier definition" if kept else ""))
            for name in definition.names:
                if name not in done_at:
                    report.failed[name] = f"{definition.where}: {error}"
            continue
        for name in definition.names:
            if done_at.get(name, -1) < index:
                report.failed[name] = f"{definition.where}: {error}"
    for old, new in (aliases or {}).items():
        if old in namespace and new not in program_names(program):
            namespace[new] = namespace[old]
            report.failed.pop(new, None)
    return report


def _register_sources(program: Program) -> None:
    """Let `inspect.getsource` see the text that was compiled (magics replaced, notebook cells by name).

    typeguard's `@typechecked` re-reads a function's module source to instrument it; entries
    without a modification time are never evicted by `linecache.checkcache`.
    """
    for origin, text in program.sources.items():
        linecache.cache[origin] = (len(text), None, text.splitlines(keepends=True), origin)


def program_names(program: Program) -> set[str]:
    return {name for d in program.definitions for name in d.names}


def _run(definition: Definition, namespace: dict) -> str | None:
    code = compile(ast.Module(body=[definition.node], type_ignores=[]), definition.origin, "exec",
                   flags=definition.flags, dont_inherit=True)
    namespace["__file__"] = definition.origin  # where inspect (and typeguard) find the source of what it defines
    try:
        exec(code, namespace)  # noqa: S102 - sandbox worker only
    except BaseException as error:  # noqa: BLE001 - a definition may raise anything, even SystemExit
        if isinstance(error, KeyboardInterrupt):
            raise
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == definition.origin]
        where = f" (line {frames[-1].lineno})" if frames else ""  # the submission's line, not the importer's
        return f"{type(error).__name__}: {error}{where}"
    return None
