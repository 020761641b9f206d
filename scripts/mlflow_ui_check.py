"""Start the MLflow UI on 127.0.0.1 over this repo's store and print what its REST API lists.

    python scripts/mlflow_ui_check.py [REPO]

The same server `mlflow ui` starts; we ask it (not the database) for the runs of the `captioning`
experiment, so this checks what a person sees in the browser: run names, params, BLEU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd: list[str], port: int, health: str, deadline_s: float = 180, env=None, cwd=None):
    """Run a server process; yield its base URL once `health` answers 200 (polled, bounded)."""
    # Output goes to a file, not a pipe: nobody reads a pipe while the server runs, and a server
    # that logs every request blocks for good once the pipe's 64 KB buffer is full.
    log = tempfile.TemporaryFile(mode="w+")
    # Its own process group: `mlflow server` starts uvicorn and job-runner children, stopped with it.
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + deadline_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url + health, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{' '.join(cmd)}: no answer on {url}{health} within {deadline_s}s")
            time.sleep(0.5)  # polling interval, not a timing fix: the loop ends on the answer
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the parent
        proc.wait()
        log.close()


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def ui_runs(repo: Path) -> list[dict]:
    """Runs of the `captioning` experiment as the MLflow UI's REST API returns them."""
    port = free_port()
    store = f"sqlite:///{Path(repo).resolve() / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with server(cmd, port, "/health", env=env, cwd=repo) as url:  # the store's artifact paths are relative to it
        exp = post(f"{url}/api/2.0/mlflow/experiments/search", {"max_results": 100})
        ids = [e["experiment_id"] for e in exp["experiments"] if e["name"] == "captioning"]
        return post(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": ids, "max_results": 1000}).get("runs", [])


def main() -> None:
    runs = ui_runs(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"{'run name':<24} {'train.epochs':>12} {'bleu1':>8} {'bleu4':>8}")
    for run in runs:
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        print(f"{run['info']['run_name']:<24} {params.get('train.epochs', '-'):>12} "
              f"{metrics.get('bleu1', float('nan')):>8.4f} {metrics.get('bleu4', float('nan')):>8.4f}")


if __name__ == "__main__":
    main()
