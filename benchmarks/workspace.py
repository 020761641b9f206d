"""Where the benchmarks find their inputs, and how they measure a process of its own.

Every path a benchmark reads is an argument; these are its defaults: the checkout the benchmark
lives in, and the shared Flickr8k files beside it (../shared, where the tests find them too). A
missing input stops the benchmark with one line saying what to run first, never a stand-in: a
figure measured on other inputs than the ones it names is a wrong figure.
"""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = ROOT.parent / "shared/data/flickr8k"
SAMPLES = FLICKR8K / "images_sample/resized224_test"
NO_SHARED = "put the shared Flickr8k files beside the checkout (../shared) or pass their path"
NOT_TRAINED = "run `dvc repro` (make run) in that checkout first"
NOT_SHAPES = "this reads the shapes dataset's scenes: run `dvc repro` with data.dataset: shapes (the default)"


def require(path: Path, then: str) -> Path:
    """`path` if it exists; otherwise exit with one line: what is missing and `then`, what to do."""
    if not path.exists():
        raise SystemExit(f"error: {path} not found; {then}")
    return path


def trained_test_set(project: Path, mmap: bool = False):
    """(model, vocabulary, test image names, their features) of a checkout after `dvc repro`."""
    # Imported here: the processes in_own_process starts import this module, and measure their RSS.
    from captioning.feature_store import FeatureStore
    from captioning.io import read_json
    from captioning.models import load_model
    from captioning.text import Vocabulary

    model, vocab, features, split = (require(project / p, NOT_TRAINED) for p in
                                     ("models/model.keras", "models/vocab.json", "data/features", "data/split.json"))
    store = FeatureStore.open(features)
    names, feats = store.names, (store.memmap() if mmap else store.load())
    rows = {n: i for i, n in enumerate(names)}
    test = read_json(split)["test"]
    return load_model(model), Vocabulary.from_json(read_json(vocab)), test, feats[[rows[i] for i in test]]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_own_process(module: str, *args: str) -> dict:
    """Run `python -m module *args` in a fresh process, so its peak RSS is its own; the JSON object
    its last output line holds."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

