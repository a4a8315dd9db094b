"""The REST ingest rows (3-5) of several checkouts, measured in turn by this bench (BENCH_CODE), rounds
alternated so that each checkout meets this VM's slow and fast minutes alike. Prints the figures side by side
and writes them to var/bench/compare-<time>.json.

python -m bench.compare CHECKOUT [CHECKOUT ...] [--rounds N]     e.g. git worktrees of two commits"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"

FIGURES = {
    "single (req/s)": lambda r: r["ingest"]["single"]["requests_per_second"],
    "p99 at 200 req/s (ms)": lambda r: r["ingest"]["rate_200"]["p99_ms"],
    "batch 500/req (emails/s)": lambda r: r["ingest"]["batch"]["emails_per_second"],
    "end to end (emails/s)": lambda r: r["end_to_end"]["per_second"],
}


def measure(checkout: str) -> dict:
    env = {**os.environ, "BENCH_ONLY": "ingest", "BENCH_CODE": checkout}
    subprocess.run([sys.executable, "-m", "bench.run"], cwd=ROOT, env=env, check=True)
    return {**json.loads((OUT / "latest.json").read_text()), "load_average": os.getloadavg()[0]}


def main() -> None:
    args = sys.argv[1:]
    rounds = 2
    if "--rounds" in args:
        at = args.index("--rounds")
        rounds = int(args[at + 1])
        del args[at : at + 2]
    runs: dict[str, list[dict]] = {checkout: [] for checkout in args}
    for _ in range(rounds):
        for checkout in args:
            runs[checkout].append(measure(checkout))
    print(f"\nREST ingest, {os.cpu_count()} cores, {rounds} rounds alternated (each run: run 1 / run 2 / ...)\n")
    for results in runs.values():
        print(f"{results[0]['code']}")
        for name, figure in FIGURES.items():
            print(f"  {name:26} " + " / ".join(f"{figure(r):8.1f}" for r in results))
        print(f"  {'load average after (1 min)':26} " + " / ".join(f"{r['load_average']:8.1f}" for r in results))
    path = OUT / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(runs, indent=2))
    print(f"\nfigures: {path}")


if __name__ == "__main__":
    main()
