"""compare_runs: placeholder until written."""

from __future__ import annotations


def compare_runs(run_a, run_b, out_dir=None):
    raise NotImplementedError
