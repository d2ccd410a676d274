"""The quick comparison through the Python API (qtp/bbr vs tcp/cubic, 0 and 1 % loss).

sudo .venv/bin/python experiments/quick-compare.py            # as in quick-compare.yaml
sudo .venv/bin/python experiments/quick-compare.py repeat=5   # any --set style change
"""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.experiment import load_experiment, run

SPEC = Path(__file__).with_suffix(".yaml")


def main(sets: list[str]) -> None:
    result = run(load_experiment(SPEC, sets=sets))
    df = result.results
    print(
        df.groupby(["bottleneck.loss_pct", "protocol", "cc"])[["goodput_mbps", "fct_s", "owd_p95_ms"]]
        .median()
        .round(3)
        .to_string()
    )
    print(f"\nresults in {result.run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
