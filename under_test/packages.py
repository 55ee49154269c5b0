"""A directory submission's own modules and packages, importable by its files.

Learners split their answers into small packages (`mlp/layers.py`, `resnet/blocks.py`) and
import them (`from mlp.layers import Linear`). Inside the sandbox worker, an import whose
top-level name is a module or package folder of the submission's directory is answered by
this finder. Such a module is loaded the way the whole submission is: its definitions run,
its top-level calls, prints and tests do not (load, don't run).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

from .loader import execute, extract_source
from .source import read_submission


class SubmissionPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `name`, `name.sub`, ... under `root` (a `.py` file, or a folder with or without `__init__.py`)."""

    def __init__(self, root: Path, base: dict):
        self.root = Path(root)
        self.base = base  # the names the course supplies, as for the submission itself
        self.loaded: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        where = self.root.joinpath(*fullname.split("."))
        if where.is_dir() and not where.name.startswith((".", "__")):
            init = where / "__init__.py"
            spec = importlib.machinery.ModuleSpec(fullname, self, origin=str(init) if init.exists() else None,
                                                  is_package=True)
            # No search locations: its submodules are found by this finder too (never run as plain files).
            spec.submodule_search_locations = []
            return spec
        file = where.with_suffix(".py")
        if file.is_file():
            return importlib.machinery.ModuleSpec(fullname, self, origin=str(file))
        return None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        for key, value in self.base.items():
            if not key.startswith("__"):
                module.__dict__.setdefault(key, value)
        self.loaded.append(module.__name__)
        origin = module.__spec__.origin
        if origin is None:  # a folder without __init__.py: a namespace package, nothing to run
            return
        program = extract_source(read_submission(origin), relative_imports=True)
        report = execute(program, module.__dict__)
        if report.failed:
            module.__dict__["__load_failures__"] = dict(report.failed)


def install(root: Path, base: dict) -> SubmissionPackages | None:
    """Make a directory submission's own modules importable (no-op for a single file)."""
    root = Path(root)
    if not root.is_dir():
        return None
    finder = SubmissionPackages(root, base)
    sys.meta_path.append(finder)  # after the installed packages: a learner's file never shadows torch's imports
    return finder
