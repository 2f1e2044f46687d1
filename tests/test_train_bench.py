"""Slow wrapper around tests/bench_train.py: `pytest -m slow tests/test_train_bench.py -s` prints the report."""
import pytest

from bench_train import format_report, run_benchmark


@pytest.mark.slow
def test_metric_learning_benchmark():
    "3 minutes of CPU training: >= 0.65 MAP@R on 100 unseen classes, >= 100x pixels; loop >= 0.85x the model; loss+mining < 10%."
    r = run_benchmark(minutes=3.0, losses=("ntxent",))
    report = format_report(r)
    print("\n" + report)
    best = r["results"]["smallcnn ntxent"]["MAP@R"]
    assert best >= 0.65 and best >= 100 * r["results"]["pixels"]["MAP@R"], report
    assert r["throughput"]["ratio"] >= 0.85 and r["throughput"]["loss_and_mining_share"] < 0.10, report
