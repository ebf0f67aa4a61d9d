"""Summarise the Snakemake benchmark TSVs of one run, per stage, as a Markdown table.

Usage: python benchmarks/stage_times.py logs/<dataset> [--wall-seconds N]

Each rule writes ``<stage>/<name>.benchmark.tsv`` under ``logs/<dataset>/``;
this script adds up the job seconds per stage and reports the largest
resident memory (max_rss, MB) of any job in the stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def stage_table(log_dir: Path) -> pd.DataFrame:
    rows = []
    for stage_dir in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        files = sorted(stage_dir.rglob("*.benchmark.tsv"))
        if not files:
            continue
        frames = pd.concat([pd.read_csv(f, sep="\t") for f in files], ignore_index=True)
        rows.append(
            {
                "stage": stage_dir.name,
                "jobs": len(files),
                "job seconds (sum)": round(float(frames["s"].sum()), 1),
                "slowest job (s)": round(float(frames["s"].max()), 1),
                "max RSS (MB)": round(float(pd.to_numeric(frames["max_rss"], errors="coerce").max()), 0),
            }
        )
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path, help="logs/<dataset> folder of a finished run")
    args = parser.parse_args()
    if not args.log_dir.is_dir():
        parser.error(f"{args.log_dir} is not a folder; pass logs/<dataset> of a finished run")
    table = stage_table(args.log_dir)
    header = "| " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
