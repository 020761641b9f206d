"""How long the default pipeline takes, stage by stage, a second `dvc repro` (which must do nothing),
and the peak RSS of the biggest process it ran (a stage, or dvc itself).

Runs in a temporary clone of this repository (committed files only) with the default params, or
with `-S key=value` overrides (as `dvc exp run -S` takes them), using this interpreter's environment:

    python -m benchmarks.pipeline_timing [-S data.shapes.num_images=8000 ...]
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.workspace import ROOT


def run(cwd: Path, *args: str) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def override(params: dict, assignment: str) -> None:
    """Set params["a"]["b"] for "a.b=value"; the value is parsed as YAML (numbers, lists, null)."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    for name in parents:
        params = params[name]
    if leaf not in params:
        raise SystemExit(f"-S {assignment}: params.yaml has no {key}")
    params[leaf] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.overrides:
            params = yaml.safe_load((clone / "params.yaml").read_text())
            for assignment in args.overrides:
                override(params, assignment)
            (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            print("params:", " ".join(args.overrides))
        stages = list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
        times = {stage: run(clone, "repro", "--single-item", stage) for stage in stages}
        again = run(clone, "repro")
    width = max(map(len, stages))
    for stage, seconds in times.items():
        print(f"{stage:{width}s} {seconds:7.1f} s")
    print(f"{'total':{width}s} {sum(times.values()):7.1f} s")
    print(f"{'2nd dvc repro':{width}s} {again:7.1f} s (nothing to do)")
    # Stages are processes dvc waits for, and dvc is ours: the children's peak is the biggest of them.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the biggest process (a stage or dvc): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
