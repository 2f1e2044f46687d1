"""`cbir demo` as a user runs it: the installed console script, default settings, offline, in a fresh folder."""
import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_default_run_offline(tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home"), "MPLBACKEND": "Agg"}  # empty cache: no pretrained weights
    script = Path(sys.executable).parent / "cbir"
    out = subprocess.run([str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "random initialisation" in text and "no pretrained weights" in text, text  # says which weights and why
    for col in ["P@1", "P@5", "P@10", "R@1", "R@10", "HR@5", "mAP", "MRR", "nDCG@10"]:
        assert col in text, f"metrics table lacks {col}:\n{text}"
    assert "class retrieval" in text and "near-duplicate retrieval" in text
    metrics = json.loads((tmp_path / "cbir_out" / "metrics.json").read_text())
    assert set(metrics) == {"class", "near-duplicate"} and all(set(t) == {"pixels", "resnet18"} for t in metrics.values())
    assert all(0.0 <= v <= 1.0 for t in metrics.values() for m in t.values() for v in m.values())
    for name in ("pixels", "resnet18"):  # R = 3 copies among ~2,100 gallery images: chance mAP is ~0.002
        assert metrics["near-duplicate"][name]["mAP"] > 0.2, metrics["near-duplicate"][name]
    assert (tmp_path / "cbir_out" / "results_resnet18.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_on_an_image_folder(tmp_path):
    from cbir.data import make_shapes
    folder = make_shapes(n=120, size=48, seed=3).to_folder(tmp_path / "imgs")
    script = Path(sys.executable).parent / "cbir"
    out = subprocess.run([str(script), "demo", "--folder", str(folder), "--out", str(tmp_path / "o"), "--weights", "none",
                          "--queries-per-class", "2", "--image-size", "48", "-k", "5"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "24 queries" in out.stdout, out.stdout  # 12 classes x 2
    assert (tmp_path / "o" / "results_resnet18.png").exists()


def test_demo_rejects_missing_folder(tmp_path):
    script = Path(sys.executable).parent / "cbir"
    out = subprocess.run([str(script), "demo", "--folder", str(tmp_path / "nope")], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    assert "nope" in out.stderr


def test_index_then_search_a_folder(tmp_path):
    from cbir.data import make_shapes
    folder = make_shapes(n=36, size=32, seed=4).to_folder(tmp_path / "imgs")
    (folder / "circle" / "broken.jpg").write_bytes(b"not a jpeg")  # must be skipped and reported, not crash
    script = str(Path(sys.executable).parent / "cbir")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([script, "index", str(folder), "--out", str(tmp_path / "idx"), "--backbone", "resnet18",
                          "--weights", "none", "--image-size", "32"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "indexed 36 images (1 unreadable skipped)" in out.stdout and "broken.jpg" in out.stdout, out.stdout
    query = sorted((folder / "star").glob("*.png"))[0]
    out = subprocess.run([script, "search", str(tmp_path / "idx"), str(query), "-k", "3", "--grid", str(tmp_path / "g.png")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    first = out.stdout.splitlines()[1].split()
    assert first[0] == "1" and first[2] == query.relative_to(folder).as_posix(), out.stdout  # the image finds itself first
    assert abs(float(first[1]) - 1.0) < 1e-4
    assert (tmp_path / "g.png").exists()
