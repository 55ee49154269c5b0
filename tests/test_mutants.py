"""A fixed sample of the mutation benchmark's mutants (`benchmarks/mutant_sample.toml`), graded in every CI run.

`python -m benchmarks.mutation` grades every mutant of `corpus/correct/course_template.py` in about an hour; this
keeps a spread of them (every area, every operator) honest in minutes. Each killed mutant of the sample must still be
killed, at the default profile, by the check that killed it in the full run; each equivalent one must still pass the
checks of its name, so the equivalent list stays true.
"""

from __future__ import annotations

import functools
import tomllib

import pytest

from benchmarks import mutation
from benchmarks.mutation import BASE, EQUIVALENT, OPERATORS, Mutant, generate, load_equivalent
from corpus import ROOT, grade

pytestmark = pytest.mark.slow  # grades whole submissions: not in the fast lane (`-m 'not slow'`)

SAMPLE = tomllib.loads((ROOT / "benchmarks" / "mutant_sample.toml").read_text())
KILLED = SAMPLE["killed"]
EQUIVALENT_SAMPLE = SAMPLE["equivalent"]


graded_areas = functools.cache(mutation.graded_areas)


@functools.cache
def mutants() -> dict[str, tuple[Mutant, int, int]]:
    return {m.id: (m, start, end) for m, start, end in generate(BASE.read_text(), set(graded_areas()))}


def write(ident: str, folder) -> tuple[Mutant, object]:
    assert ident in mutants(), f"{ident} is no longer a mutant of {BASE.name}: choose the sample again"
    mutant, start, end = mutants()[ident]
    path = folder / (ident.replace(":", "__") + ".py")
    path.write_text(mutant.apply(BASE.read_text(), start, end))
    return mutant, path


@pytest.mark.parametrize("entry", KILLED, ids=[e["id"] for e in KILLED])
def test_a_sampled_mutant_is_still_killed_by_its_check(entry, tmp_path):
    mutant, path = write(entry["id"], tmp_path)
    area = graded_areas()[mutant.definition]
    data = grade(path, [area], tmp_path, "-k", entry["check"], profile="conformance", fork=True)
    ran = [t for t in data["tests"] if t["outcome"] != "pending" and entry["check"] in t["name"]]
    assert ran, f"{entry['check']} did not run on {mutant.id}: {[t['name'] for t in data['tests']]}"
    assert any(t["outcome"] == "failed" for t in ran), (
        f"{mutant.id} ({mutant.before!r} -> {mutant.after!r}) survives {entry['check']} now; it killed it in the "
        "full run: " + "; ".join(f"{t['name']}: {t['outcome']}" for t in ran))
    assert not data.get("harness_errors"), data["harness_errors"]


@pytest.mark.parametrize("entry", EQUIVALENT_SAMPLE, ids=[e["id"] for e in EQUIVALENT_SAMPLE])
def test_a_sampled_equivalent_mutant_passes_the_checks_of_its_name(entry, tmp_path):
    mutant, path = write(entry["id"], tmp_path)
    assert mutant.id in load_equivalent(), f"{mutant.id} is not listed in {EQUIVALENT.name}"
    area = graded_areas()[mutant.definition]
    data = grade(path, [area], tmp_path, "-k", entry["checks"], profile="conformance", fork=True)
    ran = [t for t in data["tests"] if t["name"].startswith(f"{area}: test_")]  # not the other areas' placeholders
    assert ran and all(t["outcome"] == "passed" for t in ran), [(t["name"], t["output"][:800]) for t in ran
                                                                  if t["outcome"] != "passed"]


def test_the_sample_spreads_over_every_area_and_operator():
    chosen = [mutants()[e["id"]][0] for e in KILLED]
    areas = graded_areas()
    assert {areas[m.definition] for m in chosen} == set(areas.values())
    assert {m.operator for m in chosen} == set(OPERATORS)
    assert len({e["id"] for e in KILLED + EQUIVALENT_SAMPLE}) == len(KILLED + EQUIVALENT_SAMPLE)
