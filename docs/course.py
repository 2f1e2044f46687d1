"""The course's two tracks, read from the layout of nbs/ (one place: the docs site, the README test and the lesson tests use it).

- **Teaching track**: `nbs/NN_name.ipynb`, in the order of NN. Each lesson uses only what earlier lessons built.
- **Reference track**: `nbs/reference/*.ipynb`, the internals (file formats, robust reading, services, the CLI).
  A lesson may leave its module's source to the reference track: a lesson `NN_name.ipynb` without a `default_exp`
  teaches `cbir.name`, exported by a reference notebook (it *builds* that module, for the build order), and shows it in use.
- **Projects**: `nbs/tutorials/*.ipynb`, end-to-end walkthroughs that only use the package.

Each lesson states its time in its first cells as `**Time:** about N minutes`, and ends with `## Recap` and
`## Exercises`: 2-4 `### Exercise N` cells, each followed by a visible solution and a hidden cell that checks it.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

NBS = Path(__file__).resolve().parent.parent / "nbs"
EXERCISE = re.compile(r"^### Exercise \d+", re.M)
TIME = re.compile(r"\*\*Time:\*\*\s*about\s+(\d+)\s+minutes")
IMPORT = re.compile(r"^\s*(?:from\s+cbir\.(\w+)\s+import|import\s+cbir\.(\w+)|from\s+cbir\s+import\s+(\w+))", re.M)


def teaching_track() -> list[Path]:
    "The lessons a course runs, in order."
    return sorted(p for p in NBS.glob("[0-9][0-9]_*.ipynb"))


def reference_track() -> list[Path]:
    "The internals, each in a notebook of its own."
    return sorted((NBS / "reference").glob("*.ipynb"))


def projects() -> list[Path]:
    "End-to-end walkthroughs that use the package."
    return sorted((NBS / "tutorials").glob("*.ipynb"))


def cells(nb: Path) -> list[dict]:
    path = Path(nb).resolve()
    return list(_cells(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=None)
def _cells(path: Path, mtime_ns: int) -> tuple:  # each version of a notebook is read once (the tests ask many times)
    return tuple(json.loads(path.read_text(encoding="utf-8"))["cells"])


def source(cell: dict) -> str:
    return "".join(cell["source"])


def is_hidden(cell: dict) -> bool:
    return any(line.strip() in ("#| hide", "#|hide") for line in source(cell).splitlines())


def module_of(nb: Path) -> str | None:
    """The cbir module a notebook writes (its `#| default_exp`), if any; for a lesson `NN_name` without one, `name`,
    whose source is in the reference notebook that exports it (`source_notebook`)."""
    for c in cells(nb):
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", source(c), re.M)
        if m: return m.group(1)
    paired = source_notebook(nb)
    return module_of(paired) if paired != nb else None


def source_notebook(nb: Path) -> Path:
    """The notebook that holds the source of what a lesson teaches: the lesson itself, or, for a lesson `NN_name`
    without a `default_exp`, the reference notebook that exports `cbir.name`."""
    nb = Path(nb).resolve()
    if nb.parent == NBS and re.match(r"\d\d_", nb.stem) and not any(re.search(r"^#\|\s*default_exp", source(c), re.M) for c in cells(nb)):
        for ref in reference_track():
            if module_of(ref) == nb.stem[3:]: return ref
    return nb


def visible_imports(nb: Path) -> dict[str, list[int]]:
    "cbir modules imported by the cells a reader sees: module -> cell indices."
    out: dict[str, list[int]] = {}
    for i, c in enumerate(cells(nb)):
        if c["cell_type"] != "code" or is_hidden(c): continue
        for m in IMPORT.finditer(source(c)):
            name = next(g for g in m.groups() if g)
            if not name.startswith("_"): out.setdefault(name, []).append(i)
    return out


def stated_minutes(nb: Path) -> int | None:
    "The learner time a lesson states at its top (`**Time:** about N minutes`)."
    for c in cells(nb)[:4]:
        if c["cell_type"] == "markdown" and (m := TIME.search(source(c))): return int(m.group(1))
    return None


def estimated_minutes(nb: Path) -> int:
    """Learner time by a fixed reading model: visible prose at 150 words a minute, visible code at 12 lines a minute
    (reading it and running it), 5 minutes per exercise; `show_doc` cells and hidden cells are not read."""
    words = lines = exercises = 0
    for c in cells(nb):
        s = source(c)
        if is_hidden(c): continue
        if c["cell_type"] == "markdown":
            words += len(re.findall(r"\w+", s))
            exercises += len(EXERCISE.findall(s))
        elif not s.lstrip().startswith("show_doc("):
            lines += sum(1 for line in s.splitlines() if line.strip() and not line.startswith("#|"))
    return round(words / 150 + lines / 12 + 5 * exercises)


def exercises(nb: Path) -> list[tuple[int, int, int]]:
    "(prompt, solution, check) cell indices of each `### Exercise N` of a lesson."
    cs = cells(nb)
    out = []
    for i, c in enumerate(cs):
        if c["cell_type"] == "markdown" and EXERCISE.match(source(c)):
            out.append((i, i + 1, i + 2))
    return out
