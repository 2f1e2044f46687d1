"""The command line: `cbir demo` as a user runs it (the installed console script, default settings, offline, in a fresh folder),
and the other commands, through the console script where that is what a test is about and in this process (`cli`) elsewhere."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_demo_default_run_offline(tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home"), "MPLBACKEND": "Agg"}  # empty cache: no pretrained weights
    script = Path(sys.executable).parent / "cbir"
    out = subprocess.run([str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "random initialisation" in text and "no pretrained weights" in text, text  # says which weights and why
    for col in ["P@1", "P@5", "P@10", "R@1", "R@10", "HR@5", "mAP", "MRR", "nDCG@10"]:
        assert col in text, f"metrics table lacks {col}:\n{text}"
    assert "class retrieval (100 unseen classes)" in text and "near-duplicate retrieval" in text
    assert "80 to train on, 20 to validate, 100 to test" in text, text
    metrics = json.loads((tmp_path / "cbir_out" / "metrics.json").read_text())
    names = {"pixels", "resnet18", "smallcnn-random", "smallcnn-trained"}
    assert set(metrics) == {"class", "near-duplicate", "real-photo"}
    assert set(metrics["class"]) == set(metrics["near-duplicate"]) == names
    photo = metrics.pop("real-photo")                # real photographs: pixels vs Lite0 random vs Lite0 ImageNet
    assert set(photo) == {"pixels", "lite0-random", "lite0-imagenet"}, photo
    assert photo["lite0-imagenet"]["P@1"] >= 0.9 and photo["pixels"]["P@1"] <= 0.35, photo
    assert "instance retrieval of real photographs (12 scenes)" in text and (tmp_path / "cbir_out" / "results_real_photos.png").is_file()
    assert all(0.0 <= v <= 1.0 for t in metrics.values() for m in t.values() for v in m.values())
    for name in names:  # R = 3 copies among ~3,000 gallery images: chance mAP is ~0.002
        assert metrics["near-duplicate"][name]["mAP"] > 0.2, metrics["near-duplicate"][name]
    cls = {name: m["mAP"] for name, m in metrics["class"].items()}  # 100 classes, R = 15: chance mAP is ~0.01
    assert cls["smallcnn-trained"] > 0.3 and cls["smallcnn-trained"] > 5 * max(v for n, v in cls.items() if n != "smallcnn-trained"), cls
    assert (tmp_path / "cbir_out" / "results_smallcnn-trained.png").read_bytes()[:4] == b"\x89PNG"
    from cbir.embed import Embedder
    assert Embedder.from_checkpoint(tmp_path / "cbir_out" / "smallcnn-trained.pt").config["backbone"] == "smallcnn"


def test_demo_on_an_image_folder(tmp_path):
    from cbir.data import make_shapes
    folder = make_shapes(n=120, size=48, seed=3).to_folder(tmp_path / "imgs")
    script = Path(sys.executable).parent / "cbir"
    out = subprocess.run([str(script), "demo", "--folder", str(folder), "--out", str(tmp_path / "o"), "--weights", "none",
                          "--queries-per-class", "2", "--image-size", "48", "-k", "5", "--train-epochs", "2", "--no-photos"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 to train on, 1 to validate, 6 to test" in out.stdout and "12 queries" in out.stdout, out.stdout  # 6 test classes x 2
    assert "(2 epochs, NT-Xent loss)" in out.stdout, out.stdout  # a fixed amount of training, whatever the machine's speed
    assert (tmp_path / "o" / "results_smallcnn-trained.png").exists()
    assert "real photographs" not in out.stdout and not (tmp_path / "o" / "results_real_photos.png").exists()  # --no-photos


def cli(capsys, *args):
    "Run `cbir.cli.main` in this process, as the console script would (no 5 s interpreter start): (exit code, stdout, stderr)."
    from cbir.cli import main
    try: code = main([str(a) for a in args])
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_demo_rejects_missing_folder(tmp_path, capsys):
    code, _, err = cli(capsys, "demo", "--folder", tmp_path / "nope")
    assert code != 0
    assert "Traceback" not in err, err
    assert "nope" in err


def test_index_then_search_a_folder(tmp_path, capsys):
    from cbir.data import make_shapes
    folder = make_shapes(n=36, size=32, seed=4).to_folder(tmp_path / "imgs")
    (folder / "circle" / "broken.jpg").write_bytes(b"not a jpeg")  # must be skipped and reported, not crash
    code, out, err = cli(capsys, "index", folder, "--out", tmp_path / "idx", "--backbone", "resnet18", "--weights", "none",
                         "--image-size", "32")
    assert code == 0, out + err
    assert "indexed 36 images (1 unreadable skipped)" in out and "broken.jpg" in out, out
    query = sorted((folder / "star").glob("*.png"))[0]
    code, out, err = cli(capsys, "search", tmp_path / "idx", query, "-k", "3", "--grid", tmp_path / "g.png")
    assert code == 0, out + err
    first = out.splitlines()[1].split()
    assert first[0] == "1" and first[2] == query.relative_to(folder).as_posix(), out  # the image finds itself first
    assert abs(float(first[1]) - 1.0) < 1e-4
    assert (tmp_path / "g.png").exists()


def run_cbir(*args, timeout=600):
    return subprocess.run([str(Path(sys.executable).parent / "cbir"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"})


def test_train_then_index_and_search_with_the_checkpoint(tmp_path, capsys):
    from cbir.data import class_disjoint_split, make_glyphs
    seen, unseen = class_disjoint_split(make_glyphs(n=600, n_classes=40, size=32, seed=2), fractions=(0.5, 0.5), seed=0)
    seen.to_folder(tmp_path / "seen"); unseen.to_folder(tmp_path / "unseen")
    code, out, err = cli(capsys, "train", tmp_path / "seen", "--out", tmp_path / "m", "--epochs", "2", "--batch-classes", "8",
                         "--image-size", "32")
    assert code == 0, out + err
    assert "16 for training, 4 for validation" in out and f"checkpoint: {tmp_path / 'm' / 'best.pt'}" in out, out
    assert (tmp_path / "m" / "last.pt.json").is_file() and (tmp_path / "m" / "best.pt.json").is_file()
    code, out, err = cli(capsys, "index", tmp_path / "unseen", "--out", tmp_path / "idx", "--checkpoint", tmp_path / "m" / "best.pt")
    assert code == 0, out + err
    query = sorted((tmp_path / "unseen").rglob("*.png"))[3]
    code, out, err = cli(capsys, "search", tmp_path / "idx", query, "-k", "3")
    assert code == 0, out + err
    assert out.splitlines()[1].split()[2] == query.relative_to(tmp_path / "unseen").as_posix(), out


def test_train_on_glyphs_reports_the_held_out_classes(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--glyphs", "--n-images", "800", "--n-classes", "40", "--out", tmp_path, "--epochs", "1",
                         "--batch-classes", "8", "--loss", "ntxent", "--miner", "none")
    assert code == 0, out + err
    assert "held-out test classes (20, never seen): MAP@R" in out, out


def test_demo_training_flags(tmp_path, capsys):
    "--train-epochs 0 or --train-minutes 0 skip training; negative values are refused with a message."
    for flag, value, words in [("--train-epochs", "-1", "--train-epochs must be >= 0"), ("--train-minutes", "-2", "--train-minutes must be >= 0")]:
        code, _, err = cli(capsys, "demo", "--out", tmp_path / "o", flag, value)
        assert code == 2 and words in err and "Traceback" not in err, err
    from cbir.cli import run_demo
    for skip in [dict(train_epochs=0), dict(train_minutes=0)]:
        tables = run_demo(out=str(tmp_path / "skip"), n_images=200, n_classes=20, image_size=32, weights="none", k=5,
                          queries_per_class=2, photos=False, **skip)
        assert set(tables["class"]) == {"pixels", "resnet18", "smallcnn-random"}, (skip, tables["class"].keys())
    assert not (tmp_path / "skip" / "smallcnn-trained.pt.json").exists()


def test_train_bad_input_gets_a_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = run_cbir("train", "--out", tmp_path / "m")  # once through the installed console script
    assert out.returncode == 2 and "either an image FOLDER or --glyphs" in out.stderr and "Traceback" not in out.stderr, out.stderr
    for args, words in [([tmp_path / "empty", "--out", tmp_path / "m"], "no image files"),
                        ([tmp_path / "nope", "--out", tmp_path / "m"], "nope"),
                        ([tmp_path / "empty", "--glyphs", "--out", tmp_path / "m"], "not both"),
                        (["--glyphs", "--out", tmp_path / "m", "--epochs", "0"], "--epochs must be at least 1")]:
        code, _, err = cli(capsys, "train", *args)
        assert code == 2 and words in err and "Traceback" not in err, (args, err)


def test_index_and_search_with_the_milvus_backend(tmp_path, capsys):
    """`cbir index --backend milvus` fills a Milvus Lite collection inside --out; `cbir search` finds the backend in
    the sidecar and prints the same ranking as the FAISS backend (in-process: the console script is tested above)."""
    pytest.importorskip("pymilvus")
    from cbir.cli import main
    from cbir.data import make_shapes
    folder = make_shapes(n=30, size=32, seed=5).to_folder(tmp_path / "imgs")
    query = sorted((folder / "star").glob("*.png"))[0]
    printed = {}
    for backend in ("faiss", "milvus"):
        assert main(["index", str(folder), "--out", str(tmp_path / backend), "--backbone", "pixels", "--image-size", "16",
                     "--backend", backend]) == 0
        capsys.readouterr()
        assert main(["search", str(tmp_path / backend), str(query), "-k", "5"]) == 0
        printed[backend] = [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert (tmp_path / "milvus" / "index.milvus.json").exists() and (tmp_path / "milvus" / "milvus.db").exists()
    assert printed["milvus"] == printed["faiss"] and printed["milvus"][0] == query.relative_to(folder).as_posix()
    assert main(["index", str(folder), "--out", str(tmp_path / "x"), "--backbone", "pixels", "--uri", "http://localhost:1"]) == 2
    assert "--uri names a Milvus server" in capsys.readouterr().err


def test_index_with_compile_and_precision_flags(tmp_path, capsys):
    from cbir.data import make_shapes
    folder = make_shapes(n=12, size=32, seed=6).to_folder(tmp_path / "imgs")
    env_cache = tmp_path / "inductor"  # an empty compile cache, as on a fresh machine
    out = subprocess.run([str(Path(sys.executable).parent / "cbir"), "index", str(folder), "--out", str(tmp_path / "idx"),
                          "--backbone", "smallcnn", "--weights", "none", "--image-size", "32", "--compile", "--precision", "fp32"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MPLBACKEND": "Agg", "TORCHINDUCTOR_CACHE_DIR": str(env_cache)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "compiled the model in" in out.stdout and "indexed 12 images" in out.stdout
    side = json.loads((tmp_path / "idx" / "index.faiss.json").read_text())
    assert side["embedder"]["precision"] == "fp32"
    query = sorted(folder.rglob("*.png"))[0]
    code, out, err = cli(capsys, "search", tmp_path / "idx", query, "-k", "1")
    assert code == 0 and query.relative_to(folder).as_posix() in out.splitlines()[1], out + err
    from cbir.cli import main
    assert main(["index", str(folder), "--out", str(tmp_path / "p"), "--backbone", "pixels", "--compile"]) == 2
    assert "--compile needs a CNN backbone" in capsys.readouterr().err
