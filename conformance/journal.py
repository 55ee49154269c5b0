"""A harness's checks journal: how `conformance grade` learns what a harness found, even one stopped early.

The harness appends a JSON line for each change (a check's entry, what loading said, once its provenance), so
writing costs the same after its last check as after its first; a later line for the same check replaces the
earlier one. Neither side imports torch: `grade` reads journals before it has started anything.
"""

from __future__ import annotations

import json
from pathlib import Path


def append(path: Path, lines: list[dict], *, new: bool = False) -> None:
    """Append these lines (`{"entry": [nodeid, entry]}`, `{"load": ...}` or `{"provenance": ...}`); `new`: start the
    journal afresh."""
    with open(path, "w" if new else "a") as journal:
        journal.write("".join(json.dumps(line) + "\n" for line in lines))


def read(path: Path) -> tuple[list[dict], dict | None, dict | None]:
    """The entries, in the order of their checks, what loading said, and the provenance. A line cut short by the
    harness's end is left out."""
    entries: dict[str, dict] = {}
    load = graded_by = None
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if "entry" in line:
            nodeid, entry = line["entry"]
            entries[nodeid] = entry
        elif "load" in line:
            load = line["load"]
        elif "provenance" in line:
            graded_by = line["provenance"]
    return list(entries.values()), load, graded_by
