"""Keep every CPU core busy for a while: the background load under which the test suite must
still pass (a CI machine is rarely quiet).

    python benchmarks/cpu_load.py --seconds 900 &     # then run the suite

One process per core (``--workers``) spins on arithmetic until ``--seconds`` have passed or
the parent gets SIGTERM (which it passes on); it touches no file and no network.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import time


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for i in range(100_000):
            x = (x * 31 + i) % 1_000_003


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    procs = [multiprocessing.Process(target=_spin, args=(args.seconds,), daemon=True)
             for _ in range(args.workers)]
    for proc in procs:
        proc.start()

    def stop(signum, frame):  # `kill PID` ends the spinners too, not only this process
        for proc in procs:
            proc.terminate()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
