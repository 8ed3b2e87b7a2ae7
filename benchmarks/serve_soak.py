"""Soak test of `vggnet serve`: sustained load with malformed uploads mixed in.

    python benchmarks/serve_soak.py --run runs/cifar10_quick --data-root ../shared/data \\
        --seconds 120 --concurrency 64 --out benchmarks/results/serve_soak.json

For ``--seconds``, ``--concurrency`` users (one keep-alive connection each, asyncio streams, in
this process) post real CIFAR-10 test images as raw bodies; one request in ten
(``--malformed``) is a bad upload instead, drawn in turn from: random bytes, a truncated JPEG,
a JPEG with flipped bytes, an empty body, a PNG header declaring 100k x 100k pixels. The
server's resident memory (RSS, from /proc; with ``--workers``, the front's and its workers'
summed) is sampled every second.

Pass/fail, printed and saved: every valid request answered 200 (a connection error counts as
a failure), every malformed one a 4xx with a JSON ``detail`` (never a 5xx), and the RSS after
the first 20 seconds (warm-up: the model, the allocator's pools) grows by less than
``--rss-growth-mb`` (default 100 MB) to the end of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import _Connection, _start, _test_images  # noqa: E402


def _malformed(images: list[bytes], seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    jpeg = images[0]
    flipped = bytearray(jpeg)
    for _ in range(20):
        flipped[rng.randrange(len(flipped))] ^= 0xFF
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    return [bytes(rng.randrange(256) for _ in range(2000)), jpeg[:len(jpeg) // 3],
            bytes(flipped), b"", bomb]


def _rss_mb(pid: int) -> float:
    """The resident memory of the service: the process and all its descendants (with
    ``--workers``, the front and its workers)."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _rss_mb(int(child))
    except OSError:  # a process that ended between the listing and the read
        pass
    return total


async def _soak(url: str, pid: int, images: list[bytes], bad: list[bytes], args) -> dict:
    counts = {"valid": 0, "valid_failed": 0, "malformed": 0, "malformed_5xx": 0,
              "malformed_not_json": 0, "malformed_200": 0}
    statuses: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    start = time.monotonic()
    stop_at = start + args.seconds
    n = 0

    async def sample():
        while time.monotonic() < stop_at:
            rss.append((round(time.monotonic() - start, 1), round(_rss_mb(pid), 1)))
            await asyncio.sleep(1.0)

    async def user(conn: _Connection):
        nonlocal n
        while time.monotonic() < stop_at:
            i, n = n, n + 1
            is_bad = i % round(1 / args.malformed) == 0
            body = bad[(i // 10) % len(bad)] if is_bad else images[i % len(images)]
            try:
                status, reply = await conn.request("POST", "/v1/predict", body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status, reply = 0, b""
                conn = await _Connection.open(url)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if not is_bad:
                counts["valid"] += 1
                counts["valid_failed"] += status != 200
                continue
            counts["malformed"] += 1
            counts["malformed_5xx"] += status >= 500 or status == 0
            counts["malformed_200"] += status == 200
            try:
                counts["malformed_not_json"] += "detail" not in json.loads(reply)
            except ValueError:
                counts["malformed_not_json"] += 1

    conns = [await _Connection.open(url) for _ in range(args.concurrency)]
    await asyncio.gather(sample(), *(user(c) for c in conns))
    for c in conns:
        c.close()
    after_warmup = [m for t, m in rss if t >= 20] or [m for _, m in rss]
    growth = max(after_warmup) - after_warmup[0]
    return {"seconds": args.seconds, "concurrency": args.concurrency,
            "malformed_share": args.malformed, **counts, "statuses": statuses,
            "rss_mb_first_after_warmup": after_warmup[0], "rss_mb_max": max(m for _, m in rss),
            "rss_growth_mb_after_warmup": round(growth, 1), "rss_samples": rss,
            "passed": (counts["valid_failed"] == 0 and counts["malformed_5xx"] == 0
                       and counts["malformed_200"] == 0 and counts["malformed_not_json"] == 0
                       and growth < args.rss_growth_mb)}


def main() -> None:
    from vggnet.bench import environment

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    p.add_argument("--backend", default="torch")
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--malformed", type=float, default=0.1, help="share of bad uploads")
    p.add_argument("--rss-growth-mb", type=float, default=100.0)
    p.add_argument("--workers", type=int, default=1,
                   help="serve --workers: behind the front process (RSS is the sum)")
    p.add_argument("--out")
    args = p.parse_args()
    images = _test_images(args.data_root, 200)
    proc, url = _start(args.run, args.backend, 32, 5.0, None, args.workers)
    try:
        result = asyncio.run(_soak(url, proc.pid, images, _malformed(images), args))
    finally:
        proc.terminate()
        proc.wait(60)
    result = {"run": args.run, "backend": args.backend, "workers": args.workers,
              "environment": environment(), **result}
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}))
    if args.out:
        from vggnet.io import write_json

        write_json(Path(args.out), result)
    raise SystemExit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
