"""Fairness through the Python API: per-flow share of the bottleneck and Jain's index.

    sudo .venv/bin/python experiments/fairness.py repeat=1 flows.0.duration_s=10

Arguments are `--set` style key=value changes of fairness.yaml. Copy and edit freely.
"""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.experiment import load_experiment, run

SPEC = Path(__file__).with_suffix(".yaml")


def main(sets: list[str]) -> None:
    result = run(load_experiment(SPEC, sets=sets))
    df = result.results
    df["flow_name"] = df["protocol"] + "/" + df["cc"].fillna("")
    conditions = [c for c in df.columns if c.startswith("bottleneck.")]
    # window_goodput_mbps: what each flow got during its duration_s, while all of them competed
    share = df.pivot_table(
        index=conditions, columns="flow_name", values="window_goodput_mbps", aggfunc="mean"
    )
    print("mean goodput while competing (Mbit/s):")
    print(share.round(2).to_string())
    print("\nJain's fairness index (mean over repetitions):")
    print(df.groupby(conditions)["fairness"].mean().round(3).to_string())
    print(f"\nresults in {result.run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
