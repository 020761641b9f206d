"""The out-of-distribution image set (captioning/ood.py): every kind made, decodable, reproducible,
and really unlike photos by simple statistics (checked against the real Flickr8k photos too, so a
statistic that does not separate them fails here rather than passing vacuously)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import ood
from captioning.features import load_image

SIZE = 160  # small images: the statistics hold at any size, the tests stay fast


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def neighbour_correlation(a: np.ndarray) -> float:
    """Correlation of each pixel's brightness with its right neighbour's: high in any natural image."""
    grey = a.astype(np.float64).mean(axis=2)
    return float(np.corrcoef(grey[:, :-1].ravel(), grey[:, 1:].ravel())[0, 1])


def colours(a: np.ndarray) -> np.ndarray:
    """Counts of each distinct colour."""
    packed = a.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    return np.unique(packed, return_counts=True)[1]


def background_share(a: np.ndarray) -> float:
    counts = colours(a)
    return float(counts.max() / counts.sum())


@pytest.fixture(scope="module")
def ood_set(tmp_path_factory) -> dict[str, list[Path]]:
    return ood.make_ood_set(tmp_path_factory.mktemp("ood") / "set", per_kind=4, seed=0, size=SIZE)


@pytest.fixture(scope="module")
def photos(sample_images) -> dict[str, np.ndarray]:
    """The statistics below, one value per real photo (the 200 resized and 5 original ones)."""
    originals = sorted((sample_images[0].parents[1] / "original").glob("*.jpg"))
    images = [pixels(p) for p in [*sample_images, *originals]]
    assert len(images) == 205
    return {"colours": np.array([len(colours(a)) for a in images]),
            "background": np.array([background_share(a) for a in images]),
            "correlation": np.array([neighbour_correlation(a) for a in images])}


def test_every_kind_is_made_and_decodes(ood_set):
    assert list(ood_set) == list(ood.KINDS)
    assert {"blank", "uniform_noise", "gaussian_noise", "text_page", "chart", "screenshot", "line_drawing",
            "shapes_scene"} <= set(ood_set)
    for kind, paths in ood_set.items():
        assert [p.name.rsplit(".", 1)[0] for p in paths] == [f"{kind}_{i:03d}" for i in range(4)]
        for path in paths:
            image = load_image(path, 64)
            assert image.shape == (64, 64, 3) and image.dtype == np.float32


def test_directory_holds_the_set_only(ood_set):
    folder = ood_set["blank"][0].parent
    assert sorted(folder.iterdir()) == sorted(p for paths in ood_set.values() for p in paths)


def test_sizes_and_aspect_ratios_vary(ood_set):
    sizes = {Image.open(p).size for paths in ood_set.values() for p in paths}
    assert len(sizes) >= len(ood_set) * 2
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)
    assert all(SIZE * 0.3 <= max(w, h) <= SIZE * 1.3 for w, h in sizes)


def test_same_seed_same_bytes(tmp_path, ood_set):
    again = ood.make_ood_set(tmp_path / "again", per_kind=4, seed=0, size=SIZE)
    for kind in ood.KINDS:
        assert [p.read_bytes() for p in again[kind]] == [p.read_bytes() for p in ood_set[kind]], kind
    # image i does not depend on how many images are asked for
    fewer = ood.make_ood_set(tmp_path / "fewer", per_kind=2, seed=0, size=SIZE)
    assert all(fewer[k][1].read_bytes() == ood_set[k][1].read_bytes() for k in ood.KINDS)


def test_different_seeds_differ(tmp_path, ood_set):
    other = ood.make_ood_set(tmp_path / "other", per_kind=4, seed=1, size=SIZE)
    for kind in ood.KINDS:
        theirs = {p.read_bytes() for p in other[kind]}
        assert not theirs & {p.read_bytes() for p in ood_set[kind]}, kind
        assert len(theirs) == 4, kind  # and the images of one seed differ from each other


def test_flat_images_have_one_colour(ood_set, photos):
    for path in ood_set["blank"] + ood_set["single_colour"]:
        assert len(colours(pixels(path))) == 1, path.name
    assert photos["colours"].min() > 1000


def test_noise_has_no_spatial_correlation(ood_set, photos):
    for path in ood_set["uniform_noise"] + ood_set["gaussian_noise"]:
        assert abs(neighbour_correlation(pixels(path))) < 0.05, path.name
    assert photos["correlation"].min() > 0.5


def test_noise_kinds_follow_their_distributions(ood_set):
    uniform = np.concatenate([pixels(p).ravel() for p in ood_set["uniform_noise"]])
    assert np.histogram(uniform, bins=8, range=(0, 256))[0].min() / uniform.size > 0.11  # flat histogram
    for path in ood_set["gaussian_noise"]:
        channel = pixels(path)[..., 0].astype(float)
        inside = np.abs(channel - channel.mean()) < channel.std()
        assert 0.6 < inside.mean() < 0.76, path.name  # ~68 % within one sd


def test_pages_and_drawings_are_mostly_background(ood_set, photos):
    for path in ood_set["text_page"] + ood_set["line_drawing"]:
        assert background_share(pixels(path)) > 0.7, path.name
    assert photos["background"].max() < 0.7


def test_documents_charts_and_screens_have_few_colours(ood_set, photos):
    for kind in ("text_page", "chart", "screenshot", "line_drawing"):
        for path in ood_set[kind]:
            assert 2 <= len(colours(pixels(path))) < 1000, path.name
    assert photos["colours"].min() > 1000


def test_text_pages_hold_dark_text_lines(ood_set):
    for path in ood_set["text_page"]:
        dark_rows = (pixels(path).mean(axis=2) < 128).any(axis=1)
        starts = np.count_nonzero(dark_rows[1:] & ~dark_rows[:-1])  # a run of inked rows is a line
        assert starts >= 5, path.name


def test_shapes_scenes_are_the_dataset_renderer(ood_set):
    assert all(p.suffix == ".jpg" for p in ood_set["shapes_scene"])
    assert all(neighbour_correlation(pixels(p)) > 0.3 for p in ood_set["shapes_scene"])


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="per_kind=0"):
        ood.make_ood_set(tmp_path / "x", per_kind=0, seed=0, size=SIZE)
    with pytest.raises(ValueError, match="unknown out-of-distribution kind 'photo'"):
        ood.draw_image("photo", 0, 0, SIZE)
    assert not (tmp_path / "x").exists()


def test_module_entry_writes_the_set(tmp_path, capsys):
    ood.main([str(tmp_path / "cli"), "--per-kind", "1", "--seed", "3", "--size", "64"])
    assert len(list((tmp_path / "cli").iterdir())) == len(ood.KINDS)
    assert f"{len(ood.KINDS)} images" in capsys.readouterr().out
