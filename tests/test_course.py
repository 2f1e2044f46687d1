"""The course: a teaching track in build order (`nbs/NN_*.ipynb`) and a reference track (`nbs/reference/`), as
docs/course.py reads them from the layout of nbs/. Each lesson uses only what earlier lessons built, states its time
and prerequisites at its top, and links the lessons before and after it; the README lists both tracks."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
sys.path.insert(0, str(ROOT / "tests"))
import course  # noqa: E402
from test_structure import imports  # noqa: E402  module -> modules it imports, from cbir/*.py

TRACK = course.teaching_track()
REFERENCE = course.reference_track()


def underneath() -> set:
    "Reference modules that every lesson may use: those that import no module a lesson writes (core: errors, files)."
    taught = {course.module_of(p) for p in TRACK}
    edges, _ = imports()
    return {m for p in REFERENCE if (m := course.module_of(p)) and not edges.get(m, set()) & taught}


def available(k: int) -> set:
    """Modules lesson k may use: the lessons up to k, the reference modules underneath, and every reference module
    whose own imports are among those (e.g. `datasets`, which reads real datasets into lesson 01's `ImageSet`)."""
    edges, _ = imports()
    allowed = {course.module_of(p) for p in TRACK[:k + 1]} | underneath()
    refs = {course.module_of(p) for p in REFERENCE} - {None} - {course.module_of(p) for p in TRACK}  # taught: at their lesson
    while grow := {m for m in refs - allowed if edges.get(m, set()) <= allowed}: allowed |= grow
    return allowed


def test_tracks_are_in_place():
    assert [p.stem[:2] for p in TRACK] == [f"{i:02d}" for i in range(1, len(TRACK) + 1)], [p.name for p in TRACK]
    assert len(TRACK) >= 10 and len(REFERENCE) >= 3
    assert "core" in underneath()


@pytest.mark.parametrize("k", range(len(TRACK)), ids=[p.stem for p in TRACK])
def test_lesson_uses_only_what_earlier_lessons_built(k):
    "The visible cells import only modules written by this lesson, earlier ones, or reference modules built on those."
    allowed = available(k)
    later = {m: cells for m, cells in course.visible_imports(TRACK[k]).items() if m not in allowed}
    assert not later, f"{TRACK[k].name} uses modules of later lessons or of the reference track (module: cells): {later}"


def test_modules_depend_only_on_earlier_lessons():
    "The library itself follows the course order: a lesson's module imports only modules of earlier lessons."
    edges, _ = imports()
    for k, p in enumerate(TRACK):
        mod, built = course.module_of(p), available(k - 1) if k else underneath()
        assert edges[mod] <= built, f"cbir.{mod} ({p.name}) imports {sorted(edges[mod] - built)}, taught later"


@pytest.mark.parametrize("nb", TRACK, ids=[p.stem for p in TRACK])
def test_lesson_opens_with_time_prerequisites_objectives_and_ends_with_links(nb):
    head = course.source(course.cells(nb)[1])
    minutes = course.stated_minutes(nb)
    assert minutes is not None, f"{nb.name}: no '**Time:** about N minutes' in its second cell"
    assert minutes >= course.estimated_minutes(nb), (f"{nb.name} states {minutes} min; the reading model of "
                                                     f"docs/course.py estimates {course.estimated_minutes(nb)}")
    assert "**You will learn to**" in head and re.search(r"^1\. ", head, re.M), f"{nb.name}: no objectives"
    linked = set(re.findall(r"\]\((\d\d_\w+)\.ipynb\)", head.split("**You will learn to**")[0]))
    needed = {q.stem for q in TRACK if course.module_of(q) in course.visible_imports(nb) and q != nb}
    assert needed <= linked, f"{nb.name}: prerequisites do not link {sorted(needed - linked)}"
    k = TRACK.index(nb)
    foot = course.source(course.cells(nb)[-1])
    for other, word in ((TRACK[k - 1] if k else None, "Previous"), (TRACK[k + 1] if k + 1 < len(TRACK) else None, "Next")):
        if other is not None: assert f"**{word}:** [`{other.stem}`]({other.name})" in foot, f"{nb.name}: no {word} link"


def test_readme_lists_the_course_in_order_then_the_reference_track():
    "README's course table is the teaching track in order with each lesson's stated time; the reference track follows."
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    course_part, _, rest = text.partition("## The reference track")
    rows = re.findall(r"^\| \d+ \| \[`(\d\d_\w+)`\]\(nbs/\1\.ipynb\) \| (\d+) min \|", course_part, re.M)
    assert [r[0] for r in rows] == [p.stem for p in TRACK], rows
    assert [int(r[1]) for r in rows] == [course.stated_minutes(p) for p in TRACK]
    assert f"{sum(int(r[1]) for r in rows)} minutes" in course_part  # the total is stated
    linked = re.findall(r"\]\(nbs/reference/(\w+)\.ipynb\)", rest)
    assert linked == [p.stem for p in REFERENCE], linked


@pytest.mark.parametrize("nb", TRACK, ids=[p.stem for p in TRACK])
def test_lesson_ends_with_recap_and_checked_exercises(nb):
    "A recap, then 2-4 exercises: each a prompt that states what to expect, a visible solution, and a hidden check."
    cells = course.cells(nb)
    heads = [course.source(c).splitlines()[0] for c in cells if c["cell_type"] == "markdown" and course.source(c)]
    assert "## Recap" in heads and "## Exercises" in heads, f"{nb.name}: no recap or no exercises"
    assert heads.index("## Recap") < heads.index("## Exercises")
    found = course.exercises(nb)
    assert 2 <= len(found) <= 4, f"{nb.name}: {len(found)} exercises"
    for prompt, solution, check in found:
        assert "*Expected*" in course.source(cells[prompt]), f"{nb.name} cell {prompt}: the exercise states no expected result"
        assert cells[solution]["cell_type"] == "code" and not course.is_hidden(cells[solution]), f"{nb.name} cell {solution}"
        assert course.is_hidden(cells[check]) and re.search(r"\b(assert|test_eq|test_close|test_fail)\b", course.source(cells[check])), \
            f"{nb.name} cell {check}: the exercise's expectation is not checked by a hidden cell"
