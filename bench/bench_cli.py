"""How fast the CLI answers a person: `perennial --help`, a command's `--help`, and the import
cost of what a command needs, as wall-clock times of fresh processes (the median of N runs).

    .venv/bin/python -m bench.bench_cli [--runs 15]

Target: `perennial --help` under 0.25 s (it parses with the standard library only and imports
a command's modules after parsing). `python -c pass` is printed as the floor: what starting
this interpreter costs at all.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import ROOT

PERENNIAL = Path(sys.executable).parent / "perennial"

#: name -> command line.
CASES: dict[str, list[str]] = {
    "python -c pass (the floor)": [sys.executable, "-c", "pass"],
    "perennial --help": [str(PERENNIAL), "--help"],
    "perennial ask --help": [str(PERENNIAL), "ask", "--help"],
    "import perennial.client.commands": [sys.executable, "-c", "import perennial.client.commands"],
    "import perennial.worker": [sys.executable, "-c", "import perennial.worker"],
}


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    print(f"{'':40} median of {runs} runs")
    for name, command in CASES.items():
        seconds = median_seconds(command, runs)
        target = "  (target < 0.25 s: " + ("met)" if seconds < 0.25 else "MISSED)")
        print(f"{name:40} {seconds:6.3f} s{target if name == 'perennial --help' else ''}")


if __name__ == "__main__":
    main()
