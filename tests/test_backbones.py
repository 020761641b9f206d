"""The pluggable encoder on real photographs: MobileNetV2's ImageNet weights (the packaged file, and
the 0.35 one in ../shared for a second width), what `imagenet` resolves to (Keras' cache, the
packaged file, Keras' download), their hash checks, and features that carry what the photos show
(which a random encoder's do not)."""

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from captioning import backbones
from captioning.datasets import flickr8k
from captioning.features import EncoderSpec, _forward, as_regions, build_encoder, extract, load_encoder, save_encoder
from captioning.io import DataError
from captioning.sanity import BLANK_IMAGES, blank_image_features

WEIGHTS = REPO.parent / "shared" / "weights"  # the 0.35 file: a width the package does not ship
HALF = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"  # packaged
SMALL = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
RESNET = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.fixture(scope="module")
def shared_weights() -> Path:
    if not (WEIGHTS / SMALL).exists():
        pytest.skip(f"{WEIGHTS} not present (the shared weights sit beside the checkout)")
    return WEIGHTS


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty Keras cache ($KERAS_HOME), whatever this machine's ~/.keras holds."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models"


def mobilenet(weights: str, pooling: str = "avg", alpha: float = 0.5, seed: int = 1) -> EncoderSpec:
    return EncoderSpec(weights=weights, image_size=224, pooling=pooling, layer="out_relu", backbone="mobilenet_v2",
                       alpha=alpha, seed=seed)


def test_the_packaged_and_shared_files_match_their_known_hashes(shared_weights):
    for folder, name in ((backbones.PACKAGED, HALF), (shared_weights, SMALL)):
        expected = backbones.BACKBONES["mobilenet_v2"].known_hashes[name]
        assert backbones.file_digest(folder / name, "sha256") == expected
        assert f"{expected}  {name}" in (folder / "SHA256SUMS").read_text()
    readme = (backbones.PACKAGED / "README.md").read_text()
    assert backbones.BACKBONES["mobilenet_v2"].known_hashes[HALF] in readme and "Apache License 2.0" in readme
    assert "Apache License" in (backbones.PACKAGED / "LICENSE").read_text()
    assert sorted(p.name for p in backbones.PACKAGED.glob("*.h5")) == [HALF]  # the one binary in git


def test_imagenet_is_the_packaged_file_when_keras_has_none(keras_home):
    mobilenet_v2 = backbones.BACKBONES["mobilenet_v2"]
    assert backbones.imagenet_weights(mobilenet_v2, 0.5, 224) == backbones.PACKAGED / HALF
    assert backbones.imagenet_weights(mobilenet_v2, 0.5, 64) == backbones.PACKAGED / HALF  # Keras: 224's for any size
    assert not keras_home.exists() or not any(keras_home.iterdir())  # nothing downloaded
    encoder = build_encoder(mobilenet("imagenet"))
    from_file = build_encoder(mobilenet(str(backbones.PACKAGED / HALF)))
    for a, b in zip(encoder.get_weights(), from_file.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_imagenet_takes_keras_cached_file_first_and_checks_it(keras_home):
    mobilenet_v2 = backbones.BACKBONES["mobilenet_v2"]
    keras_home.mkdir(parents=True)
    cached = keras_home / HALF
    shutil.copyfile(backbones.PACKAGED / HALF, cached)
    assert backbones.imagenet_weights(mobilenet_v2, 0.5, 224) == cached
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x01
    cached.write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        build_encoder(mobilenet("imagenet"))
    message = str(error.value)
    assert "\n" not in message and str(cached) in message and "is not the published 279052de2cfa8010" in message


def test_a_tampered_packaged_file_is_refused_in_one_line(keras_home, tmp_path, monkeypatch):
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / HALF).write_bytes((backbones.PACKAGED / HALF).read_bytes()[:100_000])  # truncated
    monkeypatch.setattr(backbones, "PACKAGED", packaged)
    with pytest.raises(DataError, match=rf"^features\.weights={re.escape(str(packaged / HALF))}: sha256 .* damaged"):
        build_encoder(mobilenet("imagenet"))


def test_imagenet_without_file_or_network_names_the_file_its_url_and_where_to_put_it(keras_home, closed_port,
                                                                                     monkeypatch):
    """ResNet50's 95 MB file is not packaged: with no cached copy and a download that cannot connect
    (a refused port on 127.0.0.1 stands in for an offline machine) the features stage stops in one line."""
    url = f"http://127.0.0.1:{closed_port}/keras-applications/resnet/"
    monkeypatch.setitem(backbones.BACKBONES, "resnet50",
                        dataclasses.replace(backbones.BACKBONES["resnet50"], weights_url=url))
    with pytest.raises(DataError) as error:
        build_encoder(EncoderSpec(weights="imagenet", image_size=32, backbone="resnet50"))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"features.weights=imagenet: {RESNET} is not in {keras_home} and could not be "
                              f"downloaded from {url}{RESNET} (")
    assert "download it there by hand" in message


def test_imagenet_downloads_into_keras_cache_and_checks_the_hash(keras_home, shared_weights, server, monkeypatch):
    """A width the package does not ship (0.35) is downloaded by Keras into its own cache (served
    here from 127.0.0.1), checked against the known sha256; a second build reads the cache."""
    server.files[f"/mobilenet_v2/{SMALL}"] = (shared_weights / SMALL).read_bytes()
    monkeypatch.setitem(backbones.BACKBONES, "mobilenet_v2", dataclasses.replace(
        backbones.BACKBONES["mobilenet_v2"], weights_url=server.url("/mobilenet_v2/")))
    assert build_encoder(mobilenet("imagenet", alpha=0.35)).output_shape == (None, 1280)
    assert (keras_home / SMALL).read_bytes() == (shared_weights / SMALL).read_bytes()
    build_encoder(mobilenet("imagenet", alpha=0.35))
    assert len(server.requests) == 1

    (keras_home / SMALL).unlink()  # a server that sends other bytes: Keras' own hash check refuses them
    server.files[f"/mobilenet_v2/{SMALL}"] = b"not the weights"
    with pytest.raises(DataError, match="could not be downloaded"):
        build_encoder(mobilenet("imagenet", alpha=0.35))


def test_a_tampered_weights_file_is_refused_in_one_line(shared_weights, tmp_path):
    tampered = tmp_path / SMALL
    data = bytearray((shared_weights / SMALL).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: the file still loads as HDF5, with one weight changed
    tampered.write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        build_encoder(mobilenet(str(tampered), alpha=0.35))
    message = str(error.value)
    assert "\n" not in message and str(tampered) in message
    assert re.search(r"sha256 \w+\.\.\. is not the published df1c3db1d0d91937\.\.\.", message)
    # The intact file under the same name loads.
    shutil.copyfile(shared_weights / SMALL, tampered)
    assert build_encoder(mobilenet(str(tampered), alpha=0.35)).output_shape == (None, 1280)


def test_resnet50_files_are_checked_against_keras_published_md5(tmp_path):
    fake = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    fake.write_bytes(b"not the weights")
    with pytest.raises(DataError, match=r"md5 \w+\.\.\. is not the published 4d473c1dd8becc15\.\.\."):
        build_encoder(EncoderSpec(weights=str(fake), image_size=32, backbone="resnet50"))


def test_weights_of_another_width_are_a_clear_error():
    with pytest.raises(DataError, match="not mobilenet_v2 \\(alpha 0.35, no top\\) weights.*features.alpha"):
        build_encoder(mobilenet(str(backbones.PACKAGED / HALF), alpha=0.35))


def test_unknown_backbone_and_alpha_are_clear_errors():
    with pytest.raises(DataError, match="features.backbone='vgg16': use one of resnet50, mobilenet_v2"):
        EncoderSpec(weights="none", backbone="vgg16")
    with pytest.raises(DataError, match="features.alpha=0.5: resnet50 is built with alpha 1.0"):
        EncoderSpec(weights="none", backbone="resnet50", alpha=0.5)


def test_the_saved_encoder_is_rebuilt_exactly(keras_home, tmp_path, sample_images):
    """encoder.json + encoder.weights.h5 give the CLI and the service the training encoder, with
    MobileNetV2's own preprocessing (its -1..1 input, not ResNet50's)."""
    spec = mobilenet("imagenet", pooling="grid")
    encoder = build_encoder(spec)
    save_encoder(tmp_path, spec, encoder)
    loaded_spec, loaded = load_encoder(tmp_path)
    assert loaded_spec == spec and loaded_spec.backbone == "mobilenet_v2" and loaded_spec.alpha == 0.5
    paths = sample_images[:4]
    first = extract(encoder, paths, 224, progress=False, backbone="mobilenet_v2").features
    again = extract(loaded, paths, 224, progress=False, backbone="mobilenet_v2").features
    assert first.shape == (4, 49, 1280) and first.dtype == np.float16
    np.testing.assert_array_equal(first, again)
    wrong = extract(encoder, paths, 224, progress=False, backbone="resnet50").features  # caffe preprocessing
    assert np.abs(wrong.astype(np.float32) - first.astype(np.float32)).mean() > 0.1


def subject_auc(features: np.ndarray, names: list[str], captions: dict[str, list[str]], word: str) -> float:
    """How much nearer photos about `word` are to each other than to the rest: the chance that a
    pair of such photos is more similar (cosine of standardised features) than a mixed pair."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    about = np.array([sum(word in c.split() for c in captions[n]) >= 3 for n in names])  # 3 of 5 people say so
    within = similarity[np.ix_(about, about)][~np.eye(about.sum(), dtype=bool)]
    between = similarity[np.ix_(about, ~about)].ravel()
    ranks = np.concatenate([within, between]).argsort().argsort() + 1
    return (ranks[:len(within)].sum() - len(within) * (len(within) + 1) / 2) / (len(within) * len(between))


@pytest.mark.slow  # ImageNet and random MobileNetV2 over 200 real photos
def test_pretrained_features_carry_what_the_photos_show(keras_home, sample_images, flickr8k_dir):
    """200 real Flickr8k test photos: those most people describe with a dog, a woman or water are
    nearer each other than to the others with ImageNet weights; with the same network randomly
    initialised they are not (pixel statistics alone do not tell a dog)."""
    captions: dict[str, list[str]] = {}
    for image, caption in flickr8k.read_token_file(flickr8k_dir / flickr8k.TOKEN_FILE):
        captions.setdefault(image, []).append(" ".join(re.findall("[a-z]+", caption.lower())))

    def mean_auc(weights: str) -> float:
        result = extract(build_encoder(mobilenet(weights)), sample_images, 224, progress=False, backbone="mobilenet_v2")
        return float(np.mean([subject_auc(result.features, result.names, captions, w)
                              for w in ("dog", "woman", "water")]))

    pretrained, random = mean_auc("imagenet"), mean_auc("none")  # the packaged file
    assert pretrained > 0.65, pretrained
    assert random < 0.6, random


def test_blank_images_are_encoded_with_the_saved_encoders_own_preprocessing(shared_weights, tmp_path):
    """evaluate's blank images (and the held-out scenes) go through the saved encoder as the CLI's
    do: a MobileNetV2 model's blank white image becomes -1..1 pixels, not ResNet50's caffe ones."""
    spec = mobilenet(str(shared_weights / SMALL), pooling="grid", alpha=0.35)
    save_encoder(tmp_path, spec, build_encoder(spec))
    names, feats = blank_image_features(tmp_path)
    assert sorted(names) == sorted(BLANK_IMAGES)
    _, encoder = load_encoder(tmp_path)
    white = np.full((1, 224, 224, 3), 255.0, np.float32)
    got = feats[names.index("blank_white.png")].astype(np.float32)
    right = as_regions(_forward(encoder, 224, "mobilenet_v2")(white).numpy())[0].astype(np.float32)
    wrong = as_regions(_forward(encoder, 224, "resnet50")(white).numpy())[0].astype(np.float32)
    np.testing.assert_allclose(got, right, atol=1e-2)
    assert np.abs(got - wrong).mean() > 0.1
