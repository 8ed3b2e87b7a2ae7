"""Prometheus metrics of one service (its own registry, so several apps in one process, as in
tests, do not mix their counts).

With ``--workers N`` each worker counts in files of a folder the front gives it (prometheus
client's multiprocess mode), and the front answers ``GET /metrics`` with the sums over every
worker, those that died and were replaced included (so the counters never go back), followed
by the front's own counters (:class:`FrontMetrics`)."""

from __future__ import annotations

ROUTES = ("/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/metrics", "/")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("vggnet_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("vggnet_request_latency_seconds", "time to answer a request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vggnet_batch_size", "images per forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.images_total = Counter("vggnet_images", "images classified", registry=r)
        self.errors = Counter("vggnet_errors", "requests refused or failed, by reason",
                              ["reason"], registry=r)

    @staticmethod
    def route_label(path: str) -> str:
        """A bounded set of labels: known routes as they are, static files as one, the rest as
        'other' (so that scanning for random URLs cannot grow the metrics)."""
        if path in ROUTES:
            return path
        return "/static" if path.startswith("/static/") else "other"

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, n: int) -> None:
        self.batch_size.observe(n)

    def images(self, n: int) -> None:
        self.images_total.inc(n)

    def error(self, reason: str) -> None:
        self.errors.labels(reason).inc()

    @property
    def content_type(self) -> str:
        from prometheus_client import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def count_in_folder(folder: str) -> None:
    """Make this process's metrics live in files under ``folder``, for a front to sum (the
    multiprocess mode of prometheus-client). Called by a ``--workers`` worker before it builds
    its service, whether or not prometheus-client was imported already."""
    import os

    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    values.ValueClass = values.get_value_class()


class FrontMetrics:
    """What only the front of ``--workers N`` knows: requests it answered itself (a worker
    died under them, none was ready, the service was draining, the upload was too large) and
    workers it replaced."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter

        self.registry = r = CollectorRegistry()
        self.errors = Counter("vggnet_front_errors", "requests the front answered itself with "
                              "an error, by reason", ["reason"], registry=r)
        self.restarts = Counter("vggnet_worker_restarts", "worker processes that exited and "
                                "were replaced", registry=r)

    def error(self, reason: str) -> None:
        self.errors.labels(reason).inc()

    def render(self, folder: str) -> str:
        """The workers' metrics summed from ``folder``, then the front's own."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=folder)
        return (generate_latest(workers) + generate_latest(self.registry)).decode()
