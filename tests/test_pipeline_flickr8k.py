"""End to end on real Flickr8k files: `dvc repro` with data.dataset=flickr8k downloading from 127.0.0.1.

The served archives are built here from ../shared: 45 real images (the 5 unmodified originals and
40 of the 224x224 test images), the real Flickr8k.token.txt filtered to them, and the real split
lists. Restricted to these images the real lists give 5 train, 0 dev and 40 test images, and
training needs a validation part, so the served lists are the real ones with 15 of our test
images moved to train and 10 to dev (and one left out of every list, the "no split" quirk).
Nothing else changes: the stage still reads the full 6,000/1,000/1,000-name lists and restricts
them to the images it has. The resized images do not match the packaged sha256 list, so this
run uses data.flickr8k.verify=none; test_flickr8k.py covers verification.
"""

import csv
import io
import json
import zipfile

import pytest
from conftest import TINY, clone, dvc, flickr8k_images_zip, flickr8k_token_lines

from captioning.datasets import flickr8k

pytestmark = pytest.mark.slow

MOVED_TO_TRAIN, MOVED_TO_DEV = 15, 10


@pytest.fixture(scope="module")
def served(flickr8k_dir, sample_images):
    """The image paths served and the split lists the text archive holds."""
    originals = sorted((flickr8k_dir / "images_sample" / "original").glob("*.jpg"))
    resized = sample_images[:40]
    real = {s: flickr8k.read_split_list(flickr8k_dir / f) for s, f in flickr8k.SPLIT_FILES.items()}
    names = [p.name for p in resized]
    assert {p.name for p in originals} <= set(real["train"]) and set(names) <= set(real["test"])
    to_train, to_dev = names[:MOVED_TO_TRAIN], names[MOVED_TO_TRAIN:MOVED_TO_TRAIN + MOVED_TO_DEV]
    unlisted = names[-1]
    moved = {*to_train, *to_dev, unlisted}
    lists = {"train": real["train"] + to_train, "dev": real["dev"] + to_dev,
             "test": [n for n in real["test"] if n not in moved]}
    return originals + resized, lists, unlisted


@pytest.fixture(scope="module")
def flickr_repo(tmp_path_factory, module_server, flickr8k_dir, served):
    paths, lists, _ = served
    text = io.BytesIO()
    with zipfile.ZipFile(text, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"Flickr8k_text/{flickr8k.TOKEN_FILE}", flickr8k_token_lines(flickr8k_dir, {p.name for p in paths}))
        for split, fname in flickr8k.SPLIT_FILES.items():
            zf.writestr(f"Flickr8k_text/{fname}", "".join(f"{n}\n" for n in lists[split]))
    module_server.files["/Flickr8k_Dataset.zip"] = flickr8k_images_zip(paths)
    module_server.files["/Flickr8k_text.zip"] = text.getvalue()
    overrides = {**TINY, "data.dataset": "flickr8k",
                 "data.flickr8k.images_url": module_server.url("/Flickr8k_Dataset.zip"),
                 "data.flickr8k.text_url": module_server.url("/Flickr8k_text.zip"),
                 "data.flickr8k.verify": "none", "split.scheme": "official", "features.weights": "none"}
    repo = clone(tmp_path_factory.mktemp("flickr_clone"), overrides)
    dvc(repo, "repro")
    return repo


def test_raw_dataset_is_the_served_images_and_captions(flickr_repo, flickr8k_dir, served, module_server):
    paths = served[0]
    raw = flickr_repo / "data/raw"
    assert sorted(p.name for p in (raw / "images").iterdir()) == sorted(p.name for p in paths)
    assert all((raw / "images" / p.name).read_bytes() == p.read_bytes() for p in paths)
    with open(raw / "captions.csv", newline="", encoding="utf-8") as f:
        rows = [tuple(r) for r in csv.reader(f)][1:]
    served_lines = flickr8k_token_lines(flickr8k_dir, {p.name for p in paths}).splitlines()
    assert rows == [(key.split("#")[0], caption) for key, caption in (line.split("\t", 1) for line in served_lines)]
    assert len(rows) == 5 * len(paths)
    assert sorted(path for path, _ in module_server.requests) == ["/Flickr8k_Dataset.zip", "/Flickr8k_text.zip"]
    # The zips stay as the download cache (for resume and reruns), outside DVC's outputs.
    assert sorted(p.name for p in (flickr_repo / "data/download").iterdir()) == [
        "Flickr8k_Dataset.zip", "Flickr8k_text.zip"]


def test_split_follows_the_official_lists(flickr_repo, served):
    paths, lists, unlisted = served
    have = {p.name for p in paths}
    split = json.loads((flickr_repo / "data/split.json").read_text())
    assert split == {ours: sorted(have & set(lists[theirs]))
                     for ours, theirs in (("train", "train"), ("val", "dev"), ("test", "test"))}
    assert [len(split[k]) for k in ("train", "val", "test")] == [5 + MOVED_TO_TRAIN, MOVED_TO_DEV, 14]
    assert unlisted not in {n for names in split.values() for n in names}


def test_metrics_report_counts_and_bleu(flickr_repo, flickr8k_dir, served):
    paths = served[0]
    rows = flickr8k.read_token_file(flickr8k_dir / flickr8k.TOKEN_FILE)
    short = len(flickr8k.short_captions([r for r in rows if r[0] in {p.name for p in paths}]))
    data = json.loads((flickr_repo / "metrics/data.json").read_text())
    assert data == {"dataset": "flickr8k", "layout": "original", "images": 45, "captions": 225,
                    "missing_images": 0, "uncaptioned_images": 0, "no_split_images": 1,
                    "short_captions": short, "empty_captions": 0, "verify": False, "verified_images": 0}
    scores = json.loads((flickr_repo / "metrics/eval.json").read_text())
    for key in ["bleu1", "bleu2", "bleu3", "bleu4", "human_bleu1", "human_bleu4"]:
        assert 0.0 <= scores[key] <= 1.0, key
    assert scores["human_bleu1"] > 0.3  # real people describing real photos agree on many words
    assert "attribute_accuracy" not in scores  # only the generated shapes know what is in an image
    assert scores["test_images"] == 14
