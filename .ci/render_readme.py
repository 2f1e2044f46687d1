"""Render README.md from nbs/index.ipynb without quarto.

nbdev's own cell processors hide `#| hide` cells, strip directives and `#| export` markers,
then nbconvert writes markdown. Relative links in the notebook (`01_data.ipynb`) are relative to nbs/,
so they get an `nbs/` prefix in README.md, which sits one folder up. `python .ci/render_readme.py` rewrites README.md;
`python .ci/render_readme.py --check` exits 1 when README.md is out of date.
"""
import re
import sys
from pathlib import Path

from nbconvert.exporters import MarkdownExporter
from nbdev.process import NBProcessor
from nbdev.processors import clean_magics, filter_stream_, hide_, hide_line, rm_export, rm_header_dash, strip_ansi
import nbformat

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by .ci/render_readme.py: edit the notebook, not this file. -->\n\n"


def render_readme(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "Markdown for README.md from the index notebook."
    proc = NBProcessor(nb_path, [strip_ansi, hide_, hide_line, filter_stream_, clean_magics, rm_header_dash, rm_export],
                       rm_directives=True)
    proc.process()
    cells = [c for c in proc.nb.cells if c.get("source", "").strip() or c.get("outputs")]
    meta = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
            "language_info": {"name": "python"}}
    nb = nbformat.from_dict(dict(nbformat=4, nbformat_minor=5, metadata=meta,
                                 cells=[_plain(c, n) for n, c in enumerate(cells)]))
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return HEADER + relink(body.strip(), nb_path.parent.relative_to(ROOT).as_posix()) + "\n"


def relink(md: str, prefix: str) -> str:
    "Prefix relative markdown links (`[x](01_data.ipynb)`) with the notebook's folder, `prefix`."
    return re.sub(r"\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)", lambda m: f"]({prefix}/{m.group(1)})", md)


def _plain(cell, n: int) -> dict:
    "Turn a processed nbdev cell back into a plain nbformat dict."
    d = {"id": f"cell-{n}", "cell_type": cell.cell_type, "metadata": {}, "source": cell.source}
    if cell.cell_type == "code":
        d.update(execution_count=None, outputs=[dict(o) for o in cell.get("outputs", [])])
    return d


if __name__ == "__main__":
    text = render_readme()
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python .ci/render_readme.py`.")
    else:
        readme.write_text(text, encoding="utf-8")
