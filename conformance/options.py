"""The grading options, declared once.

Each option that can change a verdict is one `Option` of `GRADING`: its name, its command-line
flag (`conformance grade` and `conformance check`), its pytest flag (a harness's own
`pytest --pyargs conformance.checks ...`), its type, default and help, whether results.json's
provenance records it, and which argument of the sandbox it sets. From this table come the
argparse options (`add_to_argparse`), pytest's (`add_to_pytest`), the pytest arguments of a
harness (`pytest_argv`), the provenance (`provenance`), the Sandbox's keywords
(`sandbox_kwargs`) and the option tables of the README and docs/interface.md (`markdown`,
rewritten by `python -m conformance.docs`).

Imports neither torch nor pytest: `conformance grade` reads it before it imports either.
"""

from __future__ import annotations

from dataclasses import dataclass

from under_test.processes import DEFAULT_LOAD_TIMEOUT, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Option:
    name: str  # its key in provenance, and its attribute on argparse's namespace
    flag: str  # on `conformance grade` / `conformance check`
    pytest_flag: str  # on a harness's pytest command line
    kind: type  # bool (a switch), float, int, or list (a repeatable OLD=NEW pair)
    default: object
    help: str
    metavar: str | None = None
    provenance: bool = True  # recorded in results.json's provenance, and part of "graded the same way"
    sandbox: str | None = None  # the keyword of `under_test.sandbox.Sandbox` it sets

    @property
    def dest(self) -> str:
        """Its name on pytest's config (`config.getoption(dest)`), apart from pytest's own options."""
        return f"conformance_{self.name}"

    def shown_default(self) -> str:
        if self.kind is bool:
            return "off"
        if self.kind is list:
            return "none"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


GRADING: tuple[Option, ...] = (
    Option("strict", "--strict", "--strict-conventions", bool, False,
           "require PyTorch's conventions where ARENA differs"),
    Option("aliases", "--alias", "--alias", list, (),
           "grade the submission's OLD as NEW (repeatable), e.g. get_resnet34_for_feature_extraction="
           "get_resnet_for_feature_extraction", "OLD=NEW", sandbox="aliases"),
    Option("probe_timeout", "--probe-timeout", "--probe-timeout", float, DEFAULT_TIMEOUT,
           "wall time of one call into the submission", "SECONDS", sandbox="timeout"),
    Option("memory_mb", "--memory-mb", "--memory-mb", int, DEFAULT_MEMORY_MB,
           "memory the submission's worker may use (address space beyond what torch maps)", "MB",
           sandbox="memory_mb"),
    Option("load_timeout", "--load-timeout", "--load-timeout", float, DEFAULT_LOAD_TIMEOUT,
           "wall time of one top-level definition (an import, a class, a function) while loading the submission",
           "SECONDS", sandbox="load_timeout"),
)
BY_NAME = {option.name: option for option in GRADING}


def _argparse_kwargs(option: Option) -> dict:
    if option.kind is bool:
        return {"action": "store_true"}
    if option.kind is list:
        return {"action": "append", "default": [], "metavar": option.metavar}
    return {"type": option.kind, "default": option.default, "metavar": option.metavar}


def add_to_argparse(parser) -> None:
    """The grading options of `conformance grade` and `conformance check`."""
    for option in GRADING:
        default = "" if option.kind in (bool, list) else f" (default {option.shown_default()})"
        parser.add_argument(option.flag, dest=option.name, help=option.help + default, **_argparse_kwargs(option))


def add_to_pytest(group) -> None:
    """The grading options of a harness's pytest session (`conformance.plugin`)."""
    for option in GRADING:
        default = "" if option.kind in (bool, list) else f" (default {option.shown_default()})"
        group.addoption(option.pytest_flag, dest=option.dest, help=option.help + default, **_argparse_kwargs(option))


def from_namespace(namespace) -> dict:
    """The options' values from `conformance grade`'s (or `check`'s) parsed arguments."""
    return {option.name: getattr(namespace, option.name) for option in GRADING}


def from_config(config) -> dict:
    """The options' values from a harness's pytest config."""
    return {option.name: config.getoption(option.dest) for option in GRADING}


def pytest_argv(values: dict) -> list[str]:
    """The options' values as a harness's pytest arguments (what `conformance grade` passes on)."""
    argv = []
    for option in GRADING:
        value = values[option.name]
        if option.kind is bool:
            argv += [option.pytest_flag] if value else []
        elif option.kind is list:
            argv += [f"{option.pytest_flag}={item}" for item in value]
        else:
            argv.append(f"{option.pytest_flag}={value}")
    return argv


def provenance(values: dict) -> dict:
    """The options that can change a verdict, as results.json's provenance records them."""
    return {option.name: (list(values[option.name]) if option.kind is list else option.kind(values[option.name]))
            for option in GRADING if option.provenance}


def parse_aliases(pairs) -> dict[str, str]:
    """`--alias OLD=NEW` pairs as {OLD: NEW}; ValueError names a malformed one."""
    aliases = {}
    for pair in pairs:
        old, sep, new = str(pair).partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"--alias takes OLD=NEW, got {pair!r}")
        aliases[old.strip()] = new.strip()
    return aliases


def sandbox_kwargs(values: dict) -> dict:
    """The Sandbox's keywords the options set."""
    kwargs = {option.sandbox: values[option.name] for option in GRADING if option.sandbox}
    kwargs["aliases"] = parse_aliases(kwargs.get("aliases", ()))
    return kwargs


def markdown(column: str = "flag") -> str:
    """The options as a markdown table (`flag`: as `conformance` takes them; `pytest_flag`: as pytest does)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for option in GRADING:
        shown = getattr(option, column) + (f" {option.metavar}" if option.metavar else "")
        rows.append(f"| `{shown}` | {option.shown_default()} | {option.help} |")
    return "\n".join(rows)
