"""The pluggable encoder on real photographs: MobileNetV2's shared ImageNet weights, their hash check,
and features that carry what the photos show (which a random encoder's do not)."""

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

WEIGHTS = REPO.parent / "shared" / "weights"
HALF = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
SMALL = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture(scope="module")
def shared_weights() -> Path:
    if not (WEIGHTS / HALF).exists():
        pytest.skip(f"{WEIGHTS} not present (the shared weights sit beside the checkout)")
    return WEIGHTS


def mobilenet(weights: str, pooling: str = "avg", alpha: float = 0.5, seed: int = 1) -> EncoderSpec:
    return EncoderSpec(weights=weights, image_size=224, pooling=pooling, layer="out_relu", backbone="mobilenet_v2",
                       alpha=alpha, seed=seed)


def test_the_shared_files_match_their_published_hashes(shared_weights):
    for name in (HALF, SMALL):
        expected = backbones.BACKBONES["mobilenet_v2"].known_hashes[name]
        assert backbones.file_digest(shared_weights / name, "sha256") == expected
        listed = (shared_weights / "SHA256SUMS").read_text()
        assert f"{expected}  {name}" in listed


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


def test_weights_of_another_width_are_a_clear_error(shared_weights):
    with pytest.raises(DataError, match="not mobilenet_v2 \\(alpha 0.35, no top\\) weights.*features.alpha"):
        build_encoder(mobilenet(str(shared_weights / HALF), alpha=0.35))


def test_unknown_backbone_and_alpha_are_clear_errors():
    with pytest.raises(DataError, match="features.backbone='vgg16': use one of resnet50, mobilenet_v2"):
        EncoderSpec(weights="none", backbone="vgg16")
    with pytest.raises(DataError, match="features.alpha=0.5: resnet50 is built with alpha 1.0"):
        EncoderSpec(weights="none", backbone="resnet50", alpha=0.5)


def test_the_saved_encoder_is_rebuilt_exactly(shared_weights, tmp_path, sample_images):
    """encoder.json + encoder.weights.h5 give the CLI and the service the training encoder, with
    MobileNetV2's own preprocessing (its -1..1 input, not ResNet50's)."""
    spec = mobilenet(str(shared_weights / HALF), pooling="grid")
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
def test_pretrained_features_carry_what_the_photos_show(shared_weights, sample_images, flickr8k_dir):
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

    pretrained, random = mean_auc(str(shared_weights / HALF)), mean_auc("none")
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
