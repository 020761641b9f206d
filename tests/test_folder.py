"""data.dataset: folder, on the 205 real Flickr8k photos of ../shared laid out as a user would: some
in subfolders, each with 1 to 5 of its real captions, and the bad rows hand-made CSVs have. Every
bad row is named in one warning and skipped; only a CSV that cannot be read at all, or one with no
usable row, stops the download stage (one `error:` line). The slow test trains on the folder with
`make train DATA=...` in a temporary clone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, clone, flickr8k_token_lines

from captioning.datasets import folder
from captioning.io import DataError, read_captions
from captioning.split import random_split
from captioning.text import PAD, UNK

LOGGER = "captioning.datasets.folder"


@dataclass(frozen=True)
class UserFolder:
    """The folder, its CSV, what a correct import writes, and the bad rows (line -> kind)."""
    root: Path
    csv: Path
    good: list[tuple[str, str]]  # (flat name, caption) in file order
    sources: dict[str, Path]     # flat name -> the user's file
    bad: dict[int, str]
    test_images: list[str]       # the seeded random split's test images: 1 caption each


def _real_captions(flickr8k_dir: Path, names: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for line in flickr8k_token_lines(flickr8k_dir, names).splitlines():
        key, _, caption = line.partition("\t")
        out[key.rpartition("#")[0]].append(caption)
    return out


def _csv_line(*fields: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def _place(photo: Path, index: int) -> str:
    # A quarter two levels down, a quarter one level down, the rest at the top.
    return {0: f"trips/2019/{photo.name}", 1: f"pets/{photo.name}"}.get(index % 4, photo.name)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, flickr8k_dir, sample_images) -> UserFolder:
    photos = sorted((flickr8k_dir / "images_sample" / "original").glob("*.jpg")) + sample_images
    assert len(photos) == 205
    base = tmp_path_factory.mktemp("user")
    root = base / "photos"
    keys = [_place(p, i) for i, p in enumerate(photos)]
    for photo, key in zip(photos, keys):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(photo.read_bytes())
    real = _real_captions(flickr8k_dir, {p.name for p in photos})

    # The split stage's seeded random split over these names (params.yaml's split settings): its
    # test images get one caption each, so the test split has no human ceiling and dev has one.
    split = yaml.safe_load((REPO / "params.yaml").read_text())["split"]
    flat = [folder.flat_name(k) for k in keys]
    test = random_split(flat, split["seed"], split["test_size"], split["val_size"])["test"]

    outside = base / "outside.jpg"
    outside.write_bytes(photos[0].read_bytes())
    (root / "escape.jpg").symlink_to(outside)
    (root / "notes.jpg").write_text("a text file with an image's name\n")
    pets_key = next(k for k in keys if k.startswith("pets/"))
    collider = folder.flat_name(pets_key)  # a top-level file already named like the flattened path
    (root / collider).write_bytes(photos[1].read_bytes())
    (root / "spare").mkdir()
    (root / "spare" / photos[2].name).write_bytes(photos[2].read_bytes())  # no row names it
    bad_rows = [
        ("missing_images", _csv_line("trips/2019/not_there.jpg", "A dog runs through the snow .")),
        ("empty_captions", _csv_line(keys[3], "   ")),
        ("outside_folder", _csv_line("../outside.jpg", "A dog runs .")),
        ("outside_folder", _csv_line(str(photos[4]), "An absolute path .")),
        ("outside_folder", _csv_line("escape.jpg", "A symlink out of the folder .")),
        ("not_images", _csv_line("notes.jpg", "A text file .")),
        ("malformed_rows", f"{keys[5]},A dog, running on grass\n"),  # an unquoted comma: 3 fields
        ("name_collisions", _csv_line(collider, "A file whose name a subfolder path already takes .")),
    ]

    lines = ["image,caption\n"]
    good: list[tuple[str, str]] = []
    bad: dict[int, str] = {}
    for i, (photo, key) in enumerate(zip(photos, keys)):
        count = 1 if flat[i] in test else 1 + i % 5
        for caption in real[photo.name][:count]:
            lines.append(_csv_line(key, caption))
            good.append((flat[i], caption))
        if i % 25 == 24 and bad_rows:  # bad rows among the good ones, as they come in real files
            kind, line = bad_rows.pop(0)
            lines.append(line)
            bad[len(lines)] = kind
        if i == 100:
            lines.append("\n")  # a blank line is no row
    assert not bad_rows
    csv_path = root / "captions.csv"
    csv_path.write_text("".join(lines), encoding="utf-8")
    sources = {f: root / k for f, k in zip(flat, keys)}
    return UserFolder(root, csv_path, good, sources, bad, test)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, user_folder):
    """(summary, out_dir, warning lines) of importing the folder once."""
    out = tmp_path_factory.mktemp("imported") / "raw"
    handler = _Collect()
    logging.getLogger(LOGGER).addHandler(handler)
    try:
        summary = folder.prepare(out, out.parent / "download", 42, images_dir=str(user_folder.root), captions=None,
                                 progress=False)
    finally:
        logging.getLogger(LOGGER).removeHandler(handler)
    return summary, out, handler.lines


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.extend(record.getMessage().splitlines())


# -----------------------------------------------------------------------------
# The import on real photos

def test_every_bad_row_is_named_in_exactly_one_warning_and_skipped(imported, user_folder):
    _, out, lines = imported
    for line, kind in user_folder.bad.items():
        naming = [w for w in lines if w.startswith(f"{user_folder.csv}:{line}: ")]
        assert len(naming) == 1, (line, kind, lines)
        assert "row skipped" in naming[0] and ";" in naming[0]  # what is wrong; what to do
    uncaptioned = [w for w in lines if "no caption row" in w]
    assert len(uncaptioned) == 1 and "spare/" in uncaptioned[0]
    assert len(lines) == len(user_folder.bad) + 1  # nothing else warned
    written = {image for image, _ in read_captions(out / "captions.csv")}
    assert not written & {"not_there.jpg", "outside.jpg", "escape.jpg", "notes.jpg"}


@pytest.mark.parametrize("kind, fragment", [
    ("missing_images", "no such file in the images folder; fix the path"),
    ("empty_captions", "empty caption; write one or delete the row"),
    ("not_images", "not a readable image"),
    ("malformed_rows", "expected 2 fields (image,caption), got 3; put a caption that contains a comma in double quotes"),
    ("name_collisions", "rename one of the two"),
])
def test_each_warning_says_what_is_wrong_and_what_to_do(imported, user_folder, kind, fragment):
    (line,) = [n for n, k in user_folder.bad.items() if k == kind]
    (warning,) = [w for w in imported[2] if w.startswith(f"{user_folder.csv}:{line}: ")]
    assert fragment in warning


def test_paths_leaving_the_folder_are_refused_even_when_the_file_exists(imported, user_folder):
    lines = [n for n, k in user_folder.bad.items() if k == "outside_folder"]
    warnings = [next(w for w in imported[2] if w.startswith(f"{user_folder.csv}:{n}: ")) for n in lines]
    assert "'..' leads out" in warnings[0]
    assert "absolute path; write it relative" in warnings[1]
    assert "a symlink leads to" in warnings[2] and "outside the images folder" in warnings[2]


def test_good_rows_are_all_written_in_order_with_flat_names(imported, user_folder):
    _, out, _ = imported
    assert read_captions(out / "captions.csv") == user_folder.good
    names = {name for name, _ in user_folder.good}
    assert {p.name for p in (out / "images").iterdir()} == names
    assert any(n.startswith("trips__2019__") for n in names) and any(n.startswith("pets__") for n in names)
    for name in names:
        copy, src = out / "images" / name, user_folder.sources[name]
        assert copy.read_bytes() == src.read_bytes()
        assert copy.stat().st_ino != src.stat().st_ino and src.stat().st_nlink == 1  # copied, never linked


def test_summary_counts_each_kind_for_metrics(imported, user_folder):
    summary = imported[0]
    per_image = Counter(name for name, _ in user_folder.good)
    assert summary["images"] == 205 and summary["captions"] == len(user_folder.good)
    assert summary["single_caption_images"] == sum(n == 1 for n in per_image.values()) > len(user_folder.test_images)
    assert summary["max_captions_per_image"] == 5
    expected = Counter(user_folder.bad.values())
    assert {k: summary[k] for k in folder.KINDS} == {k: expected[k] for k in folder.KINDS}
    assert summary["skipped_rows"] == len(user_folder.bad) == 8
    assert summary["uncaptioned_images"] == 1 and summary["uncaptioned_images_examples"][0].startswith("spare/")
    line = next(n for n, k in user_folder.bad.items() if k == "missing_images")
    assert summary["missing_images_examples"] == [f"captions.csv:{line} trips/2019/not_there.jpg"]
    assert json.loads(json.dumps(summary)) == summary and len(json.dumps(summary)) < 2000


# -----------------------------------------------------------------------------
# Small folders: paths, CSV dialects, and what stops the import

def test_flat_names_are_plain_and_paths_stay_inside():
    assert folder.flat_name(folder.relative_key("./trips//2019/a.jpg")) == "trips__2019__a.jpg"
    assert folder.flat_name(folder.relative_key("a.jpg")) == "a.jpg"
    for path in ("../a.jpg", "trips/../../a.jpg", "/etc/passwd", "C:\\photos\\a.jpg", "\\\\server\\a.jpg"):
        with pytest.raises(folder._Bad) as bad:
            folder.relative_key(path)
        assert bad.value.kind == "outside_folder", path


def _small_folder(tmp_path: Path, photo: Path, text: str, *, encoding: str = "utf-8") -> Path:
    root = tmp_path / "small"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(photo.read_bytes())
    (root / "sub" / "b.jpg").write_bytes(photo.read_bytes())
    (root / "captions.csv").write_bytes(text.encode(encoding))
    return root


def test_spreadsheet_csv_quoted_commas_bom_and_crlf_are_read(tmp_path, sample_images):
    text = '\ufeffimage,caption\r\na.jpg,"A dog, wet, shakes itself ."\r\n./sub/b.jpg,A cat .\r\n\r\na.jpg,"He said ""hi"" ."\r\n'
    root = _small_folder(tmp_path, sample_images[0], text)
    summary = folder.import_folder(root, None, tmp_path / "raw", progress=False)
    assert read_captions(tmp_path / "raw" / "captions.csv") == [
        ("a.jpg", "A dog, wet, shakes itself ."), ("sub__b.jpg", "A cat ."), ("a.jpg", 'He said "hi" .')]
    assert summary["images"] == 2 and summary["single_caption_images"] == 1 and summary["skipped_rows"] == 0


def test_an_unclosed_quote_names_the_lines_it_swallowed(tmp_path, sample_images, caplog):
    text = 'image,caption\na.jpg,A dog .\nsub/b.jpg,"A cat\na.jpg,Another dog .\n'
    root = _small_folder(tmp_path, sample_images[0], text)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        summary = folder.import_folder(root, None, tmp_path / "raw", progress=False)
    assert summary["malformed_rows"] == 1 and summary["captions"] == 1
    assert f"{root / 'captions.csv'}:3: the caption runs over lines 3-4 (an unclosed double quote?)" in caplog.text


def test_captions_csv_may_live_elsewhere(tmp_path, sample_images):
    root = _small_folder(tmp_path, sample_images[0], "not read\n")
    other = tmp_path / "elsewhere.csv"
    other.write_text("image,caption\nsub/b.jpg,A photo .\n")
    summary = folder.prepare(tmp_path / "raw", tmp_path / "dl", 42, images_dir=str(root), captions=str(other),
                             progress=False)
    assert summary["captions"] == 1 and (tmp_path / "raw" / "images" / "sub__b.jpg").is_file()


@pytest.mark.parametrize("text, encoding, message", [
    (None, "utf-8", "captions file not found; put a captions.csv (header image,caption) in the images folder"),
    ("", "utf-8", "empty file; its first line must be the header image,caption"),
    ("img,text\na.jpg,A dog .\n", "utf-8", ":1: expected the header 'image,caption', got 'img,text'"),
    ("image,caption\n", "utf-8", "no rows under the header"),
    ("image,caption\na.jpg,Un chien très mouillé .\n", "latin-1", "not UTF-8 text"),
    ("image,caption\nnope.jpg,A dog .\n../a.jpg,A dog .\na.jpg,\n", "utf-8",
     "no usable rows (all 3 skipped: missing_images 1, outside_folder 1, empty_captions 1; see the warnings above)"),
])
def test_what_stops_the_import_is_one_data_error(tmp_path, sample_images, text, encoding, message):
    root = _small_folder(tmp_path, sample_images[0], text or "", encoding=encoding)
    if text is None:
        (root / "captions.csv").unlink()
    with pytest.raises(DataError) as e:
        folder.import_folder(root, None, tmp_path / "raw", progress=False)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "raw").exists()  # nothing half-written for the next stage


def test_images_dir_must_be_set_and_a_directory(tmp_path):
    with pytest.raises(DataError, match="data.folder.images_dir is not set"):
        folder.prepare(tmp_path / "raw", tmp_path / "dl", 42, images_dir=None)
    with pytest.raises(DataError, match="not a directory; set data.folder.images_dir"):
        folder.prepare(tmp_path / "raw", tmp_path / "dl", 42, images_dir=str(tmp_path / "nope"))


def test_fingerprint_changes_with_the_csv_and_the_files(tmp_path, sample_images):
    root = _small_folder(tmp_path, sample_images[0], "image,caption\na.jpg,A dog .\n")
    first = folder.fingerprint(root)
    assert first.startswith("sha256:") and folder.fingerprint(root) == first
    (root / "captions.csv").write_text("image,caption\na.jpg,A dog .\nsub/b.jpg,A cat .\n")
    second = folder.fingerprint(root)
    (root / "sub" / "c.jpg").write_bytes(sample_images[1].read_bytes())
    third = folder.fingerprint(root)
    assert len({first, second, third}) == 3
    assert folder.fingerprint(tmp_path / "nope").startswith("sha256:")  # the import reports what is missing


# -----------------------------------------------------------------------------
# The download stage and make: one `error:` line, no traceback

def _run_download(workdir: Path, section: dict) -> subprocess.CompletedProcess:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(dataset="folder", folder={**params["data"]["folder"], **section})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.download"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_stage_wrong_header_is_one_error_line(tmp_path, sample_images):
    root = _small_folder(tmp_path, sample_images[0], "file;text\na.jpg;A dog .\n")
    error = _one_error_line(_run_download(tmp_path, {"images_dir": str(root)}))
    assert f"{root / 'captions.csv'}:1: expected the header 'image,caption'" in error
    assert not (tmp_path / "data" / "raw").exists()


def test_stage_no_usable_rows_is_one_error_line_after_the_warnings(tmp_path, sample_images):
    root = _small_folder(tmp_path, sample_images[0], "image,caption\nphotos/a.jpg,A dog .\nphotos/b.jpg,A cat .\n")
    proc = _run_download(tmp_path, {"images_dir": str(root)})
    error = _one_error_line(proc)
    assert "no usable rows (all 2 skipped: missing_images 2" in error and f"relative to {root}" in error
    assert sum(f"{root / 'captions.csv'}:" in line for line in proc.stderr.splitlines()) == 3  # 2 warnings + error


def test_stage_imports_the_folder_and_writes_its_metrics(tmp_path, user_folder):
    proc = _run_download(tmp_path, {"images_dir": str(user_folder.root), "fingerprint": "sha256:0"})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics" / "data.json").read_text())
    assert metrics["dataset"] == "folder" and metrics["images"] == 205 and metrics["skipped_rows"] == 8
    assert read_captions(tmp_path / "data" / "raw" / "captions.csv") == user_folder.good


def test_make_train_without_data_is_one_error_line():
    venv = Path(sys.prefix)
    proc = subprocess.run(["make", "-o", f"{venv}/.installed", "train", f"VENV={venv}"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.splitlines()[0] == ("error: DATA is not set; make train DATA=/path/to/folder "
                                           "[CAPTIONS=/path/to/captions.csv] (docs/own_data.md)")


# -----------------------------------------------------------------------------
# End to end: make train DATA=<the folder> in a temporary clone

# Small enough to run in two or three minutes, with enough steps (batches of 16 captions) that the
# model writes phrases, not a lone "a"; the profile's own params otherwise.
SMALL = "train.epochs=6 train.batch_size=16 model.units=64 model.embedding_dim=32 evaluate.num_samples=5"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, user_folder) -> Path:
    repo = tmp_path_factory.mktemp("folder_profile") / "repo"
    repo.mkdir()
    clone(repo, {})
    venv = Path(sys.prefix)  # this environment, taken as installed (-o): no second install
    # An empty Keras cache: the ImageNet weights come from the package, as on a user's first run.
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "KERAS_HOME": str(repo / ".keras-empty")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(["make", "-o", f"{venv}/.installed", "train", f"VENV={venv}", f"DATA={user_folder.root}",
                           f"SET={SMALL}"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return repo


@pytest.mark.slow
def test_make_train_names_its_experiment_and_records_the_folder(trained, user_folder):
    listed = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=trained,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["folder"]
    params = yaml.safe_load((trained / "params.yaml").read_text())
    assert params["data"]["dataset"] == "folder"
    assert params["data"]["folder"] == {"images_dir": str(user_folder.root), "captions": None,
                                        "fingerprint": folder.fingerprint(user_folder.root)}
    data = json.loads((trained / "metrics/data.json").read_text())
    assert data["images"] == 205 and data["captions"] == len(user_folder.good) and data["skipped_rows"] == 8
    assert data["outside_folder"] == 3 and data["max_captions_per_image"] == 5


@pytest.mark.slow
def test_variable_caption_counts_reach_evaluate(trained, user_folder):
    split = json.loads((trained / "data/split.json").read_text())
    assert split["test"] == user_folder.test_images  # the fixture foresaw the split: 1 caption each
    per_image = Counter(image for image, _ in read_captions(trained / "data/clean/captions.csv"))
    assert {per_image[i] for i in split["test"]} == {1} and max(per_image[i] for i in split["val"]) > 1
    scores = json.loads((trained / "metrics/eval.json").read_text())
    assert scores["test_images"] == len(split["test"]) and scores["beam_size"] == 3
    for key in ("bleu1", "bleu4", "meteor", "rouge_l", "dev_bleu4", "dev_human_bleu1"):
        assert 0 <= scores[key] <= 1, key
    assert scores["cider"] >= 0
    assert "human_bleu1" not in scores  # no test image has a second caption to agree with
    samples = json.loads((trained / "reports/samples.json").read_text())
    assert len(samples) == 5 and all(len(s["references"]) == 1 for s in samples)


@pytest.mark.slow
def test_the_folder_model_captions_a_photo_cleanly(trained, user_folder):
    photo = user_folder.sources[user_folder.test_images[0]]
    out = subprocess.run([sys.executable, "-m", "captioning", "caption", str(photo), "--json",
                          "--model", str(trained / "models")], capture_output=True, text=True, check=True)
    (line,) = out.stdout.splitlines()
    words = json.loads(line)["caption"].split()
    assert len(words) >= 3 and UNK not in words and PAD not in words
    vocab = json.loads((trained / "models/vocab.json").read_text())
    assert set(words) <= set(vocab["words"]) and vocab["max_length"] <= 30
    encoder = json.loads((trained / "models/encoder.json").read_text())
    assert encoder["backbone"] == "mobilenet_v2" and encoder["layer"] == "out_relu" and encoder["grid_side"] is None

