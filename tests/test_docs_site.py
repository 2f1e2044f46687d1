"""The docs site: built offline by `mkdocs build --strict`, opened in a real headless browser, every internal link checked.

The browser is Debian's chromium (`apt-get install chromium`) driven by Playwright's Python package; Playwright's own
browser download needs the network, so it is not used. Without chromium the browser tests skip locally and fail in CI.
Screenshots of the home page and of a lesson figure are written under `site/_check/` and their paths printed.
"""
import fcntl
import functools
import http.server
import os
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import course  # noqa: E402  the two tracks
SITE = ROOT / "site"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # plus --headless, which Playwright adds itself
LESSON = "07_viz/"  # a lesson that draws: result grids, metric@K curves, the embedding map
MATH_LESSON = "04_metrics/"


def _missing(what: str):
    "Fail in CI (CI=true), skip elsewhere."
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"): pytest.fail(f"{what} (CI must run the docs checks)")
    pytest.skip(what)


def _sources() -> list[Path]:
    "Everything the site is built from."
    pats = ["nbs/*.ipynb", "nbs/tutorials/*.ipynb", "nbs/reference/*.ipynb", "docs/*.py", "docs/stylesheets/*.css", "cbir/*.py", "mkdocs.yml"]
    return [p for pat in pats for p in ROOT.glob(pat)]


def build_site() -> Path:
    "Build the site unless it is newer than every notebook, module and docs file (one builder at a time)."
    SITE.parent.joinpath(".cache").mkdir(exist_ok=True)
    with open(ROOT / ".cache" / "docs-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = SITE / "index.html"
        if stamp.exists() and stamp.stat().st_mtime >= max(p.stat().st_mtime for p in _sources()): return SITE
        try: import mkdocs  # noqa: F401
        except ImportError: _missing('mkdocs is not installed: pip install -e ".[dev]"')
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
        stamp.touch()
    return SITE


@pytest.fixture(scope="module")
def site() -> Path: return build_site()


@pytest.fixture(scope="module")
def server(site):
    "The built site served on localhost by http.server, in a thread."
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    "A Playwright context on Debian's chromium with an empty profile; requests off localhost are aborted and listed."
    if not CHROMIUM.exists(): _missing(f"{CHROMIUM} not found: apt-get install -y chromium")
    try: from playwright.sync_api import sync_playwright
    except ImportError: _missing('playwright is not installed: pip install -e ".[dev]"')
    pw = sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("chromium-profile")), headless=True,
                                                executable_path=str(CHROMIUM), args=FLAGS,
                                                viewport={"width": 1280, "height": 900})
    ctx.external = []

    def route(r):
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"): return r.continue_()
        ctx.external.append(r.request.url)
        return r.abort()

    ctx.route("**/*", route)
    yield ctx
    ctx.close()
    pw.stop()


def _open(ctx, url: str):
    "Open `url`, wait until the network is idle; return the page and the console errors it logged."
    page = ctx.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    resp = page.goto(url, wait_until="networkidle")
    assert resp is not None and resp.ok, f"{url}: HTTP {resp and resp.status}"
    return page, errors


_IMAGES = """(sel) => Array.from(document.querySelectorAll(sel)).map(
    i => ({src: i.getAttribute('src').slice(0, 60), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))"""


def _screenshot(target, site: Path, name: str, what: str) -> Path:
    "Save a screenshot of `target` (a page or an element) under site/_check/ and print where, for the closing note."
    shot = site / "_check" / name
    shot.parent.mkdir(exist_ok=True)
    target.screenshot(path=str(shot))
    print(f"\nscreenshot of {what}: {shot}")
    return shot


def _real_errors(errors: list) -> list:
    "Console errors, less MathJax 2's probe for locally installed fonts (an about:blank URL chromium refuses: harmless)."
    return [e for e in errors if "about:blank" not in e and e != "Failed to load resource: net::ERR_FAILED"]


def _check_images(page, min_figures: int):
    "Every image loaded (complete, naturalWidth > 0); at least `min_figures` in the article."
    imgs = page.evaluate(_IMAGES, "img")
    bad = [i for i in imgs if not (i["complete"] and i["w"] > 0)]
    assert not bad, f"{page.url}: images that did not load: {bad}"
    figs = page.evaluate(_IMAGES, "article img")
    assert len(figs) >= min_figures, f"{page.url}: {len(figs)} figures, expected at least {min_figures}"
    return figs


def test_home_page_renders(browser, server, site):
    "The home page shows the README's content, links every lesson, and loads without errors or network."
    page, errors = _open(browser, server)
    assert "cbir" in page.title()
    text = page.inner_text("article")
    assert "Quick start" in text and "The course" in text and "The reference track" in text
    hrefs = [h.rstrip("/") for h in page.eval_on_selector_all("article a", "as => as.map(a => a.getAttribute('href'))") if h]
    lessons = [p.relative_to(ROOT / "nbs").with_suffix("").as_posix() for p in course.teaching_track() + course.reference_track()]
    missing = [n for n in lessons if not any(h.endswith(n) for h in hrefs)]
    assert not missing, f"home page does not link lessons {missing}"
    tables = page.eval_on_selector_all("article table", "ts => ts.map(t => [...t.querySelectorAll('a')].map(a => a.getAttribute('href')))")
    tables = [[h.rstrip("/") for h in t if h] for t in tables]
    names = lambda ps: [p.relative_to(ROOT / "nbs").with_suffix("").as_posix() for p in ps]
    def order_in(table, wanted):  # the position of each wanted notebook's first link in a table (-1: missing)
        return [next((i for i, h in enumerate(table) if h.endswith(n)), -1) for n in wanted]
    course_table = next(t for t in tables if any(h.endswith(names(course.teaching_track())[0]) for h in t))
    reference_table = next(t for t in tables[tables.index(course_table) + 1:]
                           if any(h.endswith(names(course.reference_track())[0]) for h in t))
    for table, wanted in ((course_table, names(course.teaching_track())), (reference_table, names(course.reference_track()))):
        first = order_in(table, wanted)
        assert -1 not in first and first == sorted(first), "the home page's tables list the course out of order, or the reference track before it"
    _check_images(page, 0)
    assert not errors, f"console errors on the home page: {errors}"
    assert not browser.external, f"the home page asked the network for {browser.external}"
    _screenshot(page, site, "home.png", "the home page")
    page.close()


def test_lesson_renders_with_figures(browser, server, site):
    "A lesson that draws shows its committed figures, all loaded, with no console error and no network request."
    page, errors = _open(browser, urljoin(server, LESSON))
    figs = _check_images(page, 1)
    assert max(f["w"] for f in figs) >= 300, f"figures too small: {figs}"
    errors = _real_errors(errors)
    assert not errors, f"console errors on {LESSON}: {errors}"
    assert not browser.external, f"{LESSON} asked the network for {browser.external}"
    big = page.locator("article img").nth(max(range(len(figs)), key=lambda i: figs[i]["w"] * figs[i]["h"]))
    big.scroll_into_view_if_needed()
    _screenshot(big, site, "lesson_figure.png", f"a figure in lesson {LESSON.strip('/')}")
    page.close()


def test_math_renders_offline(browser, server, site):
    "MathJax comes from the site itself and typesets the formulas of the metrics lesson."
    page, errors = _open(browser, urljoin(server, MATH_LESSON))
    page.wait_for_function("() => document.querySelectorAll('.MathJax, .MathJax_Display, mjx-container').length > 0",
                           timeout=30_000)
    errors = _real_errors(errors)
    assert not errors, f"console errors on {MATH_LESSON}: {errors}"
    page.locator(".MathJax_Display, .MathJax").first.scroll_into_view_if_needed()
    _screenshot(page, site, "math.png", "typeset formulas")
    assert not browser.external, f"{MATH_LESSON} asked the network for {browser.external}"
    page.close()


class _Links(HTMLParser):
    "The href/src values of a page, with the ids it defines."
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key) is not None: self.links.append((tag, key, a[key]))


def _target(page: Path, url: str, site: Path) -> Path | None:
    "The file an internal link points to, or None for an external one."
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("#", "mailto:", "javascript:", "data:")): return None
    rel = unquote(parts.path)
    base = page.parent if not rel.startswith("/") else site
    target = (base / rel.lstrip("/")).resolve()
    return target / "index.html" if rel.endswith("/") or target.is_dir() else target


def test_no_broken_internal_links(site):
    "Every href/src of every built page that stays on the site points to a file that exists; nothing loads off-site."
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20, f"only {len(pages)} pages built"
    broken, offsite = [], []
    for page in pages:
        p = _Links()
        p.feed(page.read_text(encoding="utf-8"))
        for tag, key, url in p.links:
            target = _target(page, url, site)
            if target is None:
                if key == "src" or (tag == "link" and urlsplit(url).scheme in ("http", "https")):
                    if not url.startswith("data:"): offsite.append(f"{page.relative_to(site)}: {tag} {url}")
                continue
            if not target.exists() or site.resolve() not in target.parents:
                broken.append(f"{page.relative_to(site)}: {tag} {key}={url}")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])
    assert not offsite, "pages that load from the network:\n" + "\n".join(offsite[:40])


def test_every_notebook_and_module_has_a_page(site):
    "Each lesson, tutorial and public cbir module is on the site."
    import pkgutil
    import cbir
    want = [p.relative_to(ROOT / "nbs").with_suffix("") for p in ROOT.glob("nbs/**/*.ipynb")
            if p.stem != "index" and "_out" not in p.parts and not p.name.startswith((".", "_"))]
    want += [PurePosixPath("api") / f"cbir.{m.name}" for m in pkgutil.iter_modules(cbir.__path__)
             if not m.name.startswith("_")]
    missing = [str(w) for w in want if not (site / w / "index.html").exists()]
    assert not missing, f"no page for {missing}"


_WIDE = """() => Array.from(document.querySelectorAll('article pre')).filter(p => p.scrollWidth > p.clientWidth + 1).map(
    p => ({kind: p.closest('.jp-OutputArea') ? 'output' : 'code', over: p.scrollWidth - p.clientWidth,
           line: p.innerText.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 80)}))"""


def test_teaching_track_code_does_not_scroll_sideways(browser, server):
    "At a 1280-px window no code block or text output of a teaching lesson needs a horizontal scroll bar."
    wide, page = {}, browser.new_page()
    for nb in course.teaching_track():  # layout needs the page and its fonts loaded, not the network idle
        resp = page.goto(urljoin(server, f"{nb.stem}/"), wait_until="load")
        assert resp is not None and resp.ok, f"{nb.stem}: HTTP {resp and resp.status}"
        page.evaluate("document.fonts.ready.then(() => true)")
        if found := page.evaluate(_WIDE): wide[nb.stem] = found
    page.close()
    assert not wide, "blocks that scroll sideways at 1280 px:\n" + "\n".join(
        f"{stem}: {len(f)} ({sum(x['kind'] == 'code' for x in f)} code), e.g. {f[0]}" for stem, f in wide.items())
