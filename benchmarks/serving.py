"""`captioning serve` under load, against the features stage's own images/s, measured in one run.

Starts the server (a subprocess, so its RSS is its own) on 127.0.0.1 with a trained model directory,
then measures over real HTTP with the Flickr8k sample JPEGs:
  - warm single-image latency p50/p95 (one client, sequential requests);
  - throughput with 1, 4 and 16 concurrent clients (a bounded number of requests each level);
  - failed requests (anything but 200), peak RSS, and RSS sampled over ~1,000 requests (flat?);
  - the features stage's images/s on the same images with the model's own encoder (features.extract,
    batch 32), measured in this process while the server is idle, for comparison.
Targets (2-core machine): p50 <= 150 ms; 16 clients >= 0.8x the features images/s; zero failures;
flat RSS.

    python -m benchmarks.serving [models] [--requests 96] [--rss-requests 1000]
"""

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.workspace import NO_SHARED, NOT_TRAINED, ROOT, SAMPLES, require

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def start_server(model_dir: Path, port: int) -> subprocess.Popen:
    # Logs to a file, not a pipe nobody reads: a full pipe would block the server mid-benchmark.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "captioning", "serve", "--model", model_dir, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited {proc.returncode}: {log.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)  # polling start-up, bounded by the deadline
    proc.kill()
    raise TimeoutError("server did not start in 600 s")


def load(url: str, images: list[bytes], clients: int, requests: int) -> tuple[float, list[float], int]:
    """(images/s, per-request seconds, failures) for `requests` requests spread over `clients` threads."""
    def client(k: int) -> tuple[list[float], int]:
        times, failed = [], 0
        with httpx.Client(timeout=120) as http:
            for i in range(k, requests, clients):
                start = time.perf_counter()
                try:
                    r = http.post(f"{url}/caption", content=images[i % len(images)],
                                  headers={"content-type": "image/jpeg"})
                    failed += r.status_code != 200
                except httpx.HTTPError:
                    failed += 1
                times.append(time.perf_counter() - start)
        return times, failed

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - start
    return requests / elapsed, [t for ts, _ in results for t in ts], sum(f for _, f in results)


def features_rate(model_dir: Path, paths: list[Path], batch_size: int = 32) -> float:
    """The features stage's images/s with this model's encoder on the same images (after a warm-up)."""
    from benchmarks.features_throughput import stage  # TensorFlow: loaded once the server is stopped
    from captioning.features import load_encoder

    spec, encoder = load_encoder(model_dir)
    return stage(encoder, paths, batch_size, spec.image_size, spec.backbone)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path, nargs="?", default=ROOT / "models",
                        help="a trained model directory (models/ after dvc repro)")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--latency-requests", type=int, default=50)
    parser.add_argument("--rss-requests", type=int, default=1000)
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="the JPEGs to send (Flickr8k samples)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    require(args.model_dir / "model.keras", NOT_TRAINED)
    paths = sorted(require(args.samples, NO_SHARED).glob("*.jpg"))
    images = [p.read_bytes() for p in paths]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    server = start_server(args.model_dir, port)
    failures = 0
    try:
        health = httpx.get(f"{url}/health").json()
        model = health["model"]
        print(f"model {args.model_dir}: {model['architecture']}, {model['image_size']} px, {model['pooling']} "
              f"features, vocabulary {model['vocabulary']}, beam {model['decoding']['beam_size']}; "
              f"server ready in {time.perf_counter() - t0:.1f} s, {os.cpu_count()} CPUs")
        load(url, images, 1, 8)  # warm-up
        _, times, failed = load(url, images, 1, args.latency_requests)
        failures += failed
        ms = np.array(times) * 1000
        print(f"warm single-image latency: p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms "
              f"({args.latency_requests} sequential requests)")
        rates = {}
        for clients in (1, 4, 16):
            calls_before = httpx.get(f"{url}/health").json()["batching"]["model_calls"]
            rate, times, failed = load(url, images, clients, args.requests)
            calls = httpx.get(f"{url}/health").json()["batching"]["model_calls"] - calls_before
            failures += failed
            rates[clients] = rate
            print(f"{clients:2d} clients: {rate:6.1f} images/s, p50 {np.median(times) * 1000:6.1f} ms, "
                  f"{args.requests} requests in {calls} model calls, {failed} failed")
        rss = [rss_mb(server.pid)[0]]
        step = max(args.rss_requests // 10, 1)
        for _ in range(0, args.rss_requests, step):
            _, _, failed = load(url, images, 4, step)
            failures += failed
            rss.append(rss_mb(server.pid)[0])
        print(f"RSS over {args.rss_requests} more requests (MB, every {step}): " + " ".join(f"{r:.0f}" for r in rss))
        print(f"RSS change over the last {args.rss_requests - step} requests: {rss[-1] - rss[1]:+.1f} MB; "
              f"peak RSS {rss_mb(server.pid)[1]:.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=60)
    features = features_rate(args.model_dir, paths)
    print(f"features stage (same encoder, same {len(paths)} images, batch 32): {features:.1f} images/s")
    print(f"16 clients / features stage: {rates[16] / features:.2f}x (target >= 0.8)")
    print(f"failed requests in total: {failures}")


if __name__ == "__main__":
    main()
