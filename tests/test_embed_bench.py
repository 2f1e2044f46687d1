"""Slow wrapper around tests/bench_embed.py: `pytest -m slow tests/test_embed_bench.py -s` prints the table."""
import pytest

from bench_embed import format_table, run_benchmark


@pytest.mark.slow
def test_embed_throughput():
    "Best rounds (load only slows runs down): the batched pipeline is >= 3x the naive loop and >= 0.7x the model alone."
    result = run_benchmark(n=512, batch_size=32, rounds=3)
    table = format_table(result)
    print("\n" + table)
    assert result["best_ratios"]["pipeline / naive"] >= 3, table
    assert result["best_ratios"]["pipeline / model only"] >= 0.7, table
