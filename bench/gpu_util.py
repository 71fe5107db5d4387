#!/usr/bin/env python3
"""GPU utilisation per measurement of a `cifar-bench --json` run, from `nvidia-smi` samples.

    gpu_util.py smi.csv bench.json

smi.csv: `nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw
--format=csv,noheader,nounits -lms 200` (timestamps in the machine's local time).
bench.json: cifar-bench's `--json` output, whose measurements carry their start and end as
Unix seconds. Prints a Markdown table: per model, batch, precision and implementation, the
mean and minimum utilisation, the largest memory use and the mean power over the samples
taken while that measurement's process ran.
"""

import datetime
import json
import sys
import time


def samples(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 4:
                continue
            try:
                dt = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f")
                t = time.mktime(dt.timetuple()) + dt.microsecond / 1e6
                out.append((t, float(parts[1]), float(parts[2]), float(parts[3])))
            except ValueError:
                continue
    return out


def main():
    smi, bench = samples(sys.argv[1]), json.load(open(sys.argv[2]))
    print("| model | batch | precision | impl | samples | GPU busy % (mean / min) | memory MiB (max) | power W (mean) |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for row in bench:
        for imp, r in sorted(row["results"].items()):
            t0, t1 = r.get("started_unix_s"), r.get("ended_unix_s")
            if t0 is None or t1 is None:
                continue
            s = [x for x in smi if t0 <= x[0] <= t1]
            if not s:
                print(f"| {row['model']} | {row['batch']} | {row.get('precision', 'fp32')} | {imp} | 0 | - | - | - |")
                continue
            util = [x[1] for x in s]
            print(
                f"| {row['model']} | {row['batch']} | {row.get('precision', 'fp32')} | {imp} | {len(s)} "
                f"| {sum(util) / len(util):.0f} / {min(util):.0f} | {max(x[2] for x in s):.0f} "
                f"| {sum(x[3] for x in s) / len(s):.0f} |"
            )


if __name__ == "__main__":
    main()
