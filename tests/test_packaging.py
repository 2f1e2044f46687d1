"""Packaging: one version, README in sync with its notebook and with .ci/run, the console script."""
import configparser
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import cbir

ROOT = Path(__file__).resolve().parent.parent


def _settings():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return cfg["DEFAULT"]


def test_version_agrees_everywhere():
    from importlib.metadata import version
    assert cbir.__version__ == _settings()["version"], "cbir/__init__.py and settings.ini disagree on the version"
    assert version("cbir") == cbir.__version__, "the installed metadata is stale: reinstall with pip install -e ."
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"], "pyproject.toml must not pin its own version"


def test_readme_rendered_from_index_notebook():
    render = runpy.run_path(str(ROOT / ".ci" / "render_readme.py"))["render_readme"]
    assert (ROOT / "README.md").read_text(encoding="utf-8") == render(), \
        "README.md is out of date: run `python .ci/render_readme.py`"


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for line in ci.splitlines():
        if "# README:" in line:
            cmd = line.split("# README:")[0].strip()
            assert cmd in readme, f".ci/run runs `{cmd}`, which README.md does not tell users to run"


def test_console_script_help():
    script = Path(sys.executable).parent / "cbir"
    assert script.exists(), "the `cbir` console script is not installed: pip install -e ."
    out = subprocess.run([str(script), "demo", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ["--folder", "--backbone", "-k", "--out", "--weights"]:
        assert option in out.stdout, f"`cbir demo --help` does not explain {option}"


def test_dev_extras_include_every_optional_extra():
    cfg = _settings()
    dev = set(cfg["dev_requirements"].split())
    for extra in ("milvus", "distributed", "pretrained"):
        missing = set(cfg[f"{extra}_requirements"].split()) - dev
        assert not missing, f"the dev extras lack {missing} of cbir[{extra}]: CI would not test that extra"
    setup = (ROOT / "setup.py").read_text()
    for extra in ("milvus", "distributed", "pretrained"):
        assert f'"{extra}": cfg["{extra}_requirements"]' in setup, f"setup.py does not declare the {extra} extra"
