"""The generated default dataset: deterministic, Flickr8k-shaped, and truthful about its pictures."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import datasets
from captioning.datasets import shapes
from captioning.datasets.shapes import truth
from captioning.text import clean


def scenes_and_captions(count: int, seed: int = 0, **kwargs) -> list[tuple[dict, list[str]]]:
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        scene = shapes.make_scene(rng, **kwargs)
        out.append((scene, shapes.captions_for(scene, rng)))
    return out


def read_dir(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- generate: files on disk ---------------------------------------------------

def test_generate_is_deterministic_and_seed_dependent(tmp_path):
    a = shapes.generate(tmp_path / "a", num_images=6, seed=7, progress=False)
    shapes.generate(tmp_path / "b", num_images=6, seed=7, progress=False)
    shapes.generate(tmp_path / "c", num_images=6, seed=8, progress=False)
    files_a, files_b, files_c = (read_dir(tmp_path / d) for d in "abc")
    assert files_a == files_b  # byte for byte: images, captions and scenes
    assert set(files_a) == set(files_c)
    assert all(files_a[k] != files_c[k] for k in files_a)  # a new seed changes every file
    assert a["images"] == 6 and a["captions"] == 30 and 6 <= a["objects"] <= 18
    # Built in a temporary directory and renamed: nothing else is left beside the outputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_generate_first_images_do_not_depend_on_num_images(tmp_path):
    shapes.generate(tmp_path / "few", num_images=2, seed=3, progress=False)
    shapes.generate(tmp_path / "many", num_images=5, seed=3, progress=False)
    for name in ("shape_00000.jpg", "shape_00001.jpg"):
        assert (tmp_path / "few/images" / name).read_bytes() == (tmp_path / "many/images" / name).read_bytes()


def test_generate_writes_flickr8k_layout(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")  # replaced wholesale, not merged
    summary = shapes.generate(out, num_images=12, seed=1, min_size=220, max_size=420, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["captions.csv", "images", "scenes.json"]

    with open(out / "captions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "caption"]
    per_image = Counter(image for image, _ in rows[1:])
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == [f"shape_{i:05d}.jpg" for i in range(12)]
    assert sorted(per_image) == images and set(per_image.values()) == {5}

    scenes = json.loads((out / "scenes.json").read_text(encoding="utf-8"))
    assert sorted(scenes) == images
    assert summary == {"images": 12, "captions": 60, "objects": sum(len(s["objects"]) for s in scenes.values())}
    sizes = set()
    for name in images:
        with Image.open(out / "images" / name) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (scenes[name]["width"], scenes[name]["height"])
            assert 220 <= im.width <= 420 and 220 <= im.height <= 420
            sizes.add(im.size)
    assert len({w for w, _ in sizes}) > 3 and len({h for _, h in sizes}) > 3  # sides vary independently
    for image, caption in rows[1:]:
        assert shapes.attribute_hits(caption, scenes[image])[0] == len(scenes[image]["objects"])


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        shapes.generate(tmp_path / "x", num_images=0, seed=1, progress=False)
    with pytest.raises(ValueError, match="exclude"):
        shapes.generate(tmp_path / "x", num_images=1, seed=1, exclude={("pink", "circle")}, progress=False)
    with pytest.raises(ValueError, match="min_size"):
        shapes.generate(tmp_path / "x", num_images=1, seed=1, min_size=300, max_size=200, progress=False)
    assert not (tmp_path / "x").exists()


# -- scenes ----------------------------------------------------------------------

def test_scenes_are_consistent():
    counts = Counter()
    for scene, _ in scenes_and_captions(400):
        objs, w, h = scene["objects"], scene["width"], scene["height"]
        assert 200 <= w <= 500 and 200 <= h <= 500
        counts[len(objs)] += 1
        assert len({o["place"] for o in objs}) == len(objs)
        assert len({(o["colour"], o["shape"]) for o in objs}) == len(objs)
        for o in objs:
            assert o["colour"] in shapes.COLOURS and o["shape"] in shapes.SHAPES
            assert o["size"] in shapes.SIZES and o["place"] in shapes.PLACES
            half = o["extent"] / 2
            # Fully inside the image (shadow included).
            assert half <= o["x"] and o["x"] + half + scene["shadow"] <= w
            assert half <= o["y"] and o["y"] + half + scene["shadow"] <= h
            # The place is true: its third of the image, centre in the middle third both ways.
            x, y = o["x"] / w, o["y"] / h
            assert {"left": x < 1 / 3, "right": x > 2 / 3, "top": y < 1 / 3, "bottom": y > 2 / 3,
                    "centre": 1 / 3 < x < 2 / 3 and 1 / 3 < y < 2 / 3}[o["place"]], o
            # Background is muted: far from every object colour.
            assert np.linalg.norm(np.subtract(scene["background"]["colour"], o["rgb"])) > 100
        # No two objects overlap.
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                reach = (a["extent"] + b["extent"]) / 2
                assert abs(a["x"] - b["x"]) >= reach or abs(a["y"] - b["y"]) >= reach
        rel = scene["relation"]
        if len(objs) == 1:
            assert rel is None
        else:
            a, b = objs[rel["subject"]], objs[rel["object"]]
            assert a is not b
            assert {"left of": a["x"] < b["x"], "right of": a["x"] > b["x"],
                    "above": a["y"] < b["y"], "below": a["y"] > b["y"]}[rel["predicate"]]
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 60


def test_object_sizes_are_relative_to_the_short_side():
    for scene, _ in scenes_and_captions(200):
        short = min(scene["width"], scene["height"])
        for o in scene["objects"]:
            lo, hi = {"small": (0.14, 0.21), "large": (0.29, 0.41)}[o["size"]]
            assert lo * short <= o["extent"] <= hi * short


def test_exclude_is_honoured():
    held_out = {("yellow", "triangle"), ("red", "circle")}
    seen = Counter()
    for scene, captions in scenes_and_captions(600, exclude=[list(p) for p in held_out]):
        pairs = {(o["colour"], o["shape"]) for o in scene["objects"]}
        assert not pairs & held_out
        seen.update(pairs)
        for caption in captions:
            assert not set(shapes.parse_objects(caption)) & held_out
    # The other combinations with those colours and shapes still appear.
    assert seen[("yellow", "circle")] and seen[("red", "triangle")] and seen[("blue", "circle")]


# -- rendering ---------------------------------------------------------------------

def patch_mean(image: Image.Image, x: float, y: float, half: float) -> np.ndarray:
    arr = np.asarray(image, np.float32)
    x0, x1, y0, y1 = (int(round(v)) for v in (x - half, x + half + 1, y - half, y + half + 1))
    return arr[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)


def jpeg_roundtrip(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_render_puts_each_object_where_the_scene_says():
    checked = Counter()
    for scene, _ in scenes_and_captions(40, seed=5):
        image = jpeg_roundtrip(shapes.render_scene(scene))
        assert image.mode == "RGB" and image.size == (scene["width"], scene["height"])
        bg = np.array(scene["background"]["colour"], np.float32)
        for o in scene["objects"]:
            # The interior of every shape (a patch of 16% of its extent) has the object's colour...
            inside = patch_mean(image, o["x"], o["y"], 0.08 * o["extent"])
            assert np.linalg.norm(inside - o["rgb"]) < 40, (o, inside)
            checked[o["shape"]] += 1
        if len(scene["objects"]) == 1:
            # ...and for a lone object, the mirrored spot on the other side is background.
            o = scene["objects"][0]
            mx, my = scene["width"] - o["x"], scene["height"] - o["y"]
            if o["place"] != "centre":
                elsewhere = patch_mean(image, mx, my, 0.08 * o["extent"])
                assert np.linalg.norm(elsewhere - o["rgb"]) > 80
                if scene["background"]["kind"] == "plain":
                    assert np.linalg.norm(elsewhere - bg) < 25
    assert set(checked) == set(shapes.SHAPES)


def test_render_is_a_pure_function_of_the_scene_json():
    scene, _ = scenes_and_captions(1, seed=11)[0]
    again = json.loads(json.dumps(scene))
    assert np.array_equal(np.asarray(shapes.render_scene(scene)), np.asarray(shapes.render_scene(again)))
    # Grain makes it photo-like: a plain region is not perfectly flat.
    arr = np.asarray(shapes.render_scene(scene), np.float32)
    assert arr[:20, :20].std() > 0.5


# -- other drawing styles (benchmarks/probes/shapes_styles.py) ------------------------------

def lone(shape: str, colour: str = "red", shadow: int = 0) -> dict:
    """A one-object scene on a plain grey background, large and centred, for pixel counts."""
    return {"width": 220, "height": 180, "shadow": shadow, "relation": None, "noise_seed": 3,
            "background": {"kind": "plain", "colour": [120, 120, 120], "colour2": [120, 120, 120],
                           "direction": "horizontal", "grain": 3.0},
            "objects": [{"colour": colour, "shape": shape, "size": "large", "place": "centre", "x": 110, "y": 90,
                         "extent": 120, "rgb": list(shapes.COLOURS[colour])}]}


def coverage(image: Image.Image, rgb, tol: float = 40) -> int:
    """Pixels within `tol` (RGB distance) of `rgb`."""
    return int((np.linalg.norm(np.asarray(image, np.float32) - np.array(rgb, np.float32), axis=-1) < tol).sum())


def test_training_style_is_the_training_renderer_and_styles_are_pure():
    scene, _ = scenes_and_captions(1, seed=11)[0]
    assert np.array_equal(np.asarray(shapes.render_styled(scene, "training")), np.asarray(shapes.render_scene(scene)))
    again = json.loads(json.dumps(scene))
    for style in shapes.STYLES:
        image = shapes.render_styled(scene, style)
        assert image.mode == "RGB" and image.size == (scene["width"], scene["height"])
        assert np.array_equal(np.asarray(image), np.asarray(shapes.render_styled(again, style)))
    with pytest.raises(ValueError, match="unknown style"):
        shapes.render_styled(scene, "watercolour")


def test_clean_style_is_flat_shapes_on_white_without_shadow_or_grain():
    scene = lone("square", shadow=5)
    arr = np.asarray(shapes.render_styled(scene, "clean"))
    assert (arr[:20, :20] == 255).all()  # white, not grainy
    assert (arr[90, 110] == shapes.COLOURS["red"]).all()  # exactly the paint: no grain, no blur
    square = 2 * 0.43 * 120  # _outline's square side
    assert abs(coverage(Image.fromarray(arr), shapes.COLOURS["red"], tol=1) - square ** 2) < 0.05 * square ** 2
    # Only white and red: the shadow is gone.
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) == 2


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_outline_style_paints_a_rim_and_leaves_the_inside_as_background(shape):
    scene = lone(shape, colour="blue")
    filled = shapes.render_styled(scene, "training")
    rim = shapes.render_styled(scene, "outline")
    blue = shapes.COLOURS["blue"]
    # A rim of a tenth of the extent covers a real part of the shape, but far from all of it.
    assert 0.2 * coverage(filled, blue) < coverage(rim, blue) < 0.75 * coverage(filled, blue)
    assert np.linalg.norm(patch_mean(rim, 110, 90, 4) - 120) < 10  # background grey at the centre
    assert np.linalg.norm(patch_mean(filled, 110, 90, 4) - blue) < 10


def test_rotated_style_turns_polygons_keeps_their_area_and_leaves_circles_alone():
    circle = lone("circle")
    assert np.array_equal(np.asarray(shapes.render_styled(circle, "rotated")), np.asarray(shapes.render_scene(circle)))
    square = lone("square", colour="green")
    upright, turned = shapes.render_scene(square), shapes.render_styled(square, "rotated")
    green = shapes.COLOURS["green"]
    assert abs(coverage(turned, green) - coverage(upright, green)) < 0.05 * coverage(upright, green)
    # Turned by 15-85% of 90 degrees: a corner of the upright square is background now.
    h = 0.43 * 120 - 4
    corners = [np.linalg.norm(patch_mean(turned, 110 + dx, 90 + dy, 2) - green) for dx in (-h, h) for dy in (-h, h)]
    assert max(corners) > 80


def test_striped_style_alternates_the_colour_with_white_inside_the_shape():
    scene = lone("square", colour="purple")
    striped = shapes.render_styled(scene, "striped")
    inside = np.asarray(striped, np.float32)[60:120, 80:140].reshape(-1, 3)
    purple = np.linalg.norm(inside - shapes.COLOURS["purple"], axis=1) < 40
    white = np.linalg.norm(inside - 255, axis=1) < 40
    assert 0.35 < purple.mean() < 0.65 and 0.3 < white.mean() < 0.65  # stripes of both, about half each
    assert np.linalg.norm(patch_mean(striped, 10, 10, 5) - 120) < 10  # the background is the training one


# -- captions ------------------------------------------------------------------------

def test_five_different_captions_that_name_every_object():
    for scene, captions in scenes_and_captions(300, seed=2):
        assert len(captions) == 5 and len(set(captions)) == 5
        truth = Counter((o["colour"], o["shape"]) for o in scene["objects"])
        n = len(scene["objects"])
        for caption in captions:
            assert Counter(shapes.parse_objects(caption)) == truth, (caption, scene["objects"])
            assert shapes.parse_objects(clean(caption)) == shapes.parse_objects(caption)
            assert shapes.attribute_hits(caption, scene) == (n, n)
            words = caption.lower()
            for o in scene["objects"]:
                # The colour directly before the shape word (size, if any, goes before the colour).
                shape_words = "|".join(shapes.SHAPE_WORDS[o["shape"]])
                assert re.search(rf"\b{o['colour']} ({shape_words})\b", words), (caption, o)


def test_captions_vary_like_people_write():
    captions = [c for _, cs in scenes_and_captions(300, seed=4) for c in cs]
    text = " ".join(captions).lower()
    assert sum(c[0].isupper() for c in captions) > 0.4 * len(captions)
    assert sum(c[0].islower() for c in captions) > 0.1 * len(captions)
    assert sum(c.endswith(".") for c in captions) > 0.2 * len(captions)
    assert sum(not c.endswith(".") for c in captions) > 0.2 * len(captions)
    assert any("," in c for c in captions) and any(":" in c for c in captions)
    for word in ("box", "disc", "ball", "big", "little", "small", "large", "left of", "above", "below",
                 "two", "three", "middle", "background"):
        assert re.search(rf"\b{word}\b", text), word
    # Sizes are mentioned sometimes, not always.
    with_size = sum(bool(re.search(r"\b(small|little|large|big)\b", c.lower())) for c in captions)
    assert 0.2 * len(captions) < with_size < 0.8 * len(captions)
    assert not re.search(r"\b(red|green|blue|yellow|purple|orange) (small|little|large|big)\b", text)
    assert len(set(captions)) > 0.95 * len(captions)


def test_captions_are_deterministic_given_the_generator():
    scene = shapes.make_scene(np.random.default_rng(9))
    first = shapes.captions_for(scene, np.random.default_rng(1))
    assert shapes.captions_for(scene, np.random.default_rng(1)) == first
    assert shapes.captions_for(scene, np.random.default_rng(2)) != first


# -- parsing and the attribute metric -----------------------------------------------

RED_CIRCLE = {"objects": [{"colour": "red", "shape": "circle"}]}
RED_CIRCLE_BLUE_SQUARE = {"objects": [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}]}


@pytest.mark.parametrize("caption, expected", [
    ("A large red circle on the left, and a small blue square at the top.",
     [("red", "circle"), ("blue", "square")]),
    ("red ball left of a blue box", [("red", "circle"), ("blue", "square")]),
    ("a red ball-shaped thing", [("red", "circle")]),  # hyphens split words, as in text.normalise
    ("an orange disc", [("orange", "circle")]),
    ("startseq two yellow stars and a green triangle endseq", [("yellow", "star"), ("green", "triangle")]),
    ("a red big circle", [("red", "circle")]),  # within two words
    ("a red thing, a circle", []),  # three words on: too far apart
    ("a square that is red", []),  # wrong order
    ("red and blue square", [("blue", "square")]),  # another colour in between
    ("Purple BOXES!", [("purple", "square")]),
    ("", []),
])
def test_parse_objects(caption, expected):
    assert shapes.parse_objects(caption) == expected


@pytest.mark.parametrize("caption, scene, expected", [
    ("a red circle", RED_CIRCLE, (1, 1)),
    ("a red square", RED_CIRCLE, (0, 1)),
    ("a blue circle", RED_CIRCLE, (0, 1)),
    ("a red circle and a red circle", RED_CIRCLE, (1, 1)),
    ("a red circle next to a red circle", RED_CIRCLE_BLUE_SQUARE, (1, 2)),  # a pair matches once
    ("A big RED disc, a blue box.", RED_CIRCLE_BLUE_SQUARE, (2, 2)),
    ("a blue square", RED_CIRCLE_BLUE_SQUARE, (1, 2)),
    ("red blue circle square", RED_CIRCLE_BLUE_SQUARE, (0, 2)),
    ("", RED_CIRCLE_BLUE_SQUARE, (0, 2)),
])
def test_attribute_hits(caption, scene, expected):
    assert shapes.attribute_hits(caption, scene) == expected


def test_attribute_hits_counts_repeated_objects_once_each():
    two_red_circles = {"objects": [{"colour": "red", "shape": "circle"}] * 2}
    assert shapes.attribute_hits("a red circle", two_red_circles) == (1, 2)
    assert shapes.attribute_hits("a red circle and a red disc", two_red_circles) == (2, 2)


def test_generate_holdout_scenes_all_show_a_held_out_pair(tmp_path):
    held = [["yellow", "triangle"]]
    summary = shapes.generate_holdout(tmp_path / "h", 4, seed=1, holdout=held, min_size=64, max_size=96, progress=False)
    scenes = json.loads((tmp_path / "h/scenes.json").read_text())
    assert summary == {"images": 4, "captions": 20} and len(scenes) == 4
    assert all(any((o["colour"], o["shape"]) == ("yellow", "triangle") for o in s["objects"]) for s in scenes.values())
    again = shapes.generate_holdout(tmp_path / "h2", 4, seed=1, holdout=held, min_size=64, max_size=96, progress=False)
    assert again == summary and (tmp_path / "h2/captions.csv").read_bytes() == (tmp_path / "h/captions.csv").read_bytes()


def test_attribute_accuracy_counts_objects_named_with_colour_and_shape():
    scenes = {"x": {"objects": [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}]},
              "y": {"objects": [{"colour": "green", "shape": "triangle"}]}}
    predictions = {"x": "a red circle and a green square", "y": "a green triangle"}
    assert truth.attribute_accuracy(predictions, scenes) == pytest.approx(2 / 3)
    assert truth.attribute_accuracy({"x": "a red circle and a red circle"}, scenes) == pytest.approx(1 / 2)
    assert truth.attribute_accuracy({}, scenes) == 0.0


def test_unseen_pair_accuracy_scores_only_the_objects_whose_pair_training_never_showed():
    training = {"t": {"objects": [{"colour": "yellow", "shape": "star"}, {"colour": "red", "shape": "triangle"}]}}
    seen = truth.object_pairs(training)
    assert seen == {("yellow", "star"), ("red", "triangle")}
    scenes = {"x": {"objects": [{"colour": "yellow", "shape": "triangle"}, {"colour": "yellow", "shape": "star"}]},
              "y": {"objects": [{"colour": "yellow", "shape": "triangle"}, {"colour": "red", "shape": "triangle"}]}}
    # Every seen pair named right, the new one never: 2 of 4 objects overall, none of the unseen.
    predictions = {"x": "a yellow star and a yellow star", "y": "a red triangle and a yellow star"}
    assert truth.attribute_accuracy(predictions, scenes) == pytest.approx(2 / 4)
    assert truth.unseen_pair_accuracy(predictions, scenes, seen) == 0.0
    predictions["y"] = "a yellow triangle and a red star"
    assert truth.unseen_pair_accuracy(predictions, scenes, seen) == pytest.approx(1 / 2)


def test_attention_localisation_reads_the_peak_cell_over_the_whole_image():
    # A 200x100 image; a red circle in the top-left quarter, a blue square bottom-right.
    scene = {"width": 200, "height": 100, "objects": [
        {"colour": "red", "shape": "circle", "x": 50, "y": 25, "extent": 40},
        {"colour": "blue", "shape": "square", "x": 150, "y": 75, "extent": 40}]}
    words = ["a", "red", "circle", "and", "a", "blue", "box", "and", "a", "star"]
    alphas = np.zeros((len(words), 4))  # a 2x2 grid: cells 0 1 / 2 3
    alphas[2, 0] = 1.0  # "circle" looks top-left: inside its box
    alphas[6, 0] = 1.0  # "box" looks top-left too: not where the square is
    assert truth.attention_localisation([("i.jpg", words, alphas)], {"i.jpg": scene}) == 0.5  # "star": no such object
    alphas[6] = [0.1, 0.2, 0.3, 0.4]  # peak at cell 3, bottom-right: inside
    assert truth.attention_localisation([("i.jpg", words, alphas)], {"i.jpg": scene}) == 1.0


def test_the_registry_reaches_scene_truth_through_the_dataset():
    scenes = {"x": {"objects": [{"colour": "yellow", "shape": "triangle"}, {"colour": "red", "shape": "star"}]}}
    seen = {"t": {"objects": [{"colour": "red", "shape": "star"}]}}
    score_truth = datasets.get("shapes").score_truth
    assert score_truth({"x": "a red star"}, scenes) == {"attribute_accuracy": 0.5}
    assert score_truth({"x": "a red star"}, scenes, seen_scenes=seen) == {"attribute_accuracy": 0.5,
                                                                          "unseen_pair_accuracy": 0.0}
    assert datasets.get("flickr8k").score_truth is None  # no scenes.json: nothing to score against
