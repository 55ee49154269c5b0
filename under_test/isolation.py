"""Keep the harness out of the submission's reach (sandbox worker only).

Once the worker has imported what it needs and before any submission code runs,
`lock_down` leaves the submission an import path of its own folder, the standard
library and the installed third-party packages, and nothing of the harness:

- the harness's packages (`HARNESS_PACKAGES`) leave `sys.modules` and `sys.path`, and an
  import of one of them fails as if it were not installed;
- an audit hook refuses to open or list the harness's files (its packages, fixtures,
  examples and corpus, everything in its source checkout except the worker's own code
  and the virtual environment), the submission's own files excepted, and to write,
  create, remove or rename anything outside the worker's private working folder;
- where the kernel offers Landlock (Linux 5.13+), the same is enforced by the kernel for
  the worker and every process it starts, which may also write only in its private
  working folder, not open TCP connections, and not signal processes outside it.

Every attempt is recorded and sent to the harness, which reports it in the feedback.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

HARNESS_PACKAGES = ("reference", "conformance", "under_test", "fixtures", "corpus")
ROOT = Path(__file__).resolve().parent.parent  # the folder that holds the harness's packages
OWN_CODE = Path(__file__).resolve().parent  # the worker's own code: readable (tracebacks), not importable


def is_checkout(root: Path = ROOT) -> bool:
    """The harness runs from its source tree (editable install, CI) rather than from site-packages."""
    return (root / "pyproject.toml").is_file() and (root / "under_test").is_dir()


def protected_paths(root: Path = ROOT) -> list[Path]:
    """What a submission may not read: the whole source checkout, or the installed packages."""
    if is_checkout(root):
        return [root]
    return [root / name for name in HARNESS_PACKAGES if (root / name).exists() and name != "under_test"]


def readable_inside(submission: Path, workdir: Path) -> list[Path]:
    """Exceptions inside the protected paths: the virtual environment, the worker's code, the submission."""
    lent = [ROOT / "reference" / "given.py", ROOT / "fixtures" / "standin.py"]  # code the worker lends (tracebacks)
    inside = [Path(sys.prefix).resolve(), OWN_CODE, *lent, submission.resolve(), workdir.resolve()]
    return list(dict.fromkeys(inside))


def _within(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


class Guard:
    """The import blocker and the audit hook; `attempts` lists what they refused (sent to the harness)."""

    def __init__(self, protected: list[Path], readable: list[Path], workdir: Path):
        self.protected = protected
        self.readable = readable
        self.workdir = workdir.resolve()
        self.attempts: list[str] = []
        self.armed = False

    def take(self) -> list[str]:
        taken, self.attempts[:] = list(self.attempts), []
        return taken

    def _record(self, text: str) -> None:
        if text not in self.attempts and len(self.attempts) < 50:
            self.attempts.append(text)

    # ---- imports: a meta path finder in front of every other ----
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in HARNESS_PACKAGES:
            self._record(f"import {fullname}")
            raise ModuleNotFoundError(f"No module named {fullname!r} (the harness's packages are not available to "
                                      "submissions)", name=fullname)
        return None

    # ---- files: an audit hook (cannot be removed once added) ----
    def audit(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event in _CHANGES:
            for target in args[:2] if event in ("os.rename", "os.link", "os.symlink") else args[:1]:
                self._refuse_change(event, target)
            return
        if event not in ("open", "os.listdir", "os.scandir", "glob.glob"):
            return
        path = _resolved(args[0] if args else None)
        if path is None:
            return  # a file descriptor
        if _within(path, self.protected) and not _within(path, self.readable):
            self._record(f"{'open' if event == 'open' else 'list'} {path}")
            raise PermissionError(f"{path}: the harness's files are not available to submissions")
        if event == "open" and _writes(args):
            self._refuse_change("write", args[0])

    def _refuse_change(self, event: str, target) -> None:
        """Writing, creating, removing or renaming happens in the working folder only (and /dev)."""
        path = _resolved(target)
        if path is None or _within(path, [self.workdir, Path("/dev")]):
            return
        self._record(f"{event.removeprefix('os.')} {path}")
        raise PermissionError(f"{path}: a submission may change files only in its working folder")


_CHANGES = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.utime",
            "os.link", "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.copytree"}


def _resolved(target) -> Path | None:
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if not isinstance(target, (str, os.PathLike)):
        return None
    try:
        return Path(os.path.realpath(os.path.abspath(target)))
    except (OSError, ValueError):
        return None


def _writes(args: tuple) -> bool:
    """An `open` audit event (path, mode, flags) that writes, creates or truncates."""
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else 0
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))


def lock_down(submission: Path, workdir: Path) -> Guard:
    """Hide the harness from everything that runs after this in the worker; returns the guard."""
    protected = [p.resolve() for p in protected_paths()]
    readable = readable_inside(submission, workdir)
    guard = Guard(protected, readable, workdir)
    for name in list(sys.modules):
        if name.partition(".")[0] in HARNESS_PACKAGES:
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p and not _path_is_protected(p, protected, readable)]
    sys.meta_path.insert(0, guard)
    sys.addaudithook(guard.audit)
    guard.armed = True
    landlock(protected, readable, workdir)
    return guard


def _path_is_protected(entry: str, protected: list[Path], readable: list[Path]) -> bool:
    path = Path(os.path.realpath(entry))
    return _within(path, protected) and not _within(path, readable) or path == Path.cwd()


# ---- Landlock (the kernel's own access control; unprivileged) ------------------------------------

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # the same on x86_64 and aarch64
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ALL = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_NET_ALL = (1 << 0) | (1 << 1)  # bind and connect on TCP ports
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets and signals outside the sandbox


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers (0: none)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def landlock(protected: list[Path], readable: list[Path], workdir: Path) -> bool:
    """Restrict this process and its children: read all but `protected` (bar `readable`), write in `workdir`."""
    abi = landlock_abi()
    if abi <= 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    everything = _FS_ALL.get(abi, _FS_ALL[5])
    read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    file_rights = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | (_FS_TRUNCATE if abi >= 3 else 0) \
        | (_FS_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(everything, _NET_ALL if abi >= 4 else 0, _SCOPE_ALL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        rules = [(p, read) for p in _complement(protected)] + [(p, read) for p in readable]
        rules += [(workdir, everything)] + [(Path(p), everything) for p in ("/dev/null", "/dev/zero", "/dev/shm")]
        for path, rights in rules:
            _allow(libc, ruleset, path, rights, file_rights)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS, required to restrict oneself
            return False
        return libc.syscall(_SYS_RESTRICT, ruleset, ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def _allow(libc, ruleset: int, path: Path, rights: int, file_rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= file_rights
        rule = _PathBeneathAttr(rights, fd)
        libc.syscall(_SYS_ADD_RULE, ruleset, ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)


def _complement(excluded: list[Path]) -> list[Path]:
    """Paths whose subtrees cover the whole file system except the `excluded` subtrees."""
    covering: list[Path] = []

    def visit(directory: Path) -> None:
        try:
            children = list(directory.iterdir())
        except OSError:
            return
        for child in children:
            real = Path(os.path.realpath(child))
            if real in excluded:
                continue
            if any(real in e.parents for e in excluded) and child.is_dir() and not child.is_symlink():
                visit(child)
            else:
                covering.append(child)

    visit(Path("/"))
    return covering
