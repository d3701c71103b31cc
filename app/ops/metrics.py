from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route and status", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("rq_queue_depth", "Jobs waiting in each RQ queue", ["queue"], registry=REGISTRY)
DEPENDENCY_UP = Gauge("dependency_up", "1 when the last health probe reached the dependency", ["dependency"],
                      registry=REGISTRY)
RQ_WORKERS = Gauge("rq_workers", "RQ workers registered in Redis", registry=REGISTRY)
OUTBOX_TASKS = Gauge("outbox_tasks", "Outbox tasks dead-lettered, or due and waiting past the sweep", ["state"],
                     registry=REGISTRY)


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """A fixed set: the method comes from the client, and each new label value is a new series."""
    return method if method in _KNOWN_METHODS else "OTHER"


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
