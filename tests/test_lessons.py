"""The lessons as committed: executed, with readable figures and small outputs (what a learner sees on GitHub)."""
import ast
import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_"))
IDS = [str(p.relative_to(NBS)) for p in NOTEBOOKS]

MIN_WIDTH, MIN_HEIGHT = 300, 150  # px: below this a figure's titles and tick labels are unreadable at 100 % zoom
MAX_NOTEBOOK_BYTES = 2_000_000  # "well under 1-2 MB per notebook" (DESIGN.md §3)
SILENT_CALLS = ("test_", "plt.close", "torch.manual_seed", "torch.set_num_threads", "np.random.seed", "random.seed", "warnings.",
                "shutil.", "os.", "set_matplotlib_formats")  # calls that return None


def _directives(src: str) -> set:
    return {line[3:].strip().split(":")[0].strip() if ":" in line else line[3:].strip()
            for line in src.splitlines() if line.startswith("#|")}


def _runs(cell: dict) -> bool:
    "A code cell that nbdev-test executes (not `eval: false`)."
    src = "".join(cell["source"])
    return cell["cell_type"] == "code" and src.strip() and "#| eval: false" not in src and "#|eval: false" not in src


def _hidden(cell: dict) -> bool:
    "A `#| hide` cell: it runs, but a reader never sees it or its output."
    return any(line.strip() in ("#| hide", "#|hide") for line in "".join(cell["source"]).splitlines())


def _meant_to_show(src: str) -> bool:
    "The cell ends in an expression whose value Jupyter displays, or it draws, prints or displays something."
    code = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
    try: tree = ast.parse(code)
    except SyntaxError: return False
    if not tree.body: return False
    top = [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    calls = {ast.unparse(n.func) for s in top for n in ast.walk(s) if isinstance(n, ast.Call)}
    if any(c in ("print", "display", "plt.show") or c.split(".")[-1].startswith(("show_", "plot_")) for c in calls): return True
    last = tree.body[-1]
    if not isinstance(last, ast.Expr) or code.rstrip().endswith(";"): return False
    if isinstance(last.value, ast.Call):
        name = ast.unparse(last.value.func)
        if name.startswith(SILENT_CALLS) or name.split(".")[-1].startswith("test_"): return False
    return True


def _cells(nb_path: Path):
    return json.loads(nb_path.read_text())["cells"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_lesson_is_committed_executed(nb):
    "Every cell that would show something when run has its output committed, and no error output is committed."
    cells = _cells(nb)
    missing, errors = [], []
    for i, c in enumerate(cells):
        if not _runs(c): continue
        src = "".join(c["source"])
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])): errors.append(i)
        if _meant_to_show(src) and not c.get("outputs") and not _hidden(c): missing.append(f"cell {i}: {src.splitlines()[-1][:70]!r}")
    assert not errors, f"{nb.name}: cells {errors} were committed with an error output"
    assert not missing, (f"{nb.name} was committed without the outputs of {len(missing)} cells that display something "
                         f"(execute it and save, e.g. `nbdev-test --path {nb.relative_to(NBS.parent)} --save`):\n" + "\n".join(missing))


def _images(nb_path: Path):
    for i, c in enumerate(_cells(nb_path)):
        for o in c.get("outputs", []):
            for mime in ("image/png", "image/jpeg"):
                if mime in o.get("data", {}):
                    yield i, Image.open(io.BytesIO(base64.b64decode(o["data"][mime])))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_lesson_figures_are_readable_and_small(nb):
    "Committed figures are big enough to read, and the notebook stays small enough to load on GitHub."
    small = [f"cell {i}: {im.size[0]}x{im.size[1]} px" for i, im in _images(nb)
             if im.size[0] < MIN_WIDTH or im.size[1] < MIN_HEIGHT]
    assert not small, f"{nb.name}: figures smaller than {MIN_WIDTH}x{MIN_HEIGHT} px (raise figsize or dpi): {small}"
    size = nb.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, f"{nb.name} is {size / 1e6:.1f} MB; keep committed outputs under {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB"


def test_lessons_have_figures():
    "A course about images shows pictures: each lesson that draws (calls a show_/plot_ function) has at least one committed figure."
    bare = []
    for nb in NOTEBOOKS:
        cells = _cells(nb)
        draws = any(_runs(c) and not re.search(r"^#\|\s*export", "".join(c["source"]), re.M)  # a definition draws nothing
                    and re.search(r"\b(show_(?!doc\b)\w+|plot_\w+|plt\.\w+)\(", "".join(c["source"])) for c in cells)
        if draws and not any(True for _ in _images(nb)): bare.append(nb.name)
    assert not bare, f"these lessons draw figures but none is committed: {bare}"
