"""Flickr8k import / download / extract / verify, on the real Flickr8k files in ../shared.

A local HTTP server (127.0.0.1, port 0; conftest's `server`) serves zips built here from the real sample JPEGs and the
real text files, so the whole download path runs offline. The 5 images in images_sample/original
are unmodified (their sha256 is in the packaged list); the 200 resized ones are real content but
do not match, so they are only used where verification is explicitly off.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import zipfile
from pathlib import Path

import pytest

from captioning.datasets import flickr8k
from conftest import flickr8k_images_zip, flickr8k_token_lines
from captioning.io import DataError

PHANTOM = "2258277193_586949ec62.jpg.1"


# -----------------------------------------------------------------------------
# Real files

@pytest.fixture(scope="session")
def originals(flickr8k_dir) -> list[Path]:
    """The 5 unmodified Flickr8k JPEGs (all in the train list)."""
    paths = sorted((flickr8k_dir / "images_sample" / "original").glob("*.jpg"))
    assert len(paths) == 5
    return paths


@pytest.fixture(scope="session")
def all_205(originals, sample_images) -> list[Path]:
    assert len(sample_images) == 200
    return originals + sample_images


def _kaggle_lines(flickr8k_dir: Path, names: set[str]) -> str:
    lines = (flickr8k_dir / "captions.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    return lines[0] + "".join(line for line in lines[1:] if line.split(",", 1)[0] in names)


def _split_text(flickr8k_dir: Path, split: str, names: set[str] | None) -> str:
    lines = (flickr8k_dir / flickr8k.SPLIT_FILES[split]).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(line for line in lines if names is None or line.strip() in names)


def _text_zip(flickr8k_dir: Path, names: set[str], filter_splits: bool = True, leave_out: str | None = None) -> bytes:
    files = {flickr8k.TOKEN_FILE: flickr8k_token_lines(flickr8k_dir, names)}
    for split, fname in flickr8k.SPLIT_FILES.items():
        files[fname] = _split_text(flickr8k_dir, split, names if filter_splits else None)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for fname, text in files.items():
            if fname != leave_out:
                zf.writestr(fname, text)
    return buf.getvalue()


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "caption"]
    return [tuple(r) for r in rows[1:]]


# -----------------------------------------------------------------------------
# Parsers and the real quirks

def test_packaged_sha256_list_is_the_shared_one(flickr8k_dir):
    assert flickr8k.SHA256_LIST.read_bytes() == (flickr8k_dir / "Flickr8k_Dataset.sha256").read_bytes()
    assert len(flickr8k.read_sha256_list()) == flickr8k.NUM_IMAGES


def test_real_token_file_and_kaggle_captions_agree_but_for_the_phantom(flickr8k_dir):
    token = flickr8k.read_token_file(flickr8k_dir / flickr8k.TOKEN_FILE)
    kaggle = flickr8k.read_kaggle_captions(flickr8k_dir / "captions.txt")
    assert len(token) == 40460 and len(kaggle) == 40455
    assert [r for r in token if r[0] == PHANTOM] == token[6730:6735]  # lines 6731-6735
    assert [r for r in token if r[0] != PHANTOM] == kaggle
    assert len(flickr8k.short_captions(token)) == 17


def test_real_split_lists_leave_91_images_out(flickr8k_dir):
    images = flickr8k.read_sha256_list(flickr8k_dir / "Flickr8k_Dataset.sha256")
    splits = {s: flickr8k.read_split_list(flickr8k_dir / f) for s, f in flickr8k.SPLIT_FILES.items()}
    assert [len(v) for v in splits.values()] == [6000, 1000, 1000]
    left_out = flickr8k.images_without_split(images, splits)
    assert len(left_out) == 91
    assert PHANTOM not in left_out  # the phantom is no image at all
    token_keys = {img for img, _ in flickr8k.read_token_file(flickr8k_dir / flickr8k.TOKEN_FILE)}
    assert token_keys - set(images) == {PHANTOM}


@pytest.mark.parametrize("text, line", [
    ("a.jpg#0\tA dog .\na.jpg#1 A dog without a tab .\n", 2),
    ("a.jpg\tno index\n", 1),
    ("../../etc/passwd#0\tescape\n", 1),
])
def test_malformed_token_lines_name_file_and_line(tmp_path, text, line):
    path = tmp_path / flickr8k.TOKEN_FILE
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:{line}:"):
        flickr8k.read_token_file(path)


def test_malformed_kaggle_rows_name_file_and_line(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text('image,caption\na.jpg,"A dog, running ."\na.jpg,A dog, unquoted\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:3: expected 2 fields"):
        flickr8k.read_kaggle_captions(path)
    path.write_text("img,text\n")
    with pytest.raises(DataError, match=r":1: expected the header"):
        flickr8k.read_kaggle_captions(path)


# -----------------------------------------------------------------------------
# import_local

def _original_layout(root: Path, flickr8k_dir: Path, images: list[Path], full_text: bool = False,
                     image_dir: str = "Flicker8k_Dataset") -> Path:
    names = {p.name for p in images}
    (root / image_dir).mkdir(parents=True)
    for p in images:
        (root / image_dir / p.name).symlink_to(p)
    text = root / "Flickr8k_text"  # a wrapping folder, as many copies have
    text.mkdir()
    if full_text:
        (text / flickr8k.TOKEN_FILE).symlink_to(flickr8k_dir / flickr8k.TOKEN_FILE)
    else:
        (text / flickr8k.TOKEN_FILE).write_text(flickr8k_token_lines(flickr8k_dir, names))
    for split, fname in flickr8k.SPLIT_FILES.items():
        (text / fname).symlink_to(flickr8k_dir / fname)
    return root


def _kaggle_layout(root: Path, flickr8k_dir: Path, images: list[Path]) -> Path:
    (root / "Images").mkdir(parents=True)
    for p in images:
        (root / "Images" / p.name).symlink_to(p)
    (root / "captions.txt").write_text(_kaggle_lines(flickr8k_dir, {p.name for p in images}))
    return root


def test_original_and_kaggle_layouts_give_identical_captions(tmp_path, flickr8k_dir, all_205):
    orig = flickr8k.import_local(_original_layout(tmp_path / "orig", flickr8k_dir, all_205),
                                 tmp_path / "raw_orig", progress=False)
    kag = flickr8k.import_local(_kaggle_layout(tmp_path / "kag", flickr8k_dir, all_205),
                                tmp_path / "raw_kag", progress=False)
    a = (tmp_path / "raw_orig" / "captions.csv").read_bytes()
    assert a == (tmp_path / "raw_kag" / "captions.csv").read_bytes()
    rows = _read_csv(tmp_path / "raw_orig" / "captions.csv")
    assert len(rows) == 5 * 205 and {r[0] for r in rows} == {p.name for p in all_205}
    assert sorted(p.name for p in (tmp_path / "raw_kag" / "images").iterdir()) == sorted(p.name for p in all_205)
    assert (tmp_path / "raw_orig" / "images" / all_205[0].name).read_bytes() == all_205[0].read_bytes()
    assert orig["layout"] == "original" and kag["layout"] == "kaggle"
    for s in (orig, kag):
        assert (s["images"], s["captions"], s["missing_images"], s["empty_captions"]) == (205, 1025, [], 0)
    # The real (full) split lists, restricted to the images we have: 5 train, 200 test, none left out.
    splits = json.loads((tmp_path / "raw_orig" / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "dev", "test")] == [5, 0, 200]
    assert orig["no_split_images"] == 0
    assert kag["no_split_images"] is None and not (tmp_path / "raw_kag" / "splits.json").exists()


def test_real_token_file_reports_the_phantom_key(tmp_path, flickr8k_dir, originals, caplog):
    local = _original_layout(tmp_path / "local", flickr8k_dir, originals, full_text=True,
                             image_dir="Flickr8k_Dataset")  # the corrected spelling is accepted too
    with caplog.at_level(logging.WARNING, logger="captioning.datasets.flickr8k"):
        s = flickr8k.import_local(local, tmp_path / "raw", progress=False)
    assert PHANTOM in s["missing_images"]
    assert len(s["missing_images"]) == 8092 - 5  # every key but ours (the 8,086 absent images + phantom)
    assert (s["images"], s["captions"], s["no_split_images"], s["short_captions"]) == (5, 25, 0, 0)
    # Per-item warnings stop after a few names; the rest are counted (the summary has them all).
    assert f"and {8087 - flickr8k._LOG_NAMES} more" in caplog.text
    assert len(_read_csv(tmp_path / "raw" / "captions.csv")) == 25


def test_real_quirks_are_counted_for_metrics(tmp_path, flickr8k_dir):
    """The full real token file and split lists against all 8,091 image names (empty stand-ins:
    import never decodes images), as metrics/data.json reports them."""
    local = tmp_path / "local"
    (local / "Flicker8k_Dataset").mkdir(parents=True)
    for name in flickr8k.read_sha256_list():
        (local / "Flicker8k_Dataset" / name).touch()
    for fname in (flickr8k.TOKEN_FILE, *flickr8k.SPLIT_FILES.values()):
        (local / fname).symlink_to(flickr8k_dir / fname)
    metrics = flickr8k.data_metrics(flickr8k.import_local(local, tmp_path / "raw", progress=False))
    assert metrics == {"layout": "original", "images": 8091, "captions": 40455, "missing_images": 1,
                       "missing_images_examples": [PHANTOM], "uncaptioned_images": 0, "no_split_images": 91,
                       "short_captions": 17, "empty_captions": 0}
    splits = json.loads((tmp_path / "raw" / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "dev", "test")] == [6000, 1000, 1000]


def test_metrics_count_long_name_lists(tmp_path, flickr8k_dir, originals):
    local = _original_layout(tmp_path / "local", flickr8k_dir, originals, full_text=True)
    metrics = flickr8k.data_metrics(flickr8k.import_local(local, tmp_path / "raw", progress=False))
    assert metrics["missing_images"] == 8087 and len(metrics["missing_images_examples"]) == flickr8k._LOG_NAMES
    assert json.loads(json.dumps(metrics)) == metrics and len(json.dumps(metrics)) < 1000


def test_import_local_copies_so_the_users_files_stay_writable(tmp_path, originals):
    local = tmp_path / "local"
    (local / "Images").mkdir(parents=True)
    for p in originals:
        (local / "Images" / p.name).write_bytes(p.read_bytes())  # the user's own files: linkable
    (local / "captions.txt").write_text(f"image,caption\n{originals[0].name},A dog runs .\n")
    flickr8k.import_local(local, tmp_path / "raw", progress=False)
    src, dst = local / "Images" / originals[0].name, tmp_path / "raw" / "images" / originals[0].name
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_ino != src.stat().st_ino and src.stat().st_nlink == 1
    dst.chmod(0o444)  # what DVC does to its cache files
    assert src.stat().st_mode & 0o200


def test_empty_short_and_uncaptioned_are_counted_not_fatal(tmp_path, originals, caplog):
    local = tmp_path / "local"
    (local / "Images").mkdir(parents=True)
    for p in originals:
        (local / "Images" / p.name).symlink_to(p)
    a, b = originals[0].name, originals[1].name
    (local / "captions.txt").write_text(
        f"image,caption\n{a},A dog runs on grass .\n{a},\n{a},dogs racing\n{b},A child plays .\n"
        f"{PHANTOM},A phantom caption .\n")
    with caplog.at_level(logging.WARNING, logger="captioning.datasets.flickr8k"):
        s = flickr8k.import_local(local, tmp_path / "raw", progress=False)
    assert s["missing_images"] == [PHANTOM] and s["empty_captions"] == 1 and s["short_captions"] == 1
    assert s["uncaptioned_images"] == 3 and s["images"] == 2 and s["captions"] == 3
    text = caplog.text
    assert PHANTOM in text and f"empty caption for {a}" in text
    assert _read_csv(tmp_path / "raw" / "captions.csv") == [
        (a, "A dog runs on grass ."), (a, "dogs racing"), (b, "A child plays .")]
    assert sorted(p.name for p in (tmp_path / "raw" / "images").iterdir()) == sorted([a, b])


def test_import_local_refuses_unknown_layouts_and_partial_split_lists(tmp_path, flickr8k_dir, originals):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Flickr8k copy found"):
        flickr8k.import_local(tmp_path / "empty", tmp_path / "raw", progress=False)
    local = _original_layout(tmp_path / "local", flickr8k_dir, originals)
    (local / "Flickr8k_text" / flickr8k.SPLIT_FILES["dev"]).unlink()
    with pytest.raises(DataError, match="Flickr_8k.devImages.txt not found"):
        flickr8k.import_local(local, tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw").exists()


# -----------------------------------------------------------------------------
# verify_images

def test_verify_default_demands_all_8091(tmp_path, originals):
    for p in originals:
        (tmp_path / p.name).symlink_to(p)
    with pytest.raises(DataError, match=r"missing \(8086 of 8091 expected images are absent"):
        flickr8k.verify_images(tmp_path)
    assert flickr8k.verify_images(tmp_path, expected=[p.name for p in originals]) == {"checked": 5, "unlisted": []}


def test_verify_names_mismatch_and_unknown(tmp_path, originals, sample_images):
    (tmp_path / originals[0].name).write_bytes(originals[0].read_bytes()[:-1])
    with pytest.raises(DataError, match=rf"{re.escape(originals[0].name)}: sha256 mismatch"):
        flickr8k.verify_images(tmp_path, expected=[originals[0].name])
    resized = sample_images[0]
    (tmp_path / resized.name).symlink_to(resized)  # real name, resized bytes: must not pass
    with pytest.raises(DataError, match=rf"{re.escape(resized.name)}: sha256 mismatch"):
        flickr8k.verify_images(tmp_path, expected=[resized.name])
    with pytest.raises(DataError, match="x.jpg: not a Flickr8k image"):
        flickr8k.verify_images(tmp_path, expected=["x.jpg"])


# -----------------------------------------------------------------------------
# fetch: download -> extract -> verify -> raw dataset

def test_fetch_round_trip_verified(tmp_path, server, flickr8k_dir, originals):
    names = {p.name for p in originals}
    server.files["/Flickr8k_Dataset.zip"] = flickr8k_images_zip(originals)
    server.files["/Flickr8k_text.zip"] = _text_zip(flickr8k_dir, names)
    s = flickr8k.fetch(server.url("/Flickr8k_Dataset.zip"), server.url("/Flickr8k_text.zip"),
                       tmp_path / "download", tmp_path / "raw", progress=False, verify="present")
    assert (s["images"], s["captions"], s["verify"], s["verified_images"]) == (5, 25, "present", 5)
    assert (s["missing_images"], s["no_split_images"], s["empty_captions"]) == ([], 0, 0)
    rows = _read_csv(tmp_path / "raw" / "captions.csv")
    served = [line.split("\t", 1) for line in flickr8k_token_lines(flickr8k_dir, names).splitlines()]
    assert rows == [(key.split("#")[0], caption) for key, caption in served]  # file order, raw text
    assert {n: sum(r[0] == n for r in rows) for n in names} == {n: 5 for n in names}
    assert json.loads((tmp_path / "raw" / "splits.json").read_text()) == {
        "train": [n for n in _split_text(flickr8k_dir, "train", names).split()], "dev": [], "test": []}
    assert sorted(p.name for p in (tmp_path / "raw" / "images").iterdir()) == sorted(names)
    # The zips stay as the cache; the extracted copy is gone.
    assert sorted(p.name for p in (tmp_path / "download").iterdir()) == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"]


def test_fetch_205_images_unverified_with_full_split_lists(tmp_path, server, flickr8k_dir, all_205):
    names = {p.name for p in all_205}
    server.files["/img.zip"] = flickr8k_images_zip(all_205)
    server.files["/txt.zip"] = _text_zip(flickr8k_dir, names, filter_splits=False)
    s = flickr8k.fetch(server.url("/img.zip"), server.url("/txt.zip"), tmp_path / "dl", tmp_path / "raw",
                       progress=False, verify=False)
    assert (s["images"], s["captions"], s["verify"], s["verified_images"]) == (205, 1025, False, 0)
    splits = json.loads((tmp_path / "raw" / "splits.json").read_text())
    assert splits["test"] == _split_text(flickr8k_dir, "test", None).split()[:200]
    assert len(splits["train"]) == 5 and splits["dev"] == []
    rows = _read_csv(tmp_path / "raw" / "captions.csv")
    assert len(rows) == 1025 and {r[0] for r in rows} == names
    # The resized images are real names with wrong bytes: the production check refuses them.
    with pytest.raises(DataError, match="sha256 mismatch"):
        flickr8k.fetch(server.url("/img.zip"), server.url("/txt.zip"), tmp_path / "dl", tmp_path / "raw2",
                       progress=False, verify="present")


def test_fetch_corrupted_image_names_it_and_writes_nothing(tmp_path, server, flickr8k_dir, originals):
    bad = originals[2].name
    server.files["/Flickr8k_Dataset.zip"] = flickr8k_images_zip(originals, corrupt=bad)
    server.files["/Flickr8k_text.zip"] = _text_zip(flickr8k_dir, {p.name for p in originals})
    out = tmp_path / "raw"
    (out / "images").mkdir(parents=True)  # an earlier good output must survive a failed run
    (out / "captions.csv").write_text("image,caption\n")
    with pytest.raises(DataError, match=rf"Flicker8k_Dataset/{re.escape(bad)}: sha256 mismatch.*Flickr8k_Dataset\.zip"):
        flickr8k.fetch(server.url("/Flickr8k_Dataset.zip"), server.url("/Flickr8k_text.zip"),
                       tmp_path / "download", out, progress=False, verify="present")
    assert sorted(p.name for p in out.iterdir()) == ["captions.csv", "images"]
    assert not list((out / "images").iterdir()) and (out / "captions.csv").read_text() == "image,caption\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download", "raw"]
    assert sorted(p.name for p in (tmp_path / "download").iterdir()) == ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"]


def test_fetch_production_default_demands_all_images(tmp_path, server, flickr8k_dir, originals):
    server.files["/i.zip"] = flickr8k_images_zip(originals)
    server.files["/t.zip"] = _text_zip(flickr8k_dir, {p.name for p in originals})
    with pytest.raises(DataError, match=r"8086 of 8091 expected images are absent"):
        flickr8k.fetch(server.url("/i.zip"), server.url("/t.zip"), tmp_path / "dl", tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw").exists()


def test_fetch_text_archive_missing_a_split_list(tmp_path, server, flickr8k_dir, originals):
    server.files["/i.zip"] = flickr8k_images_zip(originals)
    server.files["/t.zip"] = _text_zip(flickr8k_dir, {p.name for p in originals}, leave_out="Flickr_8k.testImages.txt")
    with pytest.raises(DataError, match="Flickr_8k.testImages.txt not found"):
        flickr8k.fetch(server.url("/i.zip"), server.url("/t.zip"), tmp_path / "dl", tmp_path / "raw",
                       progress=False, verify="present")
    server.files["/t2.zip"] = _text_zip(flickr8k_dir, {p.name for p in originals}, leave_out=flickr8k.TOKEN_FILE)
    with pytest.raises(DataError, match="Flickr8k.token.txt not found"):
        flickr8k.fetch(server.url("/i.zip"), server.url("/t2.zip"), tmp_path / "dl", tmp_path / "raw",
                       progress=False, verify="present")
    assert not (tmp_path / "raw").exists()


def test_fetch_zip_slip_in_served_archive(tmp_path, server, flickr8k_dir, originals):
    server.files["/i.zip"] = flickr8k_images_zip(originals, extra={"../evil.txt": b"evil"})
    server.files["/t.zip"] = _text_zip(flickr8k_dir, {p.name for p in originals})
    with pytest.raises(DataError, match=r"'\.\./evil\.txt' refused"):
        flickr8k.fetch(server.url("/i.zip"), server.url("/t.zip"), tmp_path / "dl", tmp_path / "raw",
                       progress=False, verify="present")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "raw").exists()


def test_source_url_is_the_images_url_unless_a_local_copy_is_imported():
    section = {"local_dir": None, "images_url": "https://x/images.zip", "text_url": "https://x/text.zip"}
    assert flickr8k.DATASET.source_url(**section) == "https://x/images.zip"
    assert flickr8k.DATASET.source_url(**{**section, "local_dir": "/data/Flickr8k"}) is None
