import numpy as np
import pytest
from PIL import Image

from captioning.features import EncoderSpec, build_encoder, extract, load_encoder, load_image, save_encoder
from captioning.io import DataError


@pytest.fixture()
def odd_images(tmp_path, sample_images):
    """Every kind of bad or unusual image a real folder holds, made from a real Flickr8k photo."""
    real = Image.open(sample_images[0])
    real.convert("L").save(tmp_path / "gray.jpg")
    real.convert("CMYK").save(tmp_path / "cmyk.jpg")
    real.convert("RGBA").save(tmp_path / "rgba.png")
    data = sample_images[1].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    return tmp_path


def test_load_image_converts_every_colour_mode_to_rgb(odd_images):
    for name in ("gray.jpg", "cmyk.jpg", "rgba.png"):
        img = load_image(odd_images / name, 64)
        assert img.shape == (64, 64, 3) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 255 and img.std() > 1


@pytest.mark.parametrize("name", ["truncated.jpg", "text.jpg", "missing.jpg"])
def test_load_image_names_the_bad_file(odd_images, name):
    with pytest.raises(DataError, match=name):
        load_image(odd_images / name, 64)


@pytest.mark.slow  # builds and runs full ResNet50 encoders
def test_extract_skips_bad_images_and_keeps_order(odd_images, sample_images):
    paths = [sample_images[2], odd_images / "truncated.jpg", odd_images / "gray.jpg", odd_images / "text.jpg",
             odd_images / "nope.jpg", sample_images[3]]
    encoder = build_encoder(EncoderSpec(weights="none", image_size=64, seed=1))
    with pytest.warns(UserWarning, match="truncated.jpg"):
        result = extract(encoder, paths, 64, batch_size=2, progress=False, backbone="resnet50")
    assert result.names == [sample_images[2].name, "gray.jpg", sample_images[3].name]
    assert set(result.skipped) == {"truncated.jpg", "text.jpg", "nope.jpg"}
    assert result.features.shape == (3, 2048) and np.isfinite(result.features).all()
    # Different photos, different features.
    assert not np.allclose(result.features[0], result.features[2])


def test_extract_of_no_readable_image_gives_rows_of_the_encoders_shape(odd_images):
    encoder = build_encoder(EncoderSpec(weights="none", image_size=64, pooling="grid", seed=1))
    with pytest.warns(UserWarning, match="text.jpg"):
        result = extract(encoder, [odd_images / "text.jpg"], 64, progress=False, backbone="resnet50")
    assert result.names == [] and result.features.shape == (0, 4, 2048) and result.features.dtype == np.float16


@pytest.mark.slow  # builds and runs full ResNet50 encoders
def test_seeded_random_encoder_is_reproducible_and_saved_weights_are_identical(tmp_path, sample_images):
    spec = EncoderSpec(weights="none", image_size=32, seed=7)
    a = build_encoder(spec)
    batch = np.stack([load_image(p, 32) for p in sample_images[:2]])
    fa = np.asarray(a(batch))
    a.save_weights(tmp_path / "encoder.weights.h5")
    reloaded = build_encoder(spec, weights_file=tmp_path / "encoder.weights.h5")
    np.testing.assert_array_equal(fa, np.asarray(reloaded(batch)))
    np.testing.assert_allclose(fa, np.asarray(build_encoder(spec)(batch)), rtol=1e-5)  # same seed
    other = build_encoder(EncoderSpec(weights="none", image_size=32, seed=8))
    assert not np.allclose(fa, np.asarray(other(batch)))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="features.weights=.*no such weights file"):
        build_encoder(EncoderSpec(weights=str(tmp_path / "nope.h5"), image_size=32))


@pytest.mark.parametrize("layer, pooling, shape", [
    ("conv5_block3_out", "grid", (2, 2, 2048)),
    ("conv4_block6_out", "grid", (4, 4, 1024)),
    ("conv3_block4_out", "grid", (8, 8, 512)),
    ("conv4_block6_out", "max", (1024,)),
    ("conv4_block6_out", "avg", (1024,)),
])
def test_layer_switch_keeps_that_layers_output(layer, pooling, shape):
    encoder = build_encoder(EncoderSpec(weights="none", image_size=64, pooling=pooling, seed=1, layer=layer))
    assert encoder.output_shape[1:] == shape


@pytest.mark.slow  # builds and runs full ResNet50 encoders
def test_finer_grids_are_max_pooled_to_grid_side():
    spec = EncoderSpec(weights="none", image_size=64, pooling="grid", seed=1, layer="conv3_block4_out", grid_side=4)
    pooled, full = build_encoder(spec), build_encoder(EncoderSpec(**{**spec.to_json(), "grid_side": None}))
    assert pooled.output_shape[1:] == (4, 4, 512)
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    maps = np.asarray(full(images))[0]  # 8x8: every pooled cell is the max of its 2x2 block
    np.testing.assert_allclose(np.asarray(pooled(images))[0], maps.reshape(4, 2, 4, 2, 512).max(axis=(1, 3)))
    coarse = EncoderSpec(weights="none", image_size=64, pooling="grid", seed=1, layer="conv4_block6_out", grid_side=14)
    assert build_encoder(coarse).output_shape[1:] == (4, 4, 1024)  # already coarser: unchanged


@pytest.mark.slow  # builds and runs full ResNet50 encoders
def test_grid_side_that_does_not_divide_the_map_still_covers_all_of_it(tmp_path):
    """8x8 maps to 3x3: blocks of 3 rows/columns overlapping by one ([0:3], [2:6], [5:8]), so no
    edge row or column of the image is dropped, and the encoder saves and reloads."""
    spec = EncoderSpec(weights="none", image_size=64, pooling="grid", seed=1, layer="conv3_block4_out", grid_side=3)
    pooled, full = build_encoder(spec), build_encoder(EncoderSpec(**{**spec.to_json(), "grid_side": None}))
    images = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    maps, cells = np.asarray(full(images))[0], np.asarray(pooled(images))[0]
    spans = [slice(0, 3), slice(2, 6), slice(5, 8)]
    expected = np.array([[maps[r, c].max(axis=(0, 1)) for c in spans] for r in spans])
    np.testing.assert_allclose(cells, expected)
    save_encoder(tmp_path, spec, pooled)
    np.testing.assert_allclose(np.asarray(load_encoder(tmp_path)[1](images))[0], cells)


@pytest.mark.slow  # builds and runs full ResNet50 encoders
def test_cut_encoder_is_the_same_network_up_to_its_layer(tmp_path):
    """Cutting at conv4 keeps the seeded random weights of the whole network's first blocks, and the
    saved cut encoder reloads bit for bit."""
    full = build_encoder(EncoderSpec(weights="none", image_size=64, pooling="grid", seed=3))
    spec = EncoderSpec(weights="none", image_size=64, pooling="grid", seed=3, layer="conv4_block6_out")
    cut = build_encoder(spec)
    np.testing.assert_array_equal(cut.get_layer("conv4_block6_3_conv").get_weights()[0],
                                  full.get_layer("conv4_block6_3_conv").get_weights()[0])
    save_encoder(tmp_path, spec, cut)
    loaded_spec, loaded = load_encoder(tmp_path)
    assert loaded_spec == spec
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(cut(images)))


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(DataError, match="features.layer='conv9': not a resnet50 layer"):
        build_encoder(EncoderSpec(weights="none", image_size=64, pooling="grid", layer="conv9"))
