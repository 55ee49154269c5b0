"""How many Hypothesis examples each check needs to catch every bug of the corpus.

    python -m benchmarks.examples [--jobs 2] [--out benchmarks/examples.json] [BUG_ID ...]

Each failing bug of `corpus/` is graded on the checks it claims, with the `corpus` profile
(the default profile's inputs, in the same order, without shrinking) and the example limit
lifted to `--limit` (default 30, the profile's). A counter around every Hypothesis check
records the example at which it first fails (explicit `@example`s included). The summary
gives, per check, the latest first failure over the bugs that check must catch.
`conformance.budgets.EXAMPLES` is that figure with a margin. Hypothesis draws other inputs
under another `max_examples`, so the figure is a guide, not a proof: tests/test_corpus.py
grades every bug with the budgets themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from corpus import ROOT, load_bugs

HERE = Path(__file__).resolve().parent


class FirstFailure:
    """A pytest plugin: for each Hypothesis check, how many examples ran, and at which one it first failed."""

    def __init__(self):
        self.records: dict[str, dict] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        if handle is None:
            return (yield)
        record = self.records.setdefault(item.name, {"ran": 0, "first": None,
                                                     "explicit": len(getattr(item.obj, "hypothesis_explicit_examples",
                                                                             []))})
        original = handle.inner_test

        def counted(*args, **kwargs):
            record["ran"] += 1
            try:
                return original(*args, **kwargs)
            except BaseException:
                if record["first"] is None:
                    record["first"] = record["ran"]
                raise

        handle.inner_test = counted
        try:
            return (yield)
        finally:
            handle.inner_test = original


def measure(bug, limit: int) -> dict:
    """The first-failure record of each check the bug claims (run in a forked child; written as JSON)."""
    from hypothesis import settings

    from conformance import budgets
    from conformance.launch import fork_harness, harness_argv

    with tempfile.TemporaryDirectory() as tmp:
        path = bug.write(Path(tmp))
        out = Path(tmp) / "records.json"

        def run() -> int:
            settings.register_profile("examples", parent=settings.get_profile("corpus"), max_examples=limit)
            budgets.EXAMPLES.clear()  # every check runs up to `limit` examples while they are counted
            recorder = FirstFailure()
            selection = ["-k", " or ".join(bug.checks)] if bug.checks else []
            pytest.main(harness_argv(path, modules=[f"conformance.checks.test_{bug.area}"], areas=[bug.area],
                                     profile="examples", extra=["-q", *selection]), plugins=[recorder])
            out.write_text(json.dumps(recorder.records))
            return 0

        os.waitpid(fork_harness(run, Path(tmp) / "log.txt", ROOT), 0)
        return json.loads(out.read_text()) if out.exists() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("bugs", nargs="*", metavar="BUG_ID")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=30, help="max_examples while measuring (default 30)")
    parser.add_argument("--out", default=str(HERE / "examples.json"))
    options = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from conformance import profiles

    profiles.register()  # in this (forked-from) process

    bugs = [b for b in load_bugs() if not b.advisory and (not options.bugs or b.id in options.bugs)]
    started = time.monotonic()
    results: dict[str, dict] = {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        for bug, records in zip(bugs, pool.map(lambda b: measure(b, options.limit), bugs)):
            results[bug.id] = {"area": bug.area, "checks": list(bug.checks), "records": records}
            print(f"{bug.id}: " + ", ".join(f"{name} {r['first']}/{r['ran']}" for name, r in records.items()),
                  flush=True)
    summary = summarise(results)
    Path(options.out).write_text(json.dumps({"limit": options.limit, "bugs": results, "checks": summary}, indent=1))
    print(f"\n{len(bugs)} bugs in {time.monotonic() - started:.0f} s; per check, the latest first failure "
          "(generated examples, after the explicit ones):")
    for name, row in sorted(summary.items()):
        print(f"  {name:70} {row['needed']:3}  ({row['bugs']} bugs{'; MISSED: ' + ', '.join(row['missed']) if row['missed'] else ''})")
    return 0


def summarise(results: dict) -> dict:
    """Per check function: the generated examples needed to catch every bug that claims it, and any it missed."""
    summary: dict[str, dict] = {}
    for bug_id, result in results.items():
        for name, record in result["records"].items():
            function = name.split("[")[0]
            if not any(function == claimed or name == claimed for claimed in result["checks"]):
                continue
            row = summary.setdefault(function, {"needed": 0, "bugs": 0, "missed": []})
            row["bugs"] += 1
            if record["first"] is None:
                row["missed"].append(bug_id)
            else:
                row["needed"] = max(row["needed"], record["first"] - record["explicit"])
    return summary


if __name__ == "__main__":
    sys.exit(main())
