"""Protocol matrix through the Python API: run, then a median-goodput table per condition.

    sudo .venv/bin/python experiments/protocol-matrix.py repeat=1 grid.bottleneck.loss_pct=[0,1]

Arguments are `--set` style key=value changes of protocol-matrix.yaml. Copy and edit freely.
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
    table = df[df["ok"]].pivot_table(
        index=conditions, columns="flow_name", values="goodput_mbps", aggfunc="median"
    )
    print("median goodput (Mbit/s):")
    print(table.round(2).to_string())
    print(f"\nfailed transfers: {int((~df['ok']).sum())} of {len(df)}; results in {result.run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
