"""Load test of the Gradio demo: C concurrent gradio_client clients x R requests each.

    .venv/bin/python -m bench.load_test                         # newest INT8 artifact under exports/, 50 x 20
    .venv/bin/python -m bench.load_test --artifact exports/run/artifact --clients 20 --requests 10
    .venv/bin/python -m bench.load_test --url http://127.0.0.1:7860   # an app that is already running

Without --url it starts the app itself (`edgesent.app.build_app` + launch on 127.0.0.1, a free
port) in this process and stops it at the end. Each client is a `gradio_client.Client` in its own
thread that sends its R requests one after another to the `/predict` endpoint, so at most C
requests are in flight; every reply is checked (a label -> confidence mapping over the artifact's
labels). It prints the errors (count and the first few messages), p50/p90/p99 latency and the
throughput, and can write them as JSON (--json).

Bounded on purpose: at most 500 clients and 10,000 requests per client, a wall-clock limit
(--max-seconds; requests not started by then are counted as skipped, not as errors), and loopback
targets only (127.0.0.1, ::1, localhost), so it cannot be aimed at someone else's server.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from edgesent.bench.plan import newest_artifact
from edgesent.errors import run_main

MAX_CLIENTS = 500
MAX_REQUESTS = 10_000
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
TEXTS = [
    "An absolute delight from start to finish, with a cast clearly having fun.",
    "Two hours I will never get back. The plot makes no sense.",
    "Gorgeous to look at, but the story drags badly in the middle.",
    "great",
    "",
    "The lead tries hard, yet the script gives her nothing to work with. " * 20,
    "😀 هذا الفيلم رائع جدا",
]


@dataclass
class LoadResult:
    url: str
    clients: int
    requests_per_client: int
    completed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    error_samples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.url}: {self.clients} clients x {self.requests_per_client} requests",
            f"  completed {self.completed}, errors {self.errors}, skipped (time limit) {self.skipped}",
            f"  latency p50 {_ms(self.p50_ms)}, p90 {_ms(self.p90_ms)}, p99 {_ms(self.p99_ms)}, max {_ms(self.max_ms)}",
            f"  throughput {self.throughput_rps:.1f} requests/s over {self.seconds:.1f} s",
        ]
        lines += [f"  error: {message}" for message in self.error_samples]
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def check_loopback(url: str) -> str:
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"error: {url} is not a loopback address; the load test only targets 127.0.0.1/::1/localhost")
    return url


def start_app(artifact: str | os.PathLike, model: str | None = None):
    """Build and launch the demo on 127.0.0.1 (free port) without blocking; returns (demo, url)."""
    from edgesent.app import build_app, launch_app

    demo = build_app(artifact, model=model)
    url = launch_app(demo, host="127.0.0.1", port=0, prevent_thread_lock=True)
    return demo, url


def run_load(url: str, clients: int = 50, requests: int = 20, max_seconds: float = 300.0,
             texts: list[str] | None = None, labels: list[str] | None = None, auth: tuple[str, str] | None = None,
             api_name: str = "/predict") -> LoadResult:
    """Send clients x requests predictions to `url` and measure them (see the module docstring)."""
    from gradio_client import Client

    check_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS:
        raise SystemExit(f"error: --clients must be between 1 and {MAX_CLIENTS}, got {clients}")
    if not 1 <= requests <= MAX_REQUESTS:
        raise SystemExit(f"error: --requests must be between 1 and {MAX_REQUESTS}, got {requests}")
    texts = texts or TEXTS
    deadline = time.monotonic() + max_seconds
    latencies: list[float] = []
    errors: list[str] = []
    skipped = 0
    lock = threading.Lock()

    def check(reply) -> None:
        probs = reply[0] if isinstance(reply, (list, tuple)) else reply
        if not isinstance(probs, dict):
            raise ValueError(f"unexpected reply {reply!r:.120}")
        got = {str(c.get("label")) for c in probs.get("confidences", [])} or set(probs) - {"label", "confidences"}
        if labels is not None and not set(labels) <= got:
            raise ValueError(f"reply lacks labels {sorted(set(labels) - got)}: {reply!r:.120}")

    def worker(index: int) -> None:
        nonlocal skipped
        try:
            client = Client(url, verbose=False, auth=auth, download_files=False, analytics_enabled=False)
        except Exception as exc:  # connection refused, bad auth, ...
            with lock:
                errors.extend([f"client {index}: {type(exc).__name__}: {exc}"] * requests)
            return
        for i in range(requests):
            if time.monotonic() > deadline:
                with lock:
                    skipped += requests - i
                return
            text = texts[(index + i) % len(texts)]
            start = time.perf_counter()
            try:
                check(client.predict(text, api_name=api_name))
            except Exception as exc:
                with lock:
                    errors.append(f"client {index} request {i}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="load") as pool:
        list(pool.map(worker, range(clients)))
    seconds = time.perf_counter() - started
    return LoadResult(
        url=url, clients=clients, requests_per_client=requests, completed=len(latencies), errors=len(errors),
        skipped=skipped, seconds=seconds, throughput_rps=len(latencies) / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 50), p90_ms=percentile(latencies, 90), p99_ms=percentile(latencies, 99),
        max_ms=max(latencies) if latencies else None,
        error_samples=list(dict.fromkeys(e.split(": ", 1)[-1] for e in errors))[:5],
    )


def main(argv: list[str] | None = None) -> LoadResult:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--artifact", help="artifact folder to serve (default: newest INT8 artifact under exports/)")
    target.add_argument("--url", help="an already running app on loopback, e.g. http://127.0.0.1:7860")
    parser.add_argument("--model", help="int8, fp32 or a file name (with --artifact)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--requests", type=int, default=20, help="requests per client (default 20)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop starting requests after S seconds")
    parser.add_argument("--auth", help="user:password when the app requires a login")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1,localhost,::1"]))

    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    demo = None
    labels = None
    if args.url:
        url = check_loopback(args.url)
    else:
        artifact = Path(args.artifact) if args.artifact else newest_artifact(precision="int8")
        demo, url = start_app(artifact, model=args.model)
        labels = demo.edgesent_classifier.labels
        print(f"serving {artifact} ({demo.edgesent_classifier.model_file}) at {url}", file=sys.stderr)
    try:
        result = run_load(url, clients=args.clients, requests=args.requests, max_seconds=args.max_seconds,
                          labels=labels, auth=auth)
    finally:
        if demo is not None:
            demo.close()
    print(result.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    run_main(lambda argv: 1 if main(argv).errors else 0)  # no artifact to serve: one line, no traceback
