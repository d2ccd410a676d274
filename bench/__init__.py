"""Benchmarks, run on demand (`make bench`); each writes a Markdown table to bench/results/."""
