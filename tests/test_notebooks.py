"""Run every notebook in nbs/ (library and tutorials) as a pytest test, the way `nbdev-test` does."""
from pathlib import Path

import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook_runs(nb):
    flags = get_config(NBS).tst_flags.split()
    ok, secs = run_notebook(nb, skip_flags=flags, showerr=True)
    assert ok, f"{nb.relative_to(NBS)} failed after {secs:.1f}s (traceback above)"
