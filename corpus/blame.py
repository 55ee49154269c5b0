"""Is each single-bug entry of the corpus charged to its own area only? (`python -m corpus.blame`)

Writes every failing bug of `corpus/*.toml` as a whole submission, grades them all with
`conformance grade --each` at the default profile, and reports, for each bug, the areas that
failed besides its own, and the advisories that name the root cause where another area was
spared. Exit status 1 when some bug is charged to another area too (or its own passes).

    python -m corpus.blame [--jobs N] [--out DIR] [--only ID_OR_PREFIX ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from corpus import ROOT, load_bugs


def charged(results: dict, own: str) -> tuple[list[str], bool]:
    """The areas other than `own` that failed, and whether `own` failed."""
    failed = [area for area, data in results["areas"].items() if data["status"] == "failed"]
    return [area for area in failed if area != own], own in failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corpus.blame", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="where the graded results go (default: a temporary folder)")
    parser.add_argument("--only", nargs="*", default=[], help="bug ids or id prefixes")
    parser.add_argument("--json", type=Path, help="write the per-bug verdicts here")
    options = parser.parse_args(argv)
    bugs = [b for b in load_bugs() if not b.advisory
            and (not options.only or any(b.id == o or b.id.startswith(o) for o in options.only))]
    out = options.out or Path(tempfile.mkdtemp(prefix="corpus-blame-"))
    submissions = out / "submissions"
    submissions.mkdir(parents=True, exist_ok=True)
    for bug in bugs:
        bug.write(submissions)
    command = [sys.executable, "-m", "conformance", "grade", str(submissions), "--each", "--out", str(out / "graded"),
               "--jobs", str(options.jobs)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=False)
    verdicts, spilled = {}, Counter()
    for bug in bugs:
        path = out / "graded" / bug.id / "results.json"
        if not path.exists():
            verdicts[bug.id] = {"area": bug.area, "error": "no results.json"}
            print(f"{bug.id:45} NO RESULTS")
            continue
        results = json.loads(path.read_text())
        others, own = charged(results, bug.area)
        advisories = [a for a in results.get("advisories", []) if "inherits" in a]
        verdicts[bug.id] = {"area": bug.area, "own_failed": own, "also_failed": others, "advisories": advisories,
                            "score": results["score"], "seconds": results.get("execution_time")}
        for area in others:
            spilled[area] += 1
        mark = "ok" if own and not others else ("NOT CAUGHT" if not own else "ALSO " + ", ".join(others))
        print(f"{bug.id:45} {bug.area:20} {results['score']:6.1f}  {mark}")
    alone = sum(1 for v in verdicts.values() if v.get("own_failed") and not v.get("also_failed"))
    print(f"\n{alone} of {len(bugs)} bugs charged to their own area only")
    if spilled:
        print("other areas failed: " + ", ".join(f"{area} {n}" for area, n in spilled.most_common()))
    if options.json:
        options.json.write_text(json.dumps(verdicts, indent=2))
    return 0 if alone == len(bugs) else 1


if __name__ == "__main__":
    sys.exit(main())
