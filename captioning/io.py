"""Small file helpers shared by every stage.

Every output is written to a temporary name beside its destination and renamed into place only when
complete, so an interrupted stage never leaves a half-written file for the next stage (or DVC's
cache) to trust.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data: the message names the file/field and says what to do."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.

    Works for files and directories: whatever the block creates at the yielded path replaces
    `path` in one rename (an existing directory at `path` is removed first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def file_digest(path: str | Path, algorithm: str) -> str:
    """The file's hex digest (e.g. "sha256", "md5"), read in blocks, never whole in memory."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; run the stage that produces it (dvc repro)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); delete it and rerun the stage") from None


def read_captions(path: str | Path) -> list[tuple[str, str]]:
    """(image, caption) rows of a captions.csv with header `image,caption`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"image", "caption"} <= set(reader.fieldnames):
                raise DataError(f"{path}: expected a header 'image,caption', got {reader.fieldnames}")
            return [(row["image"], row["caption"] or "") for row in reader]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; run the stage that produces it (dvc repro)") from None


def write_captions(path: str | Path, rows: list[tuple[str, str]]) -> None:
    """Write (image, caption) rows as captions.csv, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["image", "caption"])
            writer.writerows(rows)
