"""Wall time of the main job: ``seglib run`` (notebooks 01 -> 04 with papermill).

    .venv/bin/python benchmarks/bench_pipeline.py [--profile quick] [--out DIR] [-p KEY=VALUE ...]

Runs in a fresh folder (a temporary one by default) and reports each notebook's seconds from
the executed notebooks' papermill metadata. Last line exactly:
``RESULT profile=<p> total_s=<f> 01_data_s=<f> 02_baseline_s=<f> 03_hyperband_hpo_s=<f> 04_report_s=<f>``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seglib.run import NOTEBOOKS


def notebook_seconds(path: Path) -> float:
    return float(json.loads(path.read_text())["metadata"]["papermill"]["duration"])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("-p", "--param", action="append", default=[])
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="seglib-bench-")) / "run"
    command = [sys.executable, "-m", "seglib.cli", "run", "--profile", args.profile, "--out", str(out)]
    command += ["--data", args.data] if args.data else []
    for pair in args.param:
        command += ["-p", pair]
    started = time.perf_counter()
    result = subprocess.run(command)
    total = time.perf_counter() - started
    if result.returncode:
        print(f"seglib run failed (exit {result.returncode})", file=sys.stderr)
        return result.returncode
    parts = " ".join(f"{name}_s={notebook_seconds(out / f'{name}.ipynb'):.1f}" for name in NOTEBOOKS)
    print(f"run folder: {out}")
    print(f"RESULT profile={args.profile} total_s={total:.1f} {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
