"""mkdocs hooks that turn the notebooks into the cbir docs site (`mkdocs build --strict`, output in site/).

- The lessons are `nbs/*.ipynb` and `nbs/tutorials/*.ipynb` as committed: their outputs are rendered, they are never
  executed. nbdev's own cell processors (the ones `.ci/render_readme.py` uses) drop `#| hide` cells and directive
  lines; `show_doc` cells keep only their output; widget outputs fall back to their text (no widget JS from a CDN).
- The navigation follows the two tracks of docs/course.py (the course in build order, projects, then the reference
  notebooks) and lists every API page, so a new notebook appears without editing mkdocs.yml.
- The API reference is one generated page per public `cbir` module, rendered by mkdocstrings from the imported
  module (so methods attached with fastcore's `@patch` are listed under their class).
- Links between notebooks (`06_search.ipynb#k-reciprocal`) become links between pages, and nbdev's `[source]` links
  (`/blob/main/cbir/x.py#L10`, which point nowhere without a `git_url`) go to the module's API page.
- MathJax is served from the site itself (copied from the `jupyter-server-mathjax` package), not from a CDN.
"""
from __future__ import annotations

import json
import pkgutil
import re
import shutil
import sys
from pathlib import Path, PurePosixPath

import nbformat
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import course  # noqa: E402  the two tracks, read from the layout of nbs/

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
PROCESSED = ROOT / ".cache" / "docs-nbs"  # notebooks after nbdev's processors; mkdocs-jupyter renders these
MATHJAX_MARK = "mathjax-local/"
MATHJAX_CONFIG = "MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def lesson_paths() -> list[PurePosixPath]:
    "Every notebook the site renders, relative to nbs/: the home page, the teaching track, the projects, the reference track."
    found = [NBS / "index.ipynb"] + course.teaching_track() + course.projects() + course.reference_track()
    return [PurePosixPath(p.relative_to(NBS).as_posix()) for p in found if not p.name.startswith(("_", "."))]


def api_modules() -> list[str]:
    "The public modules of the cbir package."
    import cbir
    return [f"cbir.{m.name}" for m in pkgutil.iter_modules(cbir.__path__) if not m.name.startswith("_")]


def _title(rel: PurePosixPath) -> str:
    "Navigation title of a notebook: its first `# heading`, prefixed with the lesson number."
    nb = json.loads((NBS / rel).read_text(encoding="utf-8"))
    h1 = next((line[2:].strip() for c in nb["cells"] if c["cell_type"] == "markdown"
               for line in "".join(c["source"]).splitlines() if line.startswith("# ")), rel.stem)
    num = rel.stem.split("_")[0]
    return f"{num} · {h1}" if rel.parent == PurePosixPath(".") and num[:2].isdigit() else h1


def process_notebook(src: Path) -> nbformat.NotebookNode:
    "A notebook as the site shows it: hidden cells and directives removed, outputs untouched."
    from nbdev.process import NBProcessor
    from nbdev.processors import clean_magics, filter_stream_, hide_, hide_line, rm_header_dash, strip_ansi
    proc = NBProcessor(src, [strip_ansi, hide_, hide_line, filter_stream_, clean_magics, rm_header_dash],
                       rm_directives=True)
    proc.process()
    nb = nbformat.from_dict(json.loads(json.dumps(proc.nb)))  # plain nbformat nodes, no nbdev attributes
    nb.metadata.pop("widgets", None)  # its presence makes nbconvert load the widget manager from a CDN
    cells = []
    for cell in nb.cells:
        if not cell.get("source", "").strip() and not cell.get("outputs"): continue
        for key in [k for k in cell if k.endswith("_")]: del cell[key]  # nbdev bookkeeping (directives_, idx_)
        cell.metadata = nbformat.NotebookNode({"tags": cell.metadata["tags"]} if "tags" in cell.metadata else {})
        if cell.cell_type == "code":
            if cell.source.lstrip().startswith("show_doc("):
                cell.metadata.setdefault("tags", []).append("remove_input")
            for out in cell.get("outputs", []):
                if WIDGET_VIEW in out.get("data", {}):
                    del out["data"][WIDGET_VIEW]
                    out["data"]["text/plain"] = "(an interactive widget: run the notebook in Jupyter to use it)"
        cells.append(cell)
    nb.cells = cells
    return nb


def _write_if_changed(path: Path, text: str):
    "Write `text` unless the file already holds it (keeps mtimes, and mkdocs-jupyter's cache, stable)."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text: path.write_text(text, encoding="utf-8")


def on_config(config):
    "Navigation: home, the course (teaching track), projects, the reference track, API reference; MathJax from the site."
    entry = lambda p: {_title(PurePosixPath(p.relative_to(NBS).as_posix())): p.relative_to(NBS).as_posix()}
    api = [{"Overview": "api/index.md"}] + [{m: f"api/{m}.md"} for m in api_modules()]
    config["nav"] = [{"Home": "index.ipynb"}, {"Course": [entry(p) for p in course.teaching_track()]},
                     {"Projects": [entry(p) for p in course.projects()]},
                     {"Reference": [entry(p) for p in course.reference_track()]}, {"API reference": api}]
    config["plugins"]["mkdocs-jupyter"].config["custom_mathjax_url"] = MATHJAX_MARK + MATHJAX_CONFIG
    config["plugins"]["mkdocs-jupyter"].config["remove_tag_config"] = {"remove_input_tags": ["remove_input"]}
    return config


def _api_page(mod: str) -> str:
    "Markdown of one API page: mkdocstrings renders the module."
    return f"# `{mod}`\n\n::: {mod}\n    options:\n      show_root_heading: false\n"


def _api_index(mods: list[str]) -> str:
    "Markdown of the API overview: each module, its one-line summary and the lesson that teaches it."
    import importlib
    lesson_of = {}
    for rel in lesson_paths():
        m = re.search(r"#\|\s*default_exp\s+(\S+)", (NBS / rel).read_text(encoding="utf-8"))
        if m: lesson_of[f"cbir.{m.group(1)}"] = rel
    rows = ["# API reference", "",
            "Every public function, class and method of `cbir`, by module. Each module is written in the lesson "
            "named next to it, which shows each definition on real data.", "",
            "| module | what it holds | lesson |", "|---|---|---|"]
    for mod in mods:
        doc = (importlib.import_module(mod).__doc__ or "").strip().splitlines()
        rel = lesson_of.get(mod)
        lesson = f"[{rel.stem}](../{rel})" if rel else ""
        rows.append(f"| [`{mod}`]({mod}.md) | {doc[0] if doc else ''} | {lesson} |")
    return "\n".join(rows) + "\n"


@event_priority(100)  # before mkdocs-jupyter's on_files, which claims the .ipynb files
def on_files(files: Files, config) -> Files:
    "Add the processed notebooks and the generated API pages to the site's files."
    for rel in lesson_paths():
        out = PROCESSED / rel
        _write_if_changed(out, nbformat.writes(process_notebook(NBS / rel)))
        files.append(File(str(rel), src_dir=str(PROCESSED), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    mods = api_modules()
    files.append(File.generated(config, "api/index.md", content=_api_index(mods)))
    for mod in mods:
        files.append(File.generated(config, f"api/{mod}.md", content=_api_page(mod)))
    return files


_HREF = re.compile(r'(href|src)="([^"]*)"')


def on_page_content(html: str, page, config, files: Files) -> str:
    "Point links to notebooks at their pages, and nbdev's `/blob/main/cbir/x.py` links at the API page of x."
    here = PurePosixPath(page.file.src_uri).parent

    def fix(m):
        attr, url = m.groups()
        target, _, anchor = url.partition("#")
        if target.startswith("/blob/") and target.endswith(".py"):
            dest = files.get_file_from_path(f"api/cbir.{PurePosixPath(target).stem}.md")
            return f'{attr}="{dest.url_relative_to(page.file)}"' if dest else m.group(0)
        if target.endswith(".ipynb") and "://" not in target and not target.startswith("/"):
            path = PurePosixPath(*[p for p in (here / target).parts])
            norm = str(PurePosixPath(*_normalise(path.parts)))
            dest = files.get_file_from_path(norm)
            if dest: return f'{attr}="{dest.url_relative_to(page.file)}{"#" + anchor if anchor else ""}"'
        return m.group(0)

    return _HREF.sub(fix, html)


def _normalise(parts) -> list[str]:
    "Resolve `.` and `..` in a relative path."
    out = []
    for p in parts:
        if p == "..": out = out[:-1]
        elif p not in (".", ""): out.append(p)
    return out


# The packaged MathJax 2 ships only the STIX-Web fonts, so use them rather than fetch the TeX ones.
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: ["STIX-Web"], '
                 'preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null}});</script>\n')


def on_post_page(output: str, page, config) -> str:
    "Load MathJax from the site's own copy, relative to the page."
    if MATHJAX_MARK not in output: return output
    tag = f'<script src="{MATHJAX_MARK}'
    return output.replace(tag, MATHJAX_FONTS + tag, 1).replace(MATHJAX_MARK, get_relative_url("assets/mathjax/", page.url))


def on_post_build(config):
    "Copy MathJax (from the jupyter-server-mathjax package) into the site."
    import jupyter_server_mathjax
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(src, Path(config["site_dir"]) / "assets" / "mathjax", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("localization", "*.md"))
