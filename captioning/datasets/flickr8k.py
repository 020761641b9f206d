"""The real Flickr8k dataset, turned into the pipeline's raw-dataset layout.

Why this module exists: the rest of the pipeline reads one layout only (`images/<name>.jpg`,
`captions.csv` with header `image,caption`, one row per caption in file order (5 per image here),
and `splits.json` when the official train/dev/test lists exist), which is also what the generated
shapes dataset writes.
Flickr8k reaches users in two layouts (the original `Flicker8k_Dataset/` + `Flickr8k.token.txt`
zips, or Kaggle's `Images/` + `captions.txt`), has known quirks (a caption key with no image, 91
images in no split list, very short captions), and a 1 GB download that must resume and must be
checked before anything trusts it. Everything here either produces the raw layout completely or
raises a `DataError` that names the file and says what to do; no stage ever sees half a dataset.

Integrity: the sha256 of all 8,091 original JPEGs ships with the package
(`captioning/data/flickr8k_sha256.txt`), and `fetch` demands all of them by default. The generic
download / extraction / checksum code lives in `captioning.datasets.download`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from tqdm import tqdm

from captioning.datasets.base import Dataset
from captioning.datasets.download import download, safe_extract
from captioning.io import DataError, atomic_path, file_digest, write_captions

log = logging.getLogger(__name__)

IMAGES_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"
TEXT_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip"

SHA256_LIST = Path(__file__).resolve().parents[1] / "data" / "flickr8k_sha256.txt"
NUM_IMAGES = 8091  # real JPEGs in Flickr8k_Dataset (the token file has one more, phantom key)

TOKEN_FILE = "Flickr8k.token.txt"
KAGGLE_CAPTIONS = "captions.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}
# The official zip spells it "Flicker8k"; many re-uploads corrected it. Kaggle uses "Images".
ORIGINAL_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset")
KAGGLE_IMAGE_DIRS = ("Images",)

SHORT_CAPTION_WORDS = 3          # captions with fewer words are counted (kept: cleaning decides)
MAX_EXTRACT_BYTES = 4 << 30      # the real images zip unpacks to ~1.1 GB; 4 GiB leaves room, stops bombs
_LOG_NAMES = 10                  # per-item warnings before summarising, so a partial copy doesn't flood

URL_HINT = ("check data.flickr8k.images_url / data.flickr8k.text_url in params.yaml, "
            "or set data.flickr8k.local_dir to an already downloaded copy")

Verify = Literal["all", "present", False]


# -----------------------------------------------------------------------------
# Parsers. Each returns (image, caption) rows in file order; captions stay raw.

def _check_name(name: str, where: str) -> str:
    # Caption keys become file names under images/: a key such as "../x" must never leave that dir.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(f"{where}: image name {name!r} is not a plain file name")
    return name


def read_token_file(path: str | Path) -> list[tuple[str, str]]:
    """Rows of `Flickr8k.token.txt`: `<image>.jpg#<n>\\t<caption>` per line, n = 0..4."""
    path = Path(path)
    rows: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")  # CRLF copies exist; the caption itself stays untouched
                if not line.strip():
                    continue
                key, tab, caption = line.partition("\t")
                image, hash_, n = key.rpartition("#")
                if not tab or not hash_ or not n.isdigit():
                    raise DataError(f"{path}:{lineno}: expected '<image>#<n><TAB><caption>', got {line[:80]!r}")
                rows.append((_check_name(image, f"{path}:{lineno}"), caption))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); is this really {TOKEN_FILE}?") from None
    return rows


def read_kaggle_captions(path: str | Path) -> list[tuple[str, str]]:
    """Rows of Kaggle's `captions.txt`: CSV with header `image,caption`."""
    path = Path(path)
    rows: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ["image", "caption"]:
                raise DataError(f"{path}:1: expected the header 'image,caption', got {header}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not row:
                    continue
                if len(row) != 2:
                    raise DataError(f"{where}: expected 2 fields (image,caption), got {len(row)}; "
                                    "a caption with a comma must be quoted")
                rows.append((_check_name(row[0], where), row[1]))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); is this really {KAGGLE_CAPTIONS}?") from None
    return rows


def read_split_list(path: str | Path) -> list[str]:
    """Image names of one `Flickr_8k.<split>Images.txt`, one per line, in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return [_check_name(s.strip(), f"{path}:{i}") for i, s in enumerate(lines, 1) if s.strip()]


def read_sha256_list(path: str | Path = SHA256_LIST) -> dict[str, str]:
    """name -> sha256 from a `sha256sum` listing (`<hex>  <name>` or `<hex> *<name>`)."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (the package data is missing; reinstall captioning)") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            raise DataError(f"{path}:{lineno}: expected '<sha256>  <name>', got {line[:80]!r}")
        out[_check_name(parts[1].lstrip("*"), f"{path}:{lineno}")] = parts[0]
    return out


# -----------------------------------------------------------------------------
# Pure helpers for the quirks, testable on the real text files without the images.

def short_captions(rows: Iterable[tuple[str, str]],
                   min_words: int = SHORT_CAPTION_WORDS) -> list[tuple[str, str]]:
    """Rows whose caption has fewer than `min_words` words (empty ones excluded: they are dropped)."""
    return [(image, c) for image, c in rows if 0 < len(c.split()) < min_words]


def images_without_split(images: Iterable[str], splits: Mapping[str, Sequence[str]]) -> list[str]:
    """The images (sorted, unique) that are in none of the split lists: 91 in real Flickr8k."""
    listed = {name for names in splits.values() for name in names}
    return sorted(set(images) - listed)


def _log_items(message: str, items: Sequence[str]) -> None:
    # One line per item names it; past _LOG_NAMES the rest are counted (the summary lists them all).
    for item in items[:_LOG_NAMES]:
        log.warning(message, item)
    if len(items) > _LOG_NAMES:
        log.warning("... and %d more like that (all listed in the summary)", len(items) - _LOG_NAMES)


# -----------------------------------------------------------------------------
# Finding a layout on disk.

@dataclass(frozen=True)
class Layout:
    """Where one copy of Flickr8k keeps its images, captions and (optional) split lists."""
    kind: Literal["original", "kaggle"]
    images_dir: Path
    captions: Path
    splits: dict[str, Path] | None


def _search_dirs(root: Path) -> list[Path]:
    # The root and its direct subdirectories: zips and copies often add one wrapping folder
    # (Flickr8k_text/, Flickr8k_Dataset/Flicker8k_Dataset/). macOS resource forks are junk.
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "__MACOSX" and not p.name.startswith("."))
    return [root, *subdirs]


def _find_file(root: Path, name: str) -> Path | None:
    return next((d / name for d in _search_dirs(root) if (d / name).is_file()), None)


def _find_image_dir(root: Path, names: Sequence[str]) -> Path | None:
    for d in _search_dirs(root):
        for name in names:
            cand = d / name
            if cand.is_dir() and next(cand.glob("*.jpg"), None) is not None:
                return cand
    return None


def find_split_lists(root: str | Path, required: bool = False) -> dict[str, Path] | None:
    """The three official split lists under `root`; None when none is there (and not `required`).

    Some but not all of them is an incomplete copy, never silently a partial split: DataError.
    """
    root = Path(root)
    found = {split: _find_file(root, name) for split, name in SPLIT_FILES.items()}
    missing = [SPLIT_FILES[s] for s, p in found.items() if p is None]
    if not missing:
        return {s: p for s, p in found.items() if p is not None}
    if required or len(missing) < len(SPLIT_FILES):
        raise DataError(f"{root}: {', '.join(missing)} not found (need all three Flickr8k split lists "
                        "or none); use the complete Flickr8k_text archive")
    return None


def check_text_dir(text_dir: str | Path) -> dict[str, Path]:
    """The extracted Flickr8k_text archive must hold the token file and the three split lists.

    Returns {"token": path, "train": ..., "dev": ..., "test": ...}.
    """
    text_dir = Path(text_dir)
    token = _find_file(text_dir, TOKEN_FILE)
    if token is None:
        raise DataError(f"{text_dir}: {TOKEN_FILE} not found in the text archive; {URL_HINT}")
    splits = find_split_lists(text_dir, required=True)
    assert splits is not None  # required=True raises instead
    return {"token": token, **splits}


def find_layout(local_dir: str | Path) -> Layout:
    """Detect the original (Flicker8k_Dataset/ + Flickr8k.token.txt) or Kaggle (Images/ + captions.txt)
    layout under `local_dir`; the original wins when both are there (it has the split lists)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; set data.flickr8k.local_dir to a downloaded Flickr8k copy")
    token = _find_file(root, TOKEN_FILE)
    images = _find_image_dir(root, ORIGINAL_IMAGE_DIRS)
    if token is not None and images is not None:
        return Layout("original", images, token, find_split_lists(root))
    captions = _find_file(root, KAGGLE_CAPTIONS)
    kaggle_images = _find_image_dir(root, KAGGLE_IMAGE_DIRS)
    if captions is not None and kaggle_images is not None:
        return Layout("kaggle", kaggle_images, captions, find_split_lists(root))
    raise DataError(f"{root}: no Flickr8k copy found; expected {ORIGINAL_IMAGE_DIRS[0]}/*.jpg + {TOKEN_FILE} "
                    f"(original layout) or Images/*.jpg + {KAGGLE_CAPTIONS} (Kaggle layout)")


# -----------------------------------------------------------------------------
# Writing the raw dataset.

def _place(src: Path, dst: Path, move: bool) -> None:
    # A copy, never a hard link: DVC makes its cache files read-only, and through a shared inode
    # that would turn the user's own copy read-only too. Files of our own temporary extraction
    # (fetch) are moved instead, which costs nothing on the same file system.
    if move:
        shutil.move(src, dst)
    else:
        shutil.copyfile(src, dst)


def import_layout(layout: Layout, out_dir: str | Path, progress: bool = True, move: bool = False) -> dict:
    """Write the raw dataset from a located copy; see `import_local` for the summary.

    move=True moves the images out of layout.images_dir (only for a temporary copy we own).
    """
    rows = (read_token_file(layout.captions) if layout.kind == "original"
            else read_kaggle_captions(layout.captions))
    with os.scandir(layout.images_dir) as it:
        present = {e.name for e in it if e.is_file()}

    kept: list[tuple[str, str]] = []
    missing: dict[str, None] = {}  # ordered set: keys in file order
    empty: list[str] = []
    for image, caption in rows:
        if image not in present:
            missing[image] = None
        elif not caption.strip():
            empty.append(image)  # nothing to learn from; dropping keeps 'every row has text' true
        else:
            kept.append((image, caption))
    _log_items(f"{layout.captions.name}: caption key %s has no image in {layout.images_dir.name}/; its "
               "captions are dropped", list(missing))
    _log_items(f"{layout.captions.name}: empty caption for %s dropped", empty)
    if not kept:
        raise DataError(f"{layout.captions}: none of its images is in {layout.images_dir}; "
                        "is this the matching image folder?")

    images = list(dict.fromkeys(image for image, _ in kept))
    uncaptioned = sorted(n for n in present - set(images) if n.lower().endswith(".jpg"))
    _log_items(f"{layout.images_dir.name}/%s has no caption; not imported", uncaptioned)
    short = short_captions(kept)
    if short:  # a known Flickr8k quirk (17 of them, e.g. "dogs racing"): counted, kept, cleaned later
        log.info("%d captions have fewer than %d words, e.g. %s: %r", len(short), SHORT_CAPTION_WORDS, *short[0])

    splits = None
    no_split: list[str] | None = None
    if layout.splits is not None:
        have = set(images)
        # Restricted to the images written, so no later stage meets a name without a file.
        splits = {s: [n for n in read_split_list(p) if n in have] for s, p in layout.splits.items()}
        no_split = images_without_split(images, splits)
        if no_split:  # 91 in real Flickr8k: the official split simply leaves them out
            log.info("%d images are in no split list, e.g. %s", len(no_split), no_split[0])

    with atomic_path(out_dir) as tmp:
        (tmp / "images").mkdir(parents=True)
        for name in tqdm(images, desc="import images", unit="img", disable=not progress):
            _place(layout.images_dir / name, tmp / "images" / name, move)
        write_captions(tmp / "captions.csv", kept)
        if splits is not None:
            (tmp / "splits.json").write_text(json.dumps(splits, indent=1) + "\n", encoding="utf-8")

    return {
        "layout": layout.kind,
        "images": len(images),
        "captions": len(kept),
        "missing_images": list(missing),
        "uncaptioned_images": len(uncaptioned),
        "no_split_images": None if no_split is None else len(no_split),
        "short_captions": len(short),
        "empty_captions": len(empty),
    }


def import_local(local_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict:
    """Import an already downloaded Flickr8k copy (original or Kaggle layout) into `out_dir`.

    Writes out_dir/images/*.jpg (copies: the user's files stay untouched), captions.csv and, when the three
    official split lists are there, splits.json; the whole directory appears in one rename.
    Summary: layout, images, captions (written), missing_images (caption keys without an image,
    e.g. the phantom 2258277193_586949ec62.jpg.1), uncaptioned_images, no_split_images (None
    without split lists), short_captions (< 3 words, kept), empty_captions (dropped).
    """
    return import_layout(find_layout(local_dir), out_dir, progress)


# -----------------------------------------------------------------------------
# Verification against the packaged sha256 list.

def verify_images(images_dir: str | Path, sha256_list_path: str | Path = SHA256_LIST,
                  expected: Iterable[str] | None = None, *, progress: bool = False) -> dict:
    """Check images against the sha256 list; DataError naming the first bad or missing file.

    expected=None (production): every image in the list (all 8,091) must be present and match.
    expected=names: only those must be present and match, and each must be in the list; tests and
    verify="present" use this explicitly. Returns {"checked": n, "unlisted": [jpgs not in the list]}.
    """
    images_dir = Path(images_dir)
    known = read_sha256_list(sha256_list_path)
    if Path(sha256_list_path).resolve() == SHA256_LIST and len(known) != NUM_IMAGES:
        # The production check is only as strong as this list: a truncated copy must not pass.
        raise DataError(f"{sha256_list_path}: {len(known)} entries, expected {NUM_IMAGES}; reinstall captioning")
    names = sorted(known) if expected is None else sorted(set(expected))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"{images_dir.name}/{unknown[0]}: not a Flickr8k image (not in {sha256_list_path}; "
                        f"{len(unknown)} such files); is this the Flickr8k_Dataset archive?")
    missing = [n for n in names if not (images_dir / n).is_file()]
    if missing:
        raise DataError(f"{images_dir.name}/{missing[0]}: missing ({len(missing)} of {len(names)} expected "
                        "images are absent; incomplete archive?); delete data/download and rerun")
    bad = [n for n in tqdm(names, desc="sha256", unit="img", disable=not progress)
           if file_digest(images_dir / n, "sha256") != known[n]]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{images_dir.name}/{bad[0]}: sha256 mismatch{more} (archive corrupted?); "
                        "delete data/download and rerun")
    unlisted = sorted(p.name for p in images_dir.glob("*.jpg") if p.name not in known)
    _log_items(f"{images_dir.name}/%s is not in the Flickr8k sha256 list", unlisted)
    return {"checked": len(names), "unlisted": unlisted}


# -----------------------------------------------------------------------------
# The whole download path.

def _zip_name(url: str, default: str) -> str:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    return name if name.endswith(".zip") else default


def fetch(images_url: str = IMAGES_URL, text_url: str = TEXT_URL, cache_dir: str | Path = "data/download",
          out_dir: str | Path = "data/raw", progress: bool = True, *, verify: Verify = "all",
          sha256_list_path: str | Path = SHA256_LIST, max_total_bytes: int = MAX_EXTRACT_BYTES) -> dict:
    """Download both Flickr8k zips into cache_dir (kept for resume and reuse), extract them safely,
    check the text files and the images' sha256, then import into out_dir like `import_local`.

    verify: "all" (default, production) demands all 8,091 listed images with matching hashes;
    "present" checks only the JPEGs the archive holds (each must be listed and match);
    False skips the hash check (e.g. resized copies). The summary adds "verify" and
    "verified_images".
    """
    if verify not in ("all", "present", False):
        raise DataError(f"verify={verify!r}: use 'all', 'present' or False")
    cache_dir = Path(cache_dir)
    # A run killed mid-extraction leaves its temporary copy (~1 GB) behind; DVC runs one stage at a
    # time, so any such folder is stale.
    for stale in cache_dir.glob(".extract.*"):
        shutil.rmtree(stale, ignore_errors=True)
    images_zip = download(images_url, cache_dir / _zip_name(images_url, "Flickr8k_Dataset.zip"), URL_HINT, progress)
    text_zip = download(text_url, cache_dir / _zip_name(text_url, "Flickr8k_text.zip"), URL_HINT, progress)
    # Extract inside cache_dir (same file system as data/ usually, so import can move the images);
    # the extracted copy is temporary: the zips are the cache.
    with tempfile.TemporaryDirectory(prefix=".extract.", dir=cache_dir) as tmp:
        text = check_text_dir(safe_extract(text_zip, Path(tmp) / "text", max_total_bytes))
        images_root = safe_extract(images_zip, Path(tmp) / "images", max_total_bytes)
        images_dir = _find_image_dir(images_root, ORIGINAL_IMAGE_DIRS + KAGGLE_IMAGE_DIRS)
        if images_dir is None:
            raise DataError(f"{images_zip}: no {ORIGINAL_IMAGE_DIRS[0]}/*.jpg inside; {URL_HINT}")
        checked = 0
        if verify:
            expected = None if verify == "all" else sorted(p.name for p in images_dir.glob("*.jpg"))
            try:
                checked = verify_images(images_dir, sha256_list_path, expected, progress=progress)["checked"]
            except DataError as e:
                raise DataError(f"{e} (archive: {images_zip})") from None
        layout = Layout("original", images_dir, text["token"], {s: text[s] for s in SPLIT_FILES})
        summary = import_layout(layout, out_dir, progress, move=True)
    return {**summary, "verify": verify, "verified_images": checked}


def data_metrics(summary: Mapping) -> dict:
    """The import/fetch summary as metrics/data.json wants it: numbers, not name lists.

    A partial local copy misses thousands of images; their names belong in the log, not in a
    metrics file DVC diffs. Lists become counts, plus a few example names (the phantom key
    2258277193_586949ec62.jpg.1 is the one example on a complete copy).
    """
    out: dict = {}
    for key, value in summary.items():
        if isinstance(value, (list, tuple)):
            out[key] = len(value)
            if value:
                out[f"{key}_examples"] = list(value[:_LOG_NAMES])
        else:
            out[key] = value
    return out


def prepare(out_dir: Path, cache_dir: Path, seed: int, *, local_dir: str | None, images_url: str, text_url: str,
            verify: str = "all", progress: bool = True) -> dict:
    """params.yaml's data.flickr8k section -> the raw layout in out_dir; the summary for metrics/data.json.

    local_dir imports a copy the user already has; otherwise both zips are downloaded into
    cache_dir. verify: all (default) demands all 8,091 sha256-listed JPEGs; present / none are for
    test archives and resized copies only. The split is the official one, so `seed` is unused.
    """
    if local_dir:
        return data_metrics(import_local(local_dir, out_dir, progress))
    if verify not in ("all", "present", "none"):
        raise DataError(f"params.yaml data.flickr8k.verify={verify!r}: use all, present or none")
    return data_metrics(fetch(images_url, text_url, cache_dir, out_dir, progress,
                              verify=False if verify == "none" else verify))


def source_url(*, local_dir: str | None, images_url: str, **_other_settings) -> str | None:
    """Where params.yaml's data.flickr8k section takes the images from: None for a local copy."""
    return None if local_dir else images_url


DATASET = Dataset(name="flickr8k", prepare=prepare, source_url=source_url)
