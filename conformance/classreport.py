"""What an instructor reads after grading a class: `class.png` (every learner's areas, and how often each rubric
item passed) and `report.md` (the score distribution, each area's outcomes, the failures most learners share
with one example each). `conformance grade` writes both whenever it grades more than one submission."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from .areas import AREAS, RUBRIC
from .report import parts

STATUSES = ("passed", "failed", "missing")
COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "missing": "#bdbdbd"}
EXAMPLE_LINES = 6  # of a failure's output shown as its example


def load(out: Path, names: list[str]) -> dict[str, dict]:
    """Each graded submission's results.json, by name (one that cannot be read is left out)."""
    found = {}
    for name in sorted(names):
        try:
            found[name] = json.loads((out / name / "results.json").read_text())
        except (OSError, ValueError):
            continue
    return found


def write(out: Path, names: list[str]) -> list[Path]:
    """class.png and report.md in `out`, for the submissions `names` (their results.json); the paths written."""
    results = load(out, names)
    if len(results) < 2:
        return []
    (out / "report.md").write_text(report(results))
    heatmap(results, out / "class.png")
    return [out / "class.png", out / "report.md"]


def item_pass_rates(results: dict[str, dict]) -> dict[str, float]:
    return {i: sum(r["rubric"]["items"][i] == "passed" for r in results.values()) / len(results) for i in RUBRIC}


def heatmap(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(results)
    grid = [[STATUSES.index(results[n]["areas"][a]["status"]) for a in AREAS] for n in names]
    rates = item_pass_rates(results)
    height = 1.6 + 0.28 * len(names)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, height + 1.4),
                                         gridspec_kw={"height_ratios": [height, 1.0]})
    top.imshow(grid, cmap=ListedColormap([COLOURS[s] for s in STATUSES]), vmin=0, vmax=len(STATUSES) - 1,
               aspect="auto", interpolation="nearest")
    top.set_xticks(range(len(AREAS)), list(AREAS), rotation=30, ha="right")
    top.set_yticks(range(len(names)), [f"{n} ({results[n]['score']:g})" for n in names],
                   fontsize=8 if len(names) < 60 else 5)
    top.set_title(f"{len(names)} submissions: each area's status (score in brackets)")
    top.legend(handles=[Patch(color=COLOURS[s], label=s) for s in STATUSES], loc="upper left",
               bbox_to_anchor=(1.01, 1.0), fontsize=8)
    bottom.imshow([list(rates.values())], cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    bottom.set_xticks(range(len(rates)), [f"item {i}" for i in rates])
    bottom.set_yticks([])
    for x, rate in enumerate(rates.values()):
        bottom.text(x, 0, f"{rate:.0%}", ha="center", va="center", fontsize=9)
    bottom.set_title("share of submissions passing each rubric item")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def excerpt(output: str) -> str:
    """What a failure says: `report.parts`' "what differed" (no heading, failing example or reproduction)."""
    return "\n".join([line for line in parts(output)["differed"].splitlines() if line.strip()][:EXAMPLE_LINES])


def common_failures(results: dict[str, dict]) -> list[tuple[str, list[str], str]]:
    """Failed checks, most learners first: (check, the learners who failed it, one example output)."""
    failed: dict[str, list[str]] = {}
    example: dict[str, str] = {}
    for name, data in results.items():
        for test in data["tests"]:
            if test.get("outcome", test["status"]) == "failed":
                failed.setdefault(test["name"], []).append(name)
                example.setdefault(test["name"], f"{name}: {excerpt(test['output'])}")
    return sorted(((check, who, example[check]) for check, who in failed.items()), key=lambda f: (-len(f[1]), f[0]))


def report(results: dict[str, dict]) -> str:
    scores = [data["score"] for data in results.values()]
    passed_gate = sum(data["rubric"]["gate"] == "pass" for data in results.values())
    lines = [f"# Class report: {len(results)} submissions", "",
             f"- gate passed: {passed_gate} of {len(results)}",
             f"- score: mean {statistics.mean(scores):.1f}, median {statistics.median(scores):g}, "
             f"lowest {min(scores):g}, highest {max(scores):g}",
             "", "## Scores", "", "| score | submissions | |", "|---|---|---|"]
    buckets = Counter(min(int(score // 10), 9) for score in scores)
    for bucket in range(9, -1, -1):
        label = f"{bucket * 10}-{bucket * 10 + 9}" if bucket < 9 else "90-100"
        lines.append(f"| {label} | {buckets[bucket]} | {'#' * buckets[bucket]} |")
    lines += ["", "## Areas", "", "| area | passed | failed | missing |", "|---|---|---|---|"]
    for area in AREAS:
        counts = Counter(data["areas"][area]["status"] for data in results.values())
        lines.append(f"| `{area}` | {counts['passed']} | {counts['failed']} | {counts['missing']} |")
    rates = item_pass_rates(results)
    lines += ["", "## Rubric items", "", "| item | question | passed by |", "|---|---|---|"]
    lines += [f"| {i} | {RUBRIC[i].question} | {rate:.0%} |" for i, rate in rates.items()]
    lines += ["", "## Most common failures", ""]
    failures = common_failures(results)
    if not failures:
        lines.append("No check failed.")
    for check, who, example in failures:
        shown = ", ".join(who[:8]) + (f" and {len(who) - 8} more" if len(who) > 8 else "")
        lines += [f"### {check}: {len(who)} of {len(results)}", "", f"Learners: {shown}.", "", "Example:", "",
                  "```", example, "```", ""]
    return "\n".join(lines).rstrip() + "\n"
