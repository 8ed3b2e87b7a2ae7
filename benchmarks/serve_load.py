"""Load test of `vggnet serve` on 127.0.0.1: requests/s and latency percentiles at several
concurrencies, with and without dynamic batching, PyTorch fp32 against ONNX Runtime int8.

    python benchmarks/serve_load.py --run runs/cifar10_quick --data-root ../shared/data \\
        --out benchmarks/results/serve_load.json

Each configuration starts its own `vggnet serve` process; the client (asyncio streams, one
keep-alive HTTP/1.1 connection per concurrent user) runs in this process, on the same machine,
so the two share the CPU cores, as a sidecar client would. Each level sends a fixed number of
requests and stops early at a time limit, so the run ends by itself. Every request posts one
real CIFAR-10 test image as the raw body; any status other than 200, and any connection
error, counts as a failed request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (label, backend, max_batch)
    ("torch fp32, one image at a time", "torch", 1),
    ("torch fp32, dynamic batching", "torch", 32),
    ("ONNX Runtime int8, one image at a time", "int8", 1),
    ("ONNX Runtime int8, dynamic batching", "int8", 32),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_images(data_root: Path, n: int) -> list[bytes]:
    with tarfile.open(data_root / "cifar10-jpeg.tar.gz") as tar:
        names = [f"test/{c}/{i:04d}.jpg" for i in range(n // 10 + 1)
                 for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                           "horse", "ship", "truck")][:n]
        return [tar.extractfile(name).read() for name in names]


def _start(run: str, backend: str, max_batch: int, max_wait_ms: float, threads: int | None,
           workers: int = 1):
    port = _free_port()
    cmd = [sys.executable, "-m", "vggnet", "serve", run, "--port", str(port), "--backend",
           backend, "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
           "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    if threads:
        cmd += ["--threads", str(threads)]
    # the server's output goes to a file, not a pipe: a pipe nobody reads fills up during a
    # long run and then stalls the server mid-benchmark
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120 * workers  # the port opens once a worker is ready
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                raise RuntimeError(f"`{' '.join(cmd)}` did not start:\n{log.read()}")
            time.sleep(0.2)


class _Connection:
    """One keep-alive HTTP/1.1 connection written with asyncio streams: a client light enough
    (tens of microseconds a request) not to be what is measured at concurrency 32, where a
    full HTTP client library in this process took a large share of the two cores."""

    def __init__(self, reader, writer, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> "_Connection":
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, host)

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "image/jpeg") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _level(url: str, images: list[bytes], concurrency: int, requests: int,
                 time_limit: float) -> dict:
    latencies, failures, sent = [], 0, 0
    conns = [await _Connection.open(url) for _ in range(concurrency)]
    for image in images[:3]:  # warm-up
        await conns[0].request("POST", "/v1/predict", image)
    start = time.perf_counter()
    stop_at = start + time_limit

    async def user(conn: _Connection):
        nonlocal failures, sent
        while sent < requests and time.perf_counter() < stop_at:
            image = images[sent % len(images)]
            sent += 1
            t0 = time.perf_counter()
            try:
                status, _ = await conn.request("POST", "/v1/predict", image)
                ok = status == 200
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                ok = False
                conn = await _Connection.open(url)
            latencies.append(time.perf_counter() - t0)
            failures += not ok

    await asyncio.gather(*(user(c) for c in conns))
    elapsed = time.perf_counter() - start
    _, metrics = await conns[0].request("GET", "/metrics")
    for c in conns:
        c.close()
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies), "failed": failures,
            "seconds": round(elapsed, 2), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "batch_metrics": _batch_totals(metrics.decode())}


def _batch_totals(metrics: str) -> tuple[float, float]:
    total = float(re.search(r"^vggnet_batch_size_sum ([\d.e+]+)$", metrics, re.M).group(1))
    count = float(re.search(r"^vggnet_batch_size_count ([\d.e+]+)$", metrics, re.M).group(1))
    return total, count


def _ensure_int8(run: str, data_root: Path) -> None:
    from vggnet.cli import main
    from vggnet.run import resolve_checkpoint

    if not resolve_checkpoint(run).with_suffix(".int8.onnx").is_file():
        if main(["export", run, "--int8", "--data-root", str(data_root)]) != 0:
            raise SystemExit("could not make the int8 model")


def main() -> None:
    from vggnet.bench import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/cifar10_quick", help="a CIFAR-10 run to serve")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=400, help="requests per level (at most)")
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per level (at most)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, help="inference threads of the server")
    ap.add_argument("--backends", nargs="+", default=["torch", "int8"])
    ap.add_argument("--out")
    args = ap.parse_args()
    data_root = Path(args.data_root)
    images = _test_images(data_root, 100)
    if "int8" in args.backends:
        _ensure_int8(args.run, data_root)
    rows = []
    for label, backend, max_batch in CONFIGS:
        if backend not in args.backends:
            continue
        proc, url = _start(args.run, backend, max_batch, args.max_wait_ms, args.threads)
        try:
            before = (0.0, 0.0)
            for c in args.concurrency:
                row = asyncio.run(_level(url, images, c, args.requests, args.time_limit))
                total, count = row.pop("batch_metrics")
                row["mean_batch"] = round((total - before[0]) / max(1.0, count - before[1]), 2)
                before = (total, count)
                row.update(config=label, backend=backend, max_batch=max_batch)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {"environment": environment(), "run": args.run, "max_wait_ms": args.max_wait_ms,
              "requests_per_level": args.requests, "time_limit_s": args.time_limit,
              "client": "asyncio streams, one keep-alive connection per user, on the same machine; "
                        "one raw-body JPEG per request",
              "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
