"""What growing the dataset costs, per stage, and what bigger datasets would need.

    python -m benchmarks.scaling precision [--batches 3] [--probe-scenes 240] [--probe-size 128]
    python -m benchmarks.scaling stages [--sizes 2000 8000 30000] [--train-steps 20]
    python -m benchmarks.scaling paper --features-img-s X --train-captions-s Y [--gpu-speedup 30]

precision: ResNet50 images/s with features.precision float32 vs bfloat16 (interleaved rounds in one
  process, so machine load hits both alike), the relative difference of the features, and the
  quality effect: linear-probe attribute accuracy (colour, shape, size, place of single-object
  scenes; benchmarks/probes/encoder_probe.py's probe) on float32 vs bfloat16 features of the same images.
stages: for N generated scenes, the download stage (scene generation) for real; the features stage's
  per-image cost and peak RSS measured on a sample (extraction streams to disk: RSS does not depend
  on N) and its time extrapolated; training on a generated feature store of N images with 5
  generated captions each: one full pass of the tf.data pipeline (every feature row read) plus
  --train-steps optimizer steps of the default model, peak RSS of that process, epoch time
  extrapolated from the step time. Training runs with the features in RAM and read from disk.
  Each measurement is its own process, so peak RSS is its own. Prints the fitted growth per stage.
paper: Flickr30k and COCO on 1 and 8 GPUs from per-image costs (measured here, or passed in).
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.workspace import in_own_process, peak_rss_mb

CAPTIONS_PER_IMAGE = 5
DATASETS = {"Flickr8k": (8_091, 40_455), "Flickr30k": (31_783, 158_915), "COCO 2014": (123_287, 616_767)}


def in_child(kind: str, **kwargs) -> dict:
    """`measure_<kind>(**kwargs)` in a fresh process (each imports only what it measures), so its peak
    RSS is its own; its result."""
    return in_own_process("benchmarks.scaling", "_child", kind, json.dumps(kwargs))


# -----------------------------------------------------------------------------
# precision

def precision(args) -> None:
    import tensorflow as tf

    from captioning.features import EncoderSpec, _forward, build_encoder

    x = tf.random.uniform((32, 224, 224, 3), 0, 255, seed=0)
    forward = {}
    for p in ("float32", "bfloat16"):
        forward[p] = _forward(build_encoder(EncoderSpec(weights="none", image_size=224, seed=1, precision=p)), 224, "resnet50")
        forward[p](x)  # trace and warm up
    rates = {p: [] for p in forward}
    for _ in range(args.rounds):
        for p, f in forward.items():
            start = time.perf_counter()
            for _ in range(args.batches):
                f(x).numpy()
            rates[p].append(args.batches * 32 / (time.perf_counter() - start))
    a, b = forward["float32"](x).numpy(), forward["bfloat16"](x).numpy()
    print(f"ResNet50 forward, 224 px, batch 32, {args.rounds} interleaved rounds of {args.batches} batches")
    for p, r in rates.items():
        print(f"  {p:9s} img/s per round {[round(v, 1) for v in r]}  median {np.median(r):.1f}")
    print(f"  bfloat16 / float32 = {np.median(rates['bfloat16']) / np.median(rates['float32']):.2f}x")
    print(f"  features: mean |bf16 - f32| / mean |f32| = {np.abs(a - b).mean() / np.abs(a).mean():.4f}")

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler

    from benchmarks.probes.encoder_probe import ATTRIBUTES, single_object_scenes
    from captioning.datasets import shapes

    scenes = single_object_scenes(args.probe_scenes, seed=0)
    size = args.probe_size
    images = np.stack([np.asarray(shapes.render_scene(s).resize((size, size)), np.float32) for s in scenes])
    accs = {}
    for p in ("float32", "bfloat16"):
        f = _forward(build_encoder(EncoderSpec(weights="none", image_size=size, seed=42, precision=p)), size, "resnet50")
        feats = np.concatenate([f(images[i:i + 32]).numpy() for i in range(0, len(images), 32)])
        x = StandardScaler().fit_transform(feats)
        classifier = LogisticRegression(max_iter=3000, C=0.1)
        accs[p] = {a: float(cross_val_score(classifier, x, [s["objects"][0][a] for s in scenes], cv=3).mean())
                   for a in ATTRIBUTES}
    print(f"linear-probe attribute accuracy, {args.probe_scenes} single-object scenes at {args.probe_size} px "
          "(3-fold CV, same images, same random-init encoder)")
    print(f"  {'':9s}" + "".join(f"{a:>8s}" for a in ATTRIBUTES) + "    mean")
    for p, acc in accs.items():
        print(f"  {p:9s}" + "".join(f"{acc[a]:8.3f}" for a in ATTRIBUTES) + f"{np.mean(list(acc.values())):8.3f}")
    diff = np.mean(list(accs["bfloat16"].values())) - np.mean(list(accs["float32"].values()))
    print(f"  bfloat16 - float32 mean accuracy: {diff:+.3f}")


# -----------------------------------------------------------------------------
# stages

def measure_download(n: int, out: str) -> dict:
    from captioning.datasets import shapes

    start = time.perf_counter()
    shapes.generate(Path(out), num_images=n, seed=42, progress=False)
    return {"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def measure_features(paths: list[str], out: str) -> dict:
    from captioning.feature_store import extract_to_store
    from captioning.features import EncoderSpec, build_encoder

    encoder = build_encoder(EncoderSpec(weights="none", image_size=224, seed=42))
    extract_to_store(encoder, paths[:32], Path(out) / "warm", 224, 32, progress=False, backbone="resnet50")  # trace
    start = time.perf_counter()
    extract_to_store(encoder, paths, Path(out) / "store", 224, 32, progress=False, backbone="resnet50")
    return {"seconds_per_image": (time.perf_counter() - start) / len(paths), "rss_mb": peak_rss_mb()}


def synthetic_store(directory: Path, n: int) -> None:
    """N images of 2048-d float32 features (what avg pooling stores), values irrelevant to cost."""
    from captioning.feature_store import StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(directory) as writer:
        for start in range(0, n, 1000):
            writer.append(rng.random((min(1000, n - start), 2048), np.float32))
        writer.finish([f"{i}.jpg" for i in range(n)], {})


def measure_train(store: str, mode: str, steps: int) -> dict:
    import keras

    from captioning import models
    from captioning.feature_store import FeatureStore
    from captioning.training import adapt_features, adapt_features_streamed

    disk = FeatureStore.open(store)
    n = len(disk)
    rng = np.random.default_rng(0)  # 5 captions per image, 8-16 tokens of a 60-word vocabulary
    rows = np.repeat(np.arange(n, dtype=np.int32), CAPTIONS_PER_IMAGE)
    seqs = np.zeros((len(rows), 20), np.int32)
    for i, length in enumerate(rng.integers(8, 17, len(rows))):
        seqs[i, :length] = [2, *rng.integers(4, 60, length - 2), 3]
    arch = models.get("merge_bilstm")
    feats = disk.load() if mode == "memory" else disk
    keras.utils.set_random_seed(0)
    model = arch.build(64, 20, disk.row_shape, units=128, embedding_dim=64, dropout=0.3, region_kernel=3)
    if mode == "memory":
        adapt_features(model, feats)
    else:
        adapt_features_streamed(model, disk, np.arange(n))
    ds = arch.batches(seqs, rows, feats, 512, 0)
    start, batches = time.perf_counter(), 0
    for _ in ds:  # one epoch of the input pipeline: every caption's prefixes, every feature row
        batches += 1
    pipeline_seconds = time.perf_counter() - start
    model.compile(optimizer="adam", loss=arch.loss)
    model.fit(ds.take(3), verbose=0)  # trace
    start = time.perf_counter()
    model.fit(ds.take(steps), verbose=0)
    step = (time.perf_counter() - start) / steps
    return {"images": n, "steps_per_epoch": batches, "pipeline_epoch_seconds": pipeline_seconds,
            "step_seconds": step, "epoch_seconds_est": step * batches, "rss_mb": peak_rss_mb()}


def fit_growth(sizes, values) -> str:
    """log-log slope: 0 = flat, 1 = linear in the number of images."""
    if len(set(sizes)) < 2:
        return "n/a (one measured size)"
    slope = np.polyfit(np.log(sizes), np.log(values), 1)[0]
    return f"~N^{slope:.2f}"


def stages(args) -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            if n <= args.download_max:
                rows[n] = {"download": in_child("download", n=n, out=str(tmp / f"raw{n}"))}
            else:  # generation is linear in N (each scene its own seeded generator): extrapolated
                last = rows[max(rows)]["download"]
                rows[n] = {"download": {"seconds": last["seconds"] * n / max(rows), "rss_mb": last["rss_mb"],
                                        "extrapolated": True}}
            images = sorted(str(p) for p in (tmp / f"raw{n}/images").glob("*.jpg"))
            if n == args.sizes[0]:
                feat = {k: in_child("features", paths=images[:k], out=str(tmp / f"f{k}"))
                        for k in args.feature_samples}
            rows[n]["features"] = feat[max(feat)]
            synthetic_store(tmp / f"store{n}", n)
            for mode in ("memory", "disk"):
                rows[n][f"train_{mode}"] = in_child("train", store=str(tmp / f"store{n}"), mode=mode,
                                                   steps=args.train_steps)
            shutil.rmtree(tmp / f"raw{n}", ignore_errors=True)
    per_image = rows[args.sizes[0]]["features"]["seconds_per_image"]
    print("features stage, 224 px, random-init ResNet50, batch 32: peak RSS by images extracted "
          + ", ".join(f"{k}: {v['rss_mb']:.0f} MB" for k, v in feat.items())
          + f"; {1 / per_image:.1f} img/s on {max(feat)} images")
    print(f"{'scenes':>7s} {'download s':>10s} {'RSS MB':>7s} {'features s*':>11s} "
          f"{'train RSS MB (RAM / disk)':>26s} {'epoch s* (RAM / disk)':>22s} {'pipeline-only epoch s':>22s}")
    for n, r in rows.items():
        tm, td = r["train_memory"], r["train_disk"]
        mark = "*" if r["download"].get("extrapolated") else " "
        print(f"{n:7d} {r['download']['seconds']:9.1f}{mark} {r['download']['rss_mb']:7.0f} {n * per_image:11.0f} "
              f"{tm['rss_mb']:12.0f} / {td['rss_mb']:<11.0f} {tm['epoch_seconds_est']:10.0f} / "
              f"{td['epoch_seconds_est']:<9.0f} {tm['pipeline_epoch_seconds']:9.1f} / {td['pipeline_epoch_seconds']:.1f}")
    sizes = list(rows)
    print("* extrapolated: download above --download-max = linear from the largest generated; features = N x "
          "measured s/image; epoch = steps/epoch x measured s/step "
          f"({args.train_steps} steps, batch 512)")
    real = [n for n in sizes if not rows[n]["download"].get("extrapolated")]
    print("fitted growth (time or RSS ~ N^k, over the measured sizes): download time "
          f"{fit_growth(real, [rows[n]['download']['seconds'] for n in real])}, download RSS "
          f"{fit_growth(real, [rows[n]['download']['rss_mb'] for n in real])}, train epoch "
          f"{fit_growth(sizes, [rows[n]['train_disk']['epoch_seconds_est'] for n in sizes])}, train RSS RAM "
          f"{fit_growth(sizes, [rows[n]['train_memory']['rss_mb'] for n in sizes])}, train RSS disk "
          f"{fit_growth(sizes, [rows[n]['train_disk']['rss_mb'] for n in sizes])}")
    first, last = sizes[0], sizes[-1]
    for mode in ("memory", "disk"):
        ratio = rows[last][f"train_{mode}"]["rss_mb"] / rows[first][f"train_{mode}"]["rss_mb"]
        print(f"training peak RSS {last} / {first} scenes, features in {'RAM' if mode == 'memory' else 'on disk'}: "
              f"{ratio:.2f}x (target <= 1.5x)")
    print(json.dumps({"features_img_s": 1 / per_image,
                      "train_captions_s": CAPTIONS_PER_IMAGE * last / rows[last]["train_disk"]["epoch_seconds_est"]}))


# -----------------------------------------------------------------------------
# paper

def paper(args) -> None:
    print(f"From this machine: features {args.features_img_s:.1f} img/s, training {args.train_captions_s:.0f} "
          f"captions/s per epoch (merge_bilstm, batch 512), 2 CPU cores. GPU figures assume one GPU is "
          f"{args.gpu_speedup:.0f}x this machine and 8 GPUs scale at {args.efficiency:.0%} (shards / mirrored).")
    print(f"{'dataset':10s} {'images':>8s} {'captions':>9s} {'avg feats':>9s} {'7x7 f16':>8s} {'14x14 f16':>9s}"
          f" {'features: CPU / 1 GPU / 8 GPU':>32s} {'epoch: CPU / 1 GPU / 8 GPU':>30s}")
    hours = lambda s: f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"
    for name, (images, captions) in DATASETS.items():
        feats = images / args.features_img_s
        epoch = captions / args.train_captions_s
        gpu, gpu8 = args.gpu_speedup, args.gpu_speedup * 8 * args.efficiency
        print(f"{name:10s} {images:8d} {captions:9d} {images * 8192 / 1e9:7.1f}GB {images * 49 * 4096 / 1e9:6.1f}GB "
              f"{images * 196 * 2048 * 2 / 1e9:7.1f}GB {hours(feats):>12s} / {hours(feats / gpu):>6s} / "
              f"{hours(feats / gpu8):>6s} {hours(epoch):>10s} / {hours(epoch / gpu):>6s} / {hours(epoch / gpu8):>6s}")


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        kind, kwargs = sys.argv[2], json.loads(sys.argv[3])
        print(json.dumps(globals()[f"measure_{kind}"](**kwargs)))
        return
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("precision")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--probe-scenes", type=int, default=240)
    p.add_argument("--probe-size", type=int, default=128)
    s = sub.add_parser("stages")
    s.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 30000])
    s.add_argument("--feature-samples", type=int, nargs="+", default=[64, 256])
    s.add_argument("--train-steps", type=int, default=20)
    s.add_argument("--download-max", type=int, default=8000, help="generate at most this many scenes for real")
    q = sub.add_parser("paper")
    q.add_argument("--features-img-s", type=float, required=True)
    q.add_argument("--train-captions-s", type=float, required=True)
    q.add_argument("--gpu-speedup", type=float, default=30.0)
    q.add_argument("--efficiency", type=float, default=0.9)
    args = parser.parse_args()
    {"precision": precision, "stages": stages, "paper": paper}[args.command](args)


if __name__ == "__main__":
    main()
