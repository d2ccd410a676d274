"""Hub assessment through the Python API: intra- vs cross-operator paths, then the report.

    sudo .venv/bin/python experiments/hubs-assessment.py repeat=1

Arguments are `--set` style key=value changes of hubs-assessment.yaml. Copy and edit freely.
"""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.experiment import load_experiment, run

SPEC = Path(__file__).with_suffix(".yaml")


def main(sets: list[str]) -> None:
    result = run(load_experiment(SPEC, sets=sets))
    df = result.results
    short_mask = df["label"].fillna("").eq("short")  # the short-flow mix is labelled in the spec
    bulk = df[~short_mask]
    cols = ["configured_owd_ms", "base_rtt_ms", "owd_p95_ms", "probe_loss_pct", "goodput_mbps"]
    print(bulk.groupby(["src", "dst", "path_kind", "protocol"])[cols].median().round(2).to_string())
    short = df[short_mask]
    if len(short):
        print("\nshort transfers, completion time (s):")
        print(short.groupby("path_kind")["fct_s"].describe(percentiles=[0.5, 0.95]).round(4).to_string())
    try:
        from testbed.report import build_report

        print(f"\nreport: {build_report(result.run_dir).html}")
    except ImportError:
        print(f"\nresults in {result.run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
