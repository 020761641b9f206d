"""The novelty score: descriptors from stored encoder rows, both scorers, the dev-split threshold,
files that reload to the same scores, one-line errors for bad files; and, on the tiny pipeline's
model, a training image under the threshold and a blank image over it."""

import json
import shutil

import numpy as np
import pytest

from captioning import novelty
from captioning.io import DataError
from conftest import blank_png

METHODS = novelty.METHODS


def grids(rng, n: int, centre: np.ndarray, spread: float = 0.3) -> np.ndarray:
    """(n, 4 regions, c) float16 ReLU grids around one direction, like the features stage stores."""
    rows = centre + spread * rng.standard_normal((n, 4, centre.size))
    return np.maximum(rows, 0).astype(np.float16)


@pytest.fixture(scope="module")
def world():
    """Training, dev and test rows from one distribution, and rows from another one."""
    rng = np.random.default_rng(0)
    centre, other = np.abs(rng.standard_normal(32)), np.abs(rng.standard_normal(32))
    return {"train": grids(rng, 300, centre), "dev": grids(rng, 100, centre), "test": grids(rng, 100, centre),
            "other": grids(rng, 50, other)}


def test_descriptor_pools_grids_mean_and_max_into_unit_vectors():
    rows = np.array([[[1, 0], [3, 4]]], np.float16)  # one image, two regions, two channels
    d = novelty.descriptor(rows)
    expected = np.array([2, 2, 3, 4], np.float32)
    np.testing.assert_allclose(d[0], expected / np.linalg.norm(expected), rtol=1e-6)
    vectors = np.array([[3, 4], [0, 0]], np.float32)  # pooled vectors stay; an all-zero row stays zero
    np.testing.assert_allclose(novelty.descriptor(vectors), [[0.6, 0.8], [0, 0]])
    with pytest.raises(DataError, match="expected"):
        novelty.descriptor(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize("method", METHODS)
def test_in_distribution_under_the_threshold_other_images_over_it(world, method):
    model = novelty.fit(world["train"], world["dev"], method=method, quantile=0.99, k=5, seed=1)
    # The threshold is the dev split's quantile, whatever the test set says.
    assert model.threshold == pytest.approx(float(np.quantile(model.score(world["dev"]), 0.99)))
    assert np.mean(model.score(world["test"]) > model.threshold) <= 0.05
    assert np.all(model.score(world["other"]) > model.threshold)
    assessed = model.assess(np.concatenate([world["test"][:1], world["other"][:1]]))
    assert assessed[1] == {"novelty": pytest.approx(float(model.score(world["other"][:1])[0]), abs=1e-4),
                           "threshold": round(model.threshold, 4), "unsure": True, "reason": novelty.REASON}
    assert assessed[0]["reason"] is None and assessed[0]["unsure"] is (assessed[0]["novelty"] > model.threshold)


def test_knn_reference_is_a_bounded_seeded_float16_sample(world, monkeypatch):
    monkeypatch.setattr(novelty, "MAX_REFERENCE", 50)
    a = novelty.fit(world["train"], world["dev"], method="knn", quantile=0.9, k=3, seed=7)
    b = novelty.fit(world["train"], world["dev"], method="knn", quantile=0.9, k=3, seed=7)
    assert a.arrays["reference"].shape == (50, 64) and a.arrays["reference"].dtype == np.float16
    np.testing.assert_array_equal(a.arrays["reference"], b.arrays["reference"])


@pytest.mark.parametrize("method", METHODS)
def test_saved_model_reloads_to_identical_scores(world, method, tmp_path):
    model = novelty.fit(world["train"], world["dev"], method=method, quantile=0.99, k=5, seed=1, dataset="shapes")
    novelty.save(tmp_path, model)
    meta = json.loads((tmp_path / novelty.JSON).read_text())
    assert meta["method"] == method and meta["dims"] == 64 and meta["fitted_on"] == {"train": 300, "dev": 100}
    again = novelty.load(tmp_path)
    np.testing.assert_array_equal(again.score(world["other"]), model.score(world["other"]))
    assert again.threshold == model.threshold and again.assess(world["other"][:1])[0]["reason"].endswith("(shapes)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [novelty.JSON, novelty.NPZ]  # no temporary left behind


def test_a_model_directory_without_novelty_files_has_none(tmp_path):
    assert novelty.load(tmp_path) is None


@pytest.fixture
def saved(world, tmp_path):
    novelty.save(tmp_path, novelty.fit(world["train"], world["dev"], method="mahalanobis", quantile=0.99, k=5,
                                       seed=1))
    return tmp_path


def one_line_naming(path, call) -> str:
    with pytest.raises(DataError) as e:
        call()
    message = str(e.value)
    assert str(path) in message and "\n" not in message and "dvc repro novelty" in message, message
    return message


@pytest.mark.parametrize("name", [novelty.NPZ, novelty.JSON])
def test_a_missing_twin_is_one_line_naming_it(saved, name):
    (saved / name).unlink()
    assert "missing" in one_line_naming(saved / name, lambda: novelty.load(saved))


def test_a_truncated_npz_is_one_line_naming_it(saved):
    data = (saved / novelty.NPZ).read_bytes()
    (saved / novelty.NPZ).write_bytes(data[: len(data) // 2])
    one_line_naming(saved / novelty.NPZ, lambda: novelty.load(saved))


def test_a_pickled_npz_is_refused_not_unpickled(saved):
    with open(saved / novelty.NPZ, "wb") as f:
        np.savez(f, mean=np.array([{"evil": 1}], dtype=object))
    one_line_naming(saved / novelty.NPZ, lambda: novelty.load(saved))


def test_arrays_that_do_not_match_the_json_are_one_line(saved):
    with open(saved / novelty.NPZ, "wb") as f:
        np.savez(f, mean=np.zeros(3, np.float32))
    assert "do not match" in one_line_naming(saved / novelty.NPZ, lambda: novelty.load(saved))


@pytest.mark.parametrize("text", ["{not json", '{"method": "mahalanobis"}', '{"method": "magic", "threshold": 1, '
                                  '"quantile": 0.9, "k": 5, "feature_shape": [4, 32], "arrays": {}}'])
def test_a_corrupt_json_is_one_line_naming_it(saved, text):
    (saved / novelty.JSON).write_text(text)
    one_line_naming(saved / novelty.JSON, lambda: novelty.load(saved))


def test_features_of_another_encoder_are_refused(saved, world):
    model = novelty.load(saved)
    with pytest.raises(DataError, match=r"novelty.json: fitted on encoder rows of shape \[4, 32\], got \[4, 16\]"):
        model.score(world["other"][..., :16])


@pytest.mark.parametrize("kwargs, key", [({"method": "lof"}, "novelty.method"), ({"quantile": 1.5}, "novelty.quantile"),
                                         ({"k": 0}, "novelty.k")])
def test_bad_params_name_the_key(world, kwargs, key):
    settings = {"method": "knn", "quantile": 0.99, "k": 5, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=key):
        novelty.fit(world["train"], world["dev"], **settings)


# -----------------------------------------------------------------------------
# The tiny pipeline's own novelty stage and model.

@pytest.mark.slow  # trains a tiny model once per session
def test_tiny_pipeline_training_image_under_blank_image_over(trained_repo, tmp_path):
    from captioning.captioner import Captioner
    from captioning.feature_store import FeatureStore

    metrics = json.loads((trained_repo / "metrics/novelty.json").read_text())
    assert set(metrics) >= {"method", "threshold", "flagged_val", "flagged_test"}
    captioner = Captioner(trained_repo / "models")
    assert captioner.novelty is not None and captioner.novelty.threshold == metrics["threshold"]
    train = json.loads((trained_repo / "data/split.json").read_text())["train"]
    records, errors = captioner.caption_records([str(trained_repo / "data/raw/images" / train[0]),
                                                 str(blank_png(tmp_path / "blank.png"))])
    assert not errors
    seen, blank = records.values()
    assert seen["novelty"] < seen["threshold"] and seen["unsure"] is False and seen["reason"] is None
    assert blank["novelty"] > blank["threshold"] and blank["unsure"] is True
    assert blank["reason"] == f"{novelty.REASON} (shapes)"

    # What the stage saved scores the stored features as a refit on the same rows does.
    store = FeatureStore.open(trained_repo / "data/features")
    split = json.loads((trained_repo / "data/split.json").read_text())
    rows = {part: store.read([store.names.index(n) for n in split[part]]) for part in ("train", "val", "test")}
    params = __import__("yaml").safe_load((trained_repo / "params.yaml").read_text())["novelty"]
    refit = novelty.fit(rows["train"], rows["val"], **params, dataset="shapes")
    np.testing.assert_array_equal(captioner.novelty.score(rows["test"]), refit.score(rows["test"]))
    assert captioner.novelty.threshold == refit.threshold


@pytest.mark.slow  # the default's tiny twin: the packaged ImageNet MobileNetV2, grid features
def test_imagenet_encoder_flags_white_and_black_pages_and_real_photos(attention_repo, sample_images, tmp_path):
    from captioning.captioner import Captioner

    captioner = Captioner(attention_repo / "models")
    train = json.loads((attention_repo / "data/split.json").read_text())["train"]
    seen = [str(attention_repo / "data/raw/images" / name) for name in train[:5]]
    pages = [str(blank_png(tmp_path / f"{c}.png", c)) for c in ("white", "black")]
    records, errors = captioner.caption_records(seen + pages + [str(p) for p in sample_images[:5]])
    assert not errors
    assert [records[p]["unsure"] for p in seen] == [False] * 5
    assert all(records[str(p)]["unsure"] for p in pages + sample_images[:5]), records


@pytest.mark.slow
def test_a_model_without_novelty_files_captions_with_novelty_null(trained_repo, tmp_path):
    from captioning.captioner import Captioner

    old = shutil.copytree(trained_repo / "models", tmp_path / "models")
    for name in (novelty.NPZ, novelty.JSON):
        (old / name).unlink()
    image = next((trained_repo / "data/raw/images").iterdir())
    records, _ = Captioner(old).caption_records([str(image)])
    # No flag to say the image is like the training ones: no confidence word either (confidence.py).
    assert records[str(image)] == {"caption": Captioner(trained_repo / "models").caption([str(image)])[0][str(image)],
                                   **novelty.UNKNOWN, "confidence": None}
