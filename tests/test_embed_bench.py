"""Slow wrapper around tests/bench_embed.py: `pytest -m slow tests/test_embed_bench.py -s` prints the table."""
import pytest

from bench_embed import format_table, run_benchmark


@pytest.mark.slow
def test_embed_throughput():
    "The batched pipeline is >= 3x the naive loop and >= 0.7x the model alone (same run, same 512 files)."
    result = run_benchmark(variants=False)
    print("\n" + format_table(result))
    assert result["ratios"]["pipeline / naive"] >= 3, format_table(result)
    assert result["ratios"]["pipeline / model only"] >= 0.7, format_table(result)
