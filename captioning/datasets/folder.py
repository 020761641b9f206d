"""A folder of the user's own captioned images, turned into the pipeline's raw-dataset layout.

Why this module exists: "how do I train it on my own photos?" should need no code. A user has a
directory of images (subfolders allowed) and a CSV of `image,caption` rows, any number of captions
per image, paths relative to the folder. Hand-made CSVs have bad rows: a typo'd path, an empty
caption, a stray text file, an unquoted comma. Each bad row is named in one warning line (file:line,
what is wrong, what to do), counted in the summary, and skipped; one bad row never costs the good
ones. Only what stops everything stops the stage, with one `DataError` line: no readable CSV, a
wrong header, or no usable row at all.

Later stages key features by file name, so `images/` holds plain names: `trips/2019/a.jpg` becomes
`trips__2019__a.jpg`. Two paths that flatten to one name are a collision; the later rows are skipped
and named. Nothing outside the folder is ever read (absolute paths, `..`, symlinks leading out),
and images are copied, never linked (DVC makes its cache files read-only).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from captioning.datasets.base import Dataset
from captioning.io import DataError, atomic_path, write_captions

log = logging.getLogger(__name__)

DEFAULT_CAPTIONS = "captions.csv"  # looked for in the images folder when data.folder.captions is null
HEADER = ["image", "caption"]
FLAT_SEPARATOR = "__"  # trips/2019/a.jpg -> trips__2019__a.jpg
# Only for counting images that no row captions; any format Pillow reads is imported.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
_EXAMPLES = 5  # per kind of bad row in the summary: metrics/data.json is diffed, the log names them all

# The kinds of skipped rows, in the summary's order.
MALFORMED, OUTSIDE, MISSING, NOT_IMAGE, EMPTY, COLLISION = (
    "malformed_rows", "outside_folder", "missing_images", "not_images", "empty_captions", "name_collisions")
KINDS = (MALFORMED, OUTSIDE, MISSING, NOT_IMAGE, EMPTY, COLLISION)


@dataclass(frozen=True)
class Row:
    """One data row of the CSV: where it starts, the image path as written, the caption."""
    line: int
    image: str
    caption: str


@dataclass(frozen=True)
class Skip:
    """A bad row: its kind (one of KINDS), line, image path as written, and the warning line."""
    kind: str
    line: int
    image: str
    message: str


class _Bad(Exception):
    # Raised by the per-image checks with (kind, "what is wrong; what to do"); never leaves the module.
    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind, self.why = kind, why


# -----------------------------------------------------------------------------
# Reading the CSV.

def captions_path(images_dir: str | Path, captions: str | Path | None) -> Path:
    """The CSV to read: `captions` when given, else <images_dir>/captions.csv."""
    return Path(captions) if captions else Path(images_dir) / DEFAULT_CAPTIONS


def _records(path: Path) -> Iterator[tuple[int, int, list[str], str | None]]:
    """(first line, last line, fields, csv's complaint or None) of every CSV record; a quoted caption
    may span lines, and a record csv cannot parse costs that record only."""
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheet exports start with a BOM
        reader = csv.reader(f)
        end = 0
        while True:
            try:
                fields, error = next(reader), None
            except StopIteration:
                return
            except csv.Error as e:  # e.g. a field over csv's size limit
                fields, error = [], str(e)
            yield end + 1, reader.line_num, fields, error
            end = reader.line_num


def read_rows(path: str | Path) -> tuple[list[Row], list[Skip]]:
    """The CSV's rows and its malformed ones. DataError when the file is missing, unreadable or not
    UTF-8, or its first line is not the header `image,caption`."""
    path = Path(path)
    rows: list[Row] = []
    skipped: list[Skip] = []
    try:
        records = _records(path)
        header = next(records, None)
        if header is None:
            raise DataError(f"{path}: empty file; its first line must be the header image,caption")
        _, _, fields, error = header
        if error is not None or [h.strip().lower() for h in fields] != HEADER:
            got = f"unparsable ({error})" if error is not None else repr(",".join(fields))
            raise DataError(f"{path}:1: expected the header 'image,caption', got {got}; "
                            "make the first line image,caption")
        for start, end, fields, error in records:
            why = _malformed(fields, error, start, end)
            if why is not None:
                skipped.append(Skip(MALFORMED, start, ",".join(fields)[:60], f"{path}:{start}: {why} (row skipped)"))
            elif fields:  # blank lines are no rows
                rows.append(Row(start, fields[0].strip(), fields[1]))
    except FileNotFoundError:
        raise DataError(f"{path}: captions file not found; put a {DEFAULT_CAPTIONS} (header image,caption) in the "
                        "images folder or set data.folder.captions (make train CAPTIONS=...)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; data.folder.captions must be the CSV file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied; make the captions file readable") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); save the CSV as UTF-8") from None
    return rows, skipped


def _malformed(fields: list[str], error: str | None, start: int, end: int) -> str | None:
    # What is wrong with a record as a CSV row, or None when it is a row (or a blank line).
    if error is not None:
        return f"not a CSV row ({error}); fix or delete the line"
    if not fields:
        return None
    if len(fields) != 2:
        return (f"expected 2 fields (image,caption), got {len(fields)}; "
                "put a caption that contains a comma in double quotes")
    if "\n" in fields[1] or "\r" in fields[1]:
        return (f"the caption runs over lines {start}-{end} (an unclosed double quote?); "
                "close the quote or keep each caption on one line")
    if not fields[0].strip():
        return "no image path; write the image's path relative to the folder first"
    return None


# -----------------------------------------------------------------------------
# Checking one image path.

def relative_key(image: str) -> str:
    """The path as written, normalised (`./a.jpg` and `a.jpg` are one image); _Bad when it is
    absolute or climbs out with `..`."""
    if image.startswith(("/", "\\")) or PureWindowsPath(image).drive:
        raise _Bad(OUTSIDE, "absolute path; write it relative to the images folder")
    parts = PurePosixPath(image).parts
    if ".." in parts:
        raise _Bad(OUTSIDE, "'..' leads out of the images folder; move the image into the folder")
    return PurePosixPath(*parts).as_posix()


def flat_name(key: str) -> str:
    """The plain file name an image gets in images/: its path's parts joined by FLAT_SEPARATOR."""
    return FLAT_SEPARATOR.join(PurePosixPath(key).parts)


def locate(root: Path, key: str) -> Path:
    """The real file of a relative path under `root` (resolved), or _Bad: a symlink leading out,
    nothing there, or a file Pillow cannot read as an image (open + verify: headers, cheap)."""
    path = (root / key).resolve()
    if not path.is_relative_to(root):
        raise _Bad(OUTSIDE, f"a symlink leads to {path}, outside the images folder; copy the image into the folder")
    if not path.is_file():
        what = "a directory, not an image file" if path.is_dir() else "no such file in the images folder"
        hint = " (separate folders with /)" if "\\" in key else ""
        raise _Bad(MISSING, f"{what}; fix the path{hint} or add the image")
    why = unreadable_image(path)
    if why is not None:
        raise _Bad(NOT_IMAGE, f"not a readable image ({why}); replace the file or delete the row")
    return path


def unreadable_image(path: Path) -> str | None:
    """Why Pillow cannot read `path` as an image, or None. The features stage decodes every pixel
    later; this is the cheap check that keeps text files and empty files out of the dataset."""
    try:
        with warnings.catch_warnings():
            # The features stage refuses images too large to decode; whether it opens at all is asked here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.verify()
    except UnidentifiedImageError:
        return "empty file" if path.stat().st_size == 0 else "not an image format Pillow knows"
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


# -----------------------------------------------------------------------------
# The rows to import.

@dataclass(frozen=True)
class Selection:
    """What `select` keeps: (flat name, caption) rows in file order, each name's source file, and
    the skipped rows in file order."""
    rows: list[tuple[str, str]]
    sources: dict[str, Path]
    skipped: list[Skip]


def select(root: Path, csv_path: Path, rows: Iterable[Row]) -> Selection:
    """Check every row against the folder; each image is checked once, however many rows name it."""
    root = root.resolve()
    checked: dict[str, Path | _Bad] = {}
    owner: dict[str, str] = {}  # flat name -> the path that took it first
    kept: list[tuple[str, str]] = []
    sources: dict[str, Path] = {}
    skipped: list[Skip] = []
    for row in rows:
        where = f"{csv_path}:{row.line}: {row.image!r}"
        try:
            key = relative_key(row.image)
            if key not in checked:
                try:
                    checked[key] = locate(root, key)
                except _Bad as bad:
                    checked[key] = bad
            found = checked[key]
            if isinstance(found, _Bad):
                raise found
            if not row.caption.strip():
                raise _Bad(EMPTY, "empty caption; write one or delete the row")
            name = flat_name(key)
            if owner.setdefault(name, key) != key:
                raise _Bad(COLLISION, f"becomes {name} in images/, as {owner[name]!r} already does; "
                           "rename one of the two")
        except _Bad as bad:
            skipped.append(Skip(bad.kind, row.line, row.image, f"{where}: {bad.why} (row skipped)"))
            continue
        kept.append((name, row.caption))
        sources[name] = found
    return Selection(kept, sources, skipped)


def uncaptioned_images(root: Path, named: Iterable[str]) -> list[str]:
    """Image files under `root` (by suffix, symlinked folders not followed) that no row names, sorted."""
    named = set(named)
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            key = (Path(dirpath) / f).relative_to(root).as_posix()
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and key not in named:
                found.append(key)
    return sorted(found)


def summary(selection: Selection, csv_name: str, uncaptioned: Sequence[str]) -> dict:
    """For metrics/data.json: counts, and a few examples (`captions.csv:LINE path`) of each bad kind."""
    per_image = Counter(name for name, _ in selection.rows)
    out: dict = {"images": len(per_image), "captions": len(selection.rows),
                 "single_caption_images": sum(n == 1 for n in per_image.values()),
                 "max_captions_per_image": max(per_image.values(), default=0),
                 "skipped_rows": len(selection.skipped)}
    for kind in KINDS:
        rows = [s for s in selection.skipped if s.kind == kind]
        out[kind] = len(rows)
        if rows:
            out[f"{kind}_examples"] = [f"{csv_name}:{s.line} {s.image}" for s in rows[:_EXAMPLES]]
    out["uncaptioned_images"] = len(uncaptioned)
    if uncaptioned:
        out["uncaptioned_images_examples"] = list(uncaptioned[:_EXAMPLES])
    return out


def import_folder(images_dir: str | Path, captions: str | Path | None, out_dir: str | Path,
                  progress: bool = True) -> dict:
    """Write out_dir/images/<flat name> (copies) and out_dir/captions.csv from the folder and its CSV,
    in one rename; returns `summary`. Bad rows are logged one warning line each and skipped."""
    root = Path(images_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; set data.folder.images_dir to your folder of images "
                        "(make train DATA=/path/to/folder)")
    csv_path = captions_path(root, captions)
    rows, malformed = read_rows(csv_path)
    selection = select(root, csv_path, rows)
    skipped = sorted(malformed + selection.skipped, key=lambda s: s.line)
    for skip in skipped:
        log.warning("%s", skip.message)
    selection = Selection(selection.rows, selection.sources, skipped)
    if not selection.rows:
        raise DataError(no_rows_message(csv_path, root, skipped))
    named = {relative_key(r.image) for r in rows if _is_relative(r.image)}
    uncaptioned = uncaptioned_images(root, named)
    if uncaptioned:
        log.warning("%d images in %s have no caption row (e.g. %s); they are not imported",
                    len(uncaptioned), root, uncaptioned[0])

    with atomic_path(out_dir) as tmp:
        (tmp / "images").mkdir(parents=True)
        for name, src in tqdm(selection.sources.items(), desc="import images", unit="img", disable=not progress):
            # A copy, never a hard link: DVC makes its cache files read-only, and through a shared
            # inode that would turn the user's own image read-only too.
            shutil.copyfile(src, tmp / "images" / name)
        write_captions(tmp / "captions.csv", selection.rows)
    return summary(selection, csv_path.name, uncaptioned)


def no_rows_message(csv_path: Path, root: Path, skipped: Sequence[Skip]) -> str:
    """The one line that stops the stage when no row is usable, with the count of each kind."""
    if not skipped:
        return f"{csv_path}: no rows under the header; add one image,caption row per caption"
    kinds = ", ".join(f"{kind} {n}" for kind, n in Counter(s.kind for s in skipped).items())
    return (f"{csv_path}: no usable rows (all {len(skipped)} skipped: {kinds}; see the warnings above); "
            f"are the image paths relative to {root}?")


def _is_relative(image: str) -> bool:
    try:
        relative_key(image)
    except _Bad:
        return False
    return True


# -----------------------------------------------------------------------------
# DVC reads params, not the user's folder: the fingerprint is how it sees the folder change.

def fingerprint(images_dir: str | Path, captions: str | Path | None = None) -> str:
    """A short digest of the CSV's bytes and every file's path, size and mtime under the folder.

    `make train` passes it as data.folder.fingerprint, so adding, editing or removing images or
    rows reruns the import (when the import then writes the same data/raw, DVC reruns nothing else).
    A missing folder or CSV has a digest too: the import itself reports what is wrong.
    """
    root = Path(images_dir)
    digest = hashlib.sha256()
    try:
        digest.update(captions_path(root, captions).read_bytes())
    except OSError:
        digest.update(b"no captions file")
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()  # os.walk's order is the file system's; the digest must not depend on it
        for f in sorted(files):
            path = Path(dirpath) / f
            try:
                st = path.stat()
            except OSError:  # a dangling symlink: its path still counts
                st = None
            rel = path.relative_to(root).as_posix()
            digest.update(f"{rel}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return f"sha256:{digest.hexdigest()[:16]}"  # the prefix keeps YAML from reading all-digit digests as numbers


# -----------------------------------------------------------------------------
# The dataset interface.

def prepare(out_dir: Path, cache_dir: Path, seed: int, *, images_dir: str | None, captions: str | None = None,
            fingerprint: str | None = None, progress: bool = True) -> dict:
    """params.yaml's data.folder section -> the raw layout in out_dir; the summary for metrics/data.json.

    Nothing is downloaded (cache_dir is unused), the split is split.scheme: random (`seed` is unused
    here), and `fingerprint` only tells DVC that the folder changed.
    """
    if not images_dir:
        raise DataError("params.yaml data.folder.images_dir is not set; point it at your folder of images "
                        "(make train DATA=/path/to/folder)")
    return import_folder(images_dir, captions, out_dir, progress)


# No source_url: a local folder has no URL (Dataset's default); the run records data/raw's md5 instead.
DATASET = Dataset(name="folder", prepare=prepare)
