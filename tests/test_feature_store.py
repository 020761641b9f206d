"""The on-disk feature store (captioning/feature_store.py): sharded extraction merges to the exact
bytes of the single run, rows are read on demand, and reading a store much bigger than what a
batch needs keeps memory flat."""

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import yaml
from conftest import REPO

from captioning.feature_store import (
    FEATURES,
    NAMES,
    FeatureStore,
    StoreWriter,
    extract_to_store,
    feature_batches,
    merge_stores,
    shard_range,
    write_store,
)
from captioning.features import EncoderSpec, build_encoder
from captioning.io import DataError
from captioning.samples import image_caption_batches, prefix_pairs


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_images):
    """Seven real Flickr8k images with an unreadable one among them (it must not shift the others)."""
    paths = list(sample_images[:7])
    bad = tmp_path_factory.mktemp("bad") / "truncated.jpg"
    bad.write_bytes(sample_images[7].read_bytes()[:500])
    return paths[:3] + [bad] + paths[3:]


@pytest.mark.parametrize("pooling", ["avg", "grid"])
def test_sharded_extraction_merges_to_the_bytes_of_the_single_run(tmp_path, images, pooling):
    encoder = build_encoder(EncoderSpec(weights="none", image_size=64, pooling=pooling, seed=5))
    with pytest.warns(UserWarning, match="truncated.jpg"):
        rows, skipped = extract_to_store(encoder, images, tmp_path / "one", 64, batch_size=3, progress=False, backbone="resnet50")
    assert rows == 7 and set(skipped) == {"truncated.jpg"}
    for shards in (2, 3):
        parts = [tmp_path / f"{i}-of-{shards}" for i in range(shards)]
        for i, part in reversed(list(enumerate(parts))):  # each shard its own run, in any order
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the unreadable image, reported again by its shard
                extract_to_store(encoder, images, part, 64, 3, shard=i, shards=shards, progress=False,
                                 backbone="resnet50")
        assert merge_stores(parts, tmp_path / f"merged{shards}") == (7, skipped)
        for name in (FEATURES, NAMES, "skipped.json"):
            assert (tmp_path / f"merged{shards}" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    store = FeatureStore.open(tmp_path / "one")
    names, feats = store.names, store.load()
    assert names == [p.name for p in images if p.name != "truncated.jpg"]
    assert feats.dtype == (np.float16 if pooling == "grid" else np.float32) and np.isfinite(feats).all()
    assert feats.shape == ((7, 4, 2048) if pooling == "grid" else (7, 2048))


def test_a_store_is_a_plain_npy_and_its_names(tmp_path):
    """write_store writes the very bytes np.save does (what the features stage always wrote), atomically;
    without `skipped` no skipped.json (held-out scenes)."""
    feats = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float16)
    batches = [(["a.jpg", "b.jpg"], feats[:2]), (["c.jpg", "d.jpg", "e.jpg"], feats[2:])]
    assert write_store(tmp_path / "store", batches) == 5
    np.save(tmp_path / "plain.npy", feats, allow_pickle=False)
    assert (tmp_path / "store" / FEATURES).read_bytes() == (tmp_path / "plain.npy").read_bytes()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [FEATURES, NAMES]
    store = FeatureStore.open(tmp_path / "store")
    assert store.names == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    np.testing.assert_array_equal(store.load(), feats)
    with pytest.raises(ValueError, match="rows of"):
        write_store(tmp_path / "mixed", [(["a.jpg"], feats[:1]), (["b.jpg"], feats[1:2].astype(np.float32))])
    assert not (tmp_path / "mixed").exists()


def test_shards_are_whole_batches_covering_every_image_once():
    for n, batch, shards in [(7, 3, 2), (100, 8, 3), (5, 32, 4), (0, 4, 2)]:
        ranges = [shard_range(n, batch, i, shards) for i in range(shards)]
        assert [i for r in ranges for i in r] == list(range(n))
        assert all(r.start % batch == 0 for r in ranges)
    with pytest.raises(DataError, match="shard 2 of 2"):
        shard_range(10, 2, 2, 2)


def test_merge_refuses_shards_of_different_feature_shapes(tmp_path):
    for name, shape in [("a", (2, 8)), ("b", (2, 4))]:
        writer = StoreWriter(tmp_path / name)
        writer.append(np.ones(shape, np.float32))
        writer.finish([f"{name}{i}" for i in range(2)], {})
    with pytest.raises(DataError, match="same features"):
        merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def store(tmp_path):
    feats = np.random.default_rng(0).normal(size=(10, 3, 4)).astype(np.float16)
    writer = StoreWriter(tmp_path / "store")
    for batch in np.array_split(feats, 3):
        writer.append(batch)
    writer.finish([f"{i}.jpg" for i in range(10)], {})
    return FeatureStore.open(tmp_path / "store"), feats


def test_store_reads_just_the_asked_rows_in_any_order(store):
    opened, feats = store
    assert opened.shape == (10, 3, 4) and opened.nbytes == feats.nbytes
    np.testing.assert_array_equal(opened.read([7, 2, 2, 0]), feats[[7, 2, 2, 0]])
    np.testing.assert_array_equal(opened.load(), feats)
    np.testing.assert_array_equal(opened.memmap()[3], feats[3])
    with pytest.raises(IndexError):
        opened.read([10])
    batches = [b.numpy() for b in feature_batches(opened, np.array([9, 1, 4]), 2)]
    np.testing.assert_array_equal(np.concatenate(batches), feats[[9, 1, 4]].astype(np.float32))


def test_training_batches_from_disk_equal_batches_from_memory(store):
    opened, feats = store
    seqs = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0], [2, 8, 9, 10, 3]], dtype=np.int32)
    rows = np.array([9, 0, 4], dtype=np.int32)
    flat = feats.reshape(10, -1)
    for batches, table in [(image_caption_batches, feats), (prefix_pairs, None)]:
        if table is None:  # prefix pairs take one vector per image
            writer = StoreWriter(opened.directory.parent / "flat")
            writer.append(flat)
            writer.finish(opened.names, {})
            disk, table = FeatureStore.open(opened.directory.parent / "flat"), flat
        else:
            disk = opened
        for from_disk, in_memory in zip(batches(seqs, rows, disk, 4, seed=1), batches(seqs, rows, table, 4, seed=1)):
            (f1, t1), y1 = from_disk
            (f2, t2), y2 = in_memory
            np.testing.assert_array_equal(f1.numpy(), f2.numpy())
            np.testing.assert_array_equal(t1.numpy(), t2.numpy())
            np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_a_damaged_store_is_a_clear_error(store):
    opened, _ = store
    path = opened.directory / FEATURES
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated at row 9"):
        opened.read([9])
    (opened.directory / NAMES).write_text(json.dumps(["only.jpg"]))
    with pytest.raises(DataError, match="1 names but 10 feature rows"):
        FeatureStore.open(opened.directory)
    path.write_text("not numpy")
    with pytest.raises(DataError, match="not a .npy feature file"):
        FeatureStore.open(opened.directory)


RSS_PROBE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from captioning.feature_store import FeatureStore, StoreWriter
    from captioning.samples import image_caption_batches

    directory, images = sys.argv[1], int(sys.argv[2])
    writer = StoreWriter(directory)  # a generated grid store: 49 regions x 2048 float16 per image
    rng = np.random.default_rng(0)
    for start in range(0, images, 100):
        writer.append(np.full((min(100, images - start), 49, 2048), start, np.float16))
    writer.finish([f"{i}.jpg" for i in range(images)], {})
    store = FeatureStore.open(directory)
    seqs = rng.integers(4, 50, (images * 2, 12)).astype(np.int32)
    rows = np.repeat(np.arange(images, dtype=np.int32), 2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seen = 0
    for (feats, _), _ in image_caption_batches(seqs, rows, store, 64, seed=0):  # one epoch over every image
        seen += len(feats)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seen": seen, "store_bytes": store.nbytes, "growth": after - before}))
""")


@pytest.mark.slow  # a subprocess writes and reads an 800 MB store
def test_an_epoch_over_a_store_does_not_load_it(tmp_path):
    """An epoch over a 4,000-image grid store (800 MB; twice the default's images, at 49 regions
    each) raises peak RSS by far less than the store: only batches in flight are in memory."""
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, str(tmp_path / "store"), "4000"], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO),
                                                                            "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["seen"] == 4000 and result["store_bytes"] == 4000 * 49 * 2048 * 2
    assert result["growth"] < 0.25 * result["store_bytes"], result


@pytest.mark.slow  # runs the features stage in subprocesses
def test_features_stage_shards_and_merge_write_the_single_run_store(tmp_path, sample_images):
    """`python -m stages.features --shard i --of 2` twice (as two machines would) then `--merge 2`
    gives data/features byte-for-byte as the plain stage does, on real images."""
    (tmp_path / "data/raw/images").mkdir(parents=True)
    lines = ["image,caption"]
    for path in sample_images[:5]:
        shutil.copy(path, tmp_path / "data/raw/images" / path.name)
        lines.append(f"{path.name},a photo")
    (tmp_path / "data/raw/captions.csv").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["features"].update(image_size=32, batch_size=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}

    def stage(*args):
        proc = subprocess.run([sys.executable, "-m", "stages.features", *args], cwd=tmp_path, env=env,
                              check=False, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]

    stage()
    single = {name: (tmp_path / "data/features" / name).read_bytes() for name in (FEATURES, NAMES)}
    shutil.rmtree(tmp_path / "data/features")
    stage("--shard", "1", "--of", "2")
    stage("--shard", "0", "--of", "2")
    stage("--merge", "2")
    assert {name: (tmp_path / "data/features" / name).read_bytes() for name in (FEATURES, NAMES)} == single
    assert json.loads((tmp_path / "metrics/features.json").read_text())["images"] == 5
    assert (tmp_path / "models/encoder.weights.h5").is_file()
