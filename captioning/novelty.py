"""How far an image is from the images the model learned from, so a caption can say "I don't know".

A captioner trained on Flickr8k describes a blank page, noise or a bar chart as "a dog running
through the grass", as plainly as a right caption, and the caption's own probability does not tell
them apart: the language model is sure of "a dog is running" whatever the image. The encoder's
features do tell them apart. This module scores an image by how far its features lie from the
training split's, with a threshold set on the dev split (never the test set), so the CLI, the web
service and the MLflow model can flag an image as `unsure`, all from the same saved files.

- `descriptor`: one vector per image from the stored encoder rows: a grid (n, regions, c) is pooled
  over regions (mean and max, concatenated: what fills the image and its strongest responses),
  then every vector is L2-normalised (brightness and contrast scale activations; direction is what
  separates kinds of image);
- two scorers: `mahalanobis` (distance in the training descriptors' whitened space, covariance
  shrunk toward a scaled identity by Ledoit-Wolf, as there are fewer images than dimensions) and
  `knn` (mean cosine distance to the k nearest of a seeded sample of training images, float16);
- `fit` -> `Novelty` (`score`, `threshold`, `assess`); `save` / `load` write and read
  models/novelty.npz (plain arrays, never pickled) and models/novelty.json (settings, counts).

Which scorer separates best was measured: docs/results.md, benchmarks/probes/novelty_separation.py.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from captioning.io import DataError, atomic_path, write_json

METHODS = ("mahalanobis", "knn")
NPZ, JSON = "novelty.npz", "novelty.json"
CHUNK = 256  # feature rows pooled at a time: a 7x7x1280 float16 grid is 125 KB a row
MAX_COMPONENTS = 256  # whitened directions kept one by one; the rest share their mean variance
MAX_REFERENCE = 1000  # knn: training images kept (float16, 5 MB at 2,560 dims): 500-2,000 separate alike
REASON = "this image looks unlike the photos this model learned from"
# Scoring runs BLAS on one thread: a served image's products are tiny, and OpenBLAS's threads on a
# busy 2-core machine made one knn product 7.5 ms instead of 0.07 ms. Made once: it inspects the
# loaded libraries.
BLAS = ThreadpoolController()


# -----------------------------------------------------------------------------
# Descriptors.

def pool(rows: np.ndarray) -> np.ndarray:
    """(n, regions, c) grids -> (n, 2c) mean and max over regions; (n, c) vectors unchanged; float32."""
    rows = np.asarray(rows, dtype=np.float32)  # cast first: numpy reduces float16 in slow emulated steps
    if rows.ndim == 3:
        return np.concatenate([rows.mean(axis=1), rows.max(axis=1)], axis=1)
    if rows.ndim == 2:
        return rows
    raise DataError(f"features of shape {rows.shape}: expected (n, regions, c) grids or (n, c) vectors")


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)  # an all-zero row (ReLU on a blank image) stays zero


def descriptor(features) -> np.ndarray:
    """(n, d) float32 unit descriptors of encoder rows (an array, or anything with len() and slicing
    such as `StoreRows`), pooled CHUNK rows at a time so a big split never sits in RAM as grids."""
    parts = [l2_normalise(pool(features[i:i + CHUNK])) for i in range(0, len(features), CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class StoreRows:
    """Rows of a feature store (anything with `read(rows)`, e.g. FeatureStore), read a slice at a time."""

    store: object
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        return self.store.read(self.rows[part])


# -----------------------------------------------------------------------------
# Scorers: fitted arrays in, one score per image out (higher: more unlike the training images).

def fit_mahalanobis(x: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, top principal directions, their shrunk variances and the rest's shared variance."""
    n, p = x.shape
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / n
    # Ledoit-Wolf: the shrinkage toward mu*I that minimises the expected error of the estimate.
    mu = np.trace(cov) / p
    d2 = (cov * cov).sum() - p * mu * mu
    b2 = min(((xc * xc).sum(axis=1) ** 2).sum() / n ** 2 - (cov * cov).sum() / n, d2)
    shrink = float(b2 / d2) if d2 > 0 else 1.0
    values, vectors = np.linalg.eigh(cov)  # ascending
    keep = min(MAX_COMPONENTS, p)
    top, comps = values[::-1][:keep], vectors[:, ::-1][:, :keep]
    rest = max(float(np.trace(cov) - top.sum()), 0.0) / (p - keep) if p > keep else 0.0
    floor = max(shrink * mu, 1e-12)
    return {"mean": mean.astype(np.float32), "components": comps.T.astype(np.float32),
            "variances": ((1 - shrink) * np.clip(top, 0, None) + floor).astype(np.float32),
            "residual": np.float32((1 - shrink) * rest + floor), "shrinkage": np.float32(shrink)}


def score_mahalanobis(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    xc = x - arrays["mean"]
    z = xc @ arrays["components"].T
    residual = (xc * xc).sum(axis=1) - (z * z).sum(axis=1)  # squared length outside the kept directions
    d2 = (z * z / arrays["variances"]).sum(axis=1) + np.clip(residual, 0, None) / arrays["residual"]
    return np.sqrt(d2 / x.shape[1])  # per dimension: comparable across encoders, same ranking


def fit_knn(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """A seeded sample of at most MAX_REFERENCE training descriptors (unit vectors), float16."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(x), size=min(len(x), MAX_REFERENCE), replace=False))
    return {"reference": x[rows].astype(np.float16)}


def score_knn(arrays: dict[str, np.ndarray], x: np.ndarray, k: int) -> np.ndarray:
    # float16 on disk, float32 to multiply: `Novelty` keeps the cast copy, transposed ("columns"), as
    # numpy's float16 cast of 2,000 x 2,560 values costs ~100 ms, far more than the product itself.
    columns = arrays.get("columns")
    similarity = x @ (arrays["reference"].astype(np.float32).T if columns is None else columns)
    k = min(k, similarity.shape[1])
    nearest = -np.partition(-similarity, k - 1, axis=1)[:, :k]
    return 1.0 - nearest.mean(axis=1)  # mean cosine distance to the k nearest training images


# -----------------------------------------------------------------------------
# The fitted model.

@dataclass
class Novelty:
    method: str
    arrays: dict[str, np.ndarray]
    threshold: float
    quantile: float
    k: int
    feature_shape: tuple[int, ...]  # one encoder row, as stored: scoring other features is refused
    counts: dict[str, int] = field(default_factory=dict)  # images fitted on ("train") and thresholded on ("dev")
    dataset: str | None = None  # named in the reason users read

    def __post_init__(self):
        self._prepare()

    def _prepare(self) -> None:
        """Scoring-time copies of the saved arrays (never saved themselves)."""
        if "reference" in self.arrays:
            self.scoring = {"reference": self.arrays["reference"],
                            "columns": np.ascontiguousarray(self.arrays["reference"].astype(np.float32).T)}
        else:
            self.scoring = self.arrays

    @property
    def dims(self) -> int:
        return int(self.arrays["mean" if self.method == "mahalanobis" else "reference"].shape[-1])

    def score(self, features) -> np.ndarray:
        """(n,) novelty of encoder rows shaped like the training ones: higher is less like them."""
        shape = tuple(np.shape(features[:1])[1:]) if len(features) else self.feature_shape
        if shape != self.feature_shape:
            raise DataError(f"{JSON}: fitted on encoder rows of shape {list(self.feature_shape)}, got {list(shape)}; "
                            "refit it with the model's encoder (dvc repro novelty)")
        x = descriptor(features)
        if len(x) == 0:
            return np.zeros(0, np.float32)
        with BLAS.limit(limits=1, user_api="blas"):
            if self.method == "mahalanobis":
                return score_mahalanobis(self.scoring, x).astype(np.float32)
            return score_knn(self.scoring, x, self.k).astype(np.float32)

    @property
    def reason(self) -> str:
        return f"{REASON} ({self.dataset})" if self.dataset else REASON

    def assess(self, features) -> list[dict]:
        """Per image: {"novelty", "threshold", "unsure", "reason"} (reason None when not unsure)."""
        return [{"novelty": round(float(s), 4), "threshold": round(self.threshold, 4), "unsure": bool(s > self.threshold),
                 "reason": self.reason if s > self.threshold else None} for s in self.score(features)]


UNKNOWN = {"novelty": None, "threshold": None, "unsure": None, "reason": None}  # a model without novelty files


def fit(train_features, dev_features, *, method: str, quantile: float, k: int, seed: int,
        dataset: str | None = None) -> Novelty:
    """Fit `method` on the training rows; the threshold is the dev rows' `quantile` of their scores."""
    if method not in METHODS:
        raise DataError(f"params.yaml novelty.method={method!r}: use {' or '.join(METHODS)}")
    if not 0 < quantile <= 1:
        raise DataError(f"params.yaml novelty.quantile={quantile}: must be in (0, 1]")
    if k < 1:
        raise DataError(f"params.yaml novelty.k={k}: must be >= 1")
    if len(train_features) < 2 or len(dev_features) < 1:
        raise DataError(f"novelty: {len(train_features)} training and {len(dev_features)} dev images; "
                        "needs at least 2 and 1 (check data/split.json)")
    x = descriptor(train_features)
    arrays = fit_mahalanobis(x) if method == "mahalanobis" else fit_knn(x, seed)
    shape = tuple(np.shape(train_features[:1])[1:])
    model = Novelty(method, arrays, 0.0, quantile, k, shape, {"train": len(x), "dev": len(dev_features)}, dataset)
    model.threshold = float(np.quantile(model.score(dev_features), quantile))
    return model


# -----------------------------------------------------------------------------
# Files: models/novelty.npz (arrays) + models/novelty.json (everything else).

def save(model_dir: str | Path, novelty: Novelty) -> None:
    model_dir = Path(model_dir)
    with atomic_path(model_dir / NPZ) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, **novelty.arrays)
    write_json(model_dir / JSON, {
        "method": novelty.method, "threshold": novelty.threshold, "quantile": novelty.quantile, "k": novelty.k,
        "dims": novelty.dims, "feature_shape": list(novelty.feature_shape), "fitted_on": novelty.counts,
        "dataset": novelty.dataset, "arrays": {name: list(a.shape) for name, a in novelty.arrays.items()}})


EXPECTED = {"mahalanobis": ("mean", "components", "variances", "residual"), "knn": ("reference",)}


def load(model_dir: str | Path) -> Novelty | None:
    """The saved novelty model, or None when the directory has neither file (models from before it)."""
    model_dir = Path(model_dir)
    npz, meta_path = model_dir / NPZ, model_dir / JSON
    if not npz.exists() and not meta_path.exists():
        return None
    redo = "rerun `dvc repro novelty`, or delete both models/novelty.* files to caption without it"
    for path in (npz, meta_path):
        if not path.exists():
            raise DataError(f"{path}: missing (its twin is there); {redo}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        method, threshold = meta["method"], float(meta["threshold"])
        shapes = {name: tuple(shape) for name, shape in meta["arrays"].items()}
        novelty = Novelty(method, {}, threshold, float(meta["quantile"]), int(meta["k"]),
                          tuple(meta["feature_shape"]), dict(meta.get("fitted_on") or {}), meta.get("dataset"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{meta_path}: not valid novelty settings ({type(e).__name__}: {e}); {redo}") from None
    if method not in METHODS:
        raise DataError(f"{meta_path}: method {method!r} is not one of {', '.join(METHODS)}; {redo}")
    try:
        with np.load(npz, allow_pickle=False) as data:
            novelty.arrays = {name: data[name] for name in data.files}
        novelty._prepare()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{npz}: not a readable novelty model ({type(e).__name__}: {e}); {redo}") from None
    got = {name: tuple(a.shape) for name, a in novelty.arrays.items()}
    if any(name not in got for name in EXPECTED[method]) or got != shapes:
        raise DataError(f"{npz}: arrays {got} do not match {meta_path.name}'s {shapes}; {redo}")
    return novelty
