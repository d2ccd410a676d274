"""Latency under load through the Python API: probe one-way delay idle vs loaded, per queue.

    sudo .venv/bin/python experiments/latency-under-load.py repeat=1

Arguments are `--set` style key=value changes of latency-under-load.yaml. Copy and edit freely.
"""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.experiment import load_experiment, run

SPEC = Path(__file__).with_suffix(".yaml")


def main(sets: list[str]) -> None:
    result = run(load_experiment(SPEC, sets=sets))
    probes = result.probes.merge(
        result.results[["trial", "bottleneck.queue_pkts", "flows.0.cc"]].drop_duplicates(), on="trial"
    )
    table = probes.pivot_table(
        index=["bottleneck.queue_pkts", "flows.0.cc"],
        columns="phase",
        values="owd_ms",
        aggfunc=lambda s: s.quantile(0.95),
    )
    print("95th percentile one-way delay of the probes (ms), idle vs under load:")
    print(table.round(1).to_string())
    print(f"\nresults in {result.run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
