"""Spells when this machine runs slow: times a fixed loop (~1 ms) over and over, resting between runs,
and prints each run that took 2.5 times its usual time. On the 2-core VM of README.md's figures, about
every 2 s both cores ran 3-15 times slower for 50-150 ms, with nothing else running.

python -m bench.slow_spells [SECONDS]"""

import sys
import time


def loop() -> None:
    total = 0
    for i in range(20_000):
        total += i * i


def timed() -> float:
    started = time.perf_counter()
    loop()
    return time.perf_counter() - started


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    usual = sorted(timed() for _ in range(50))[25]
    began, runs, slow = time.monotonic(), 0, []
    while time.monotonic() - began < seconds:
        took = timed()
        runs += 1
        if took > usual * 2.5:
            slow.append((time.monotonic() - began, took / usual))
        time.sleep(usual * 1.5)  # about 40 % busy, as a loaded web process
    print(f"usual run {usual * 1000:.2f} ms; {len(slow)} of {runs} runs 2.5x slower or more")
    for at, factor in slow:
        print(f"  at {at:6.2f} s: {factor:4.1f}x")


if __name__ == "__main__":
    main()
