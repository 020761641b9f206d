"""What a run ran on: every installed package's version and the CPU.

Two runs of the same code, params and data can still differ in their last digits: a TensorFlow,
Keras or NumPy upgrade changes kernels, and TensorFlow's CPU kernels pick code paths by the
instruction sets the CPU has. Each run records both, so such a difference can be traced.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

import mlflow
from mlflow.entities import RunTag

KEY_PACKAGES = ("tensorflow", "keras", "numpy", "mlflow", "dvc")
# The instruction sets TensorFlow's CPU kernels (oneDNN, Eigen, XLA) choose code paths by.
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def packages() -> dict[str, str]:
    """{name: version} of every installed distribution, by lowercase name, the one Python imports
    first when two are installed."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        if name := dist.metadata["Name"]:
            found.setdefault(name.lower(), dist.version)
    return dict(sorted(found.items()))


def requirements() -> str:
    """Every installed distribution as `name==version` lines (environment.txt: diff two runs')."""
    return "".join(f"{name}=={version}\n" for name, version in packages().items())


def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo; {} where there is none (not Linux)."""
    try:
        first = Path(path).read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def tags() -> dict[str, str]:
    """The key versions (`version.python`, `version.tensorflow`, ...) and the CPU (`cpu.model`,
    `cpu.cores`, `cpu.flags`: which of CPU_FLAGS it has) as MLflow tags."""
    installed, info = packages(), cpu_info()
    flags = set(info.get("flags", "").split())
    return {"version.python": platform.python_version(),
            **{f"version.{name}": installed[name] for name in KEY_PACKAGES if name in installed},
            "cpu.model": info.get("model name") or platform.processor() or platform.machine(),
            "cpu.cores": str(os.cpu_count()),
            "cpu.flags": " ".join(flag for flag in CPU_FLAGS if flag in flags)}


def log(run_id: str) -> None:
    """Tag run `run_id` with the key package versions and the CPU, and attach every installed
    distribution as environment.txt (from the repository root: see store.at_root)."""
    client = mlflow.MlflowClient()
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags().items()])
    client.log_text(run_id, requirements(), "environment.txt")
