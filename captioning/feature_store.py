"""Image features on disk: the one format, its one writer and its one reader. Rows are written and
read a batch at a time, so neither extraction nor training needs RAM for every image (COCO's 7x7
float16 grids are ~25 GB).

A store is a directory: `features.npy` (a plain .npy, no pickle, so `np.load` reads it too),
`images.json` (row order) and, from the features stage, `skipped.json` (unreadable images and why).

- `write_store` (on `StoreWriter`) is the writer: it appends row batches to disk as they are
  computed, writes the .npy at the end and renames the directory into place only when complete;
- `extract_to_store` is the features stage as one of N shards: shard i encodes a contiguous run of
  whole batches, and every image is encoded at the same batch position with the same batch size
  as in the single-process run (an unreadable image keeps its slot as a blank and its row is
  dropped), because oneDNN's ResNet50 result for an image depends on the batch size and on its
  position in the batch. `merge_stores` concatenates the shards: the merged store is byte-for-byte
  the single-process one;
- `FeatureStore` is the reader: `load` (every row), `memmap`, `read(rows)` (just the requested rows,
  with positioned reads, `os.pread`); `feature_lookup` runs `read` inside tf.data. Rows are read
  through the page cache rather than a memory map, because the pages of a map count into the
  process's RSS once touched; the page cache is the kernel's to evict.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from captioning.features import empty_rows, encode
from captioning.io import DataError, atomic_path

FEATURES, NAMES, SKIPPED = "features.npy", "images.json", "skipped.json"
COPY_CHUNK = 64 << 20  # bytes copied at a time when the .npy is assembled


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of row 0) of a C-ordered .npy, from numpy's own header reader."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except FileNotFoundError:
        raise DataError(f"{path}: no feature store here; run the features stage") from None
    except ValueError as e:
        raise DataError(f"{path}: not a .npy feature file ({e}); rerun the features stage") from None
    if fortran or dtype.hasobject:
        raise DataError(f"{path}: features must be a C-ordered numeric array; rerun the features stage")
    return tuple(shape), dtype, offset


@dataclass(frozen=True)
class FeatureStore:
    """A features directory opened for reading rows on demand (nothing is loaded up front)."""

    directory: Path
    names: list[str]
    shape: tuple[int, ...]  # (images, *row_shape)
    dtype: np.dtype
    offset: int  # where row 0 starts in features.npy

    @classmethod
    def open(cls, directory: str | Path) -> FeatureStore:
        directory = Path(directory)
        shape, dtype, offset = _read_header(directory / FEATURES)
        try:
            names = json.loads((directory / NAMES).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{directory / NAMES}: missing; rerun the features stage") from None
        if len(names) != shape[0]:
            raise DataError(f"{directory}: {len(names)} names but {shape[0]} feature rows; rerun the features stage")
        return cls(directory, names, shape, dtype, offset)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.row_bytes * self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows) -> np.ndarray:
        """These rows (any order, repeats allowed), as stored; only they are read from disk."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.directory}: row out of range 0..{len(self) - 1}")
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        view, size = memoryview(out.reshape(-1).view(np.uint8)), self.row_bytes
        fd = os.open(self.directory / FEATURES, os.O_RDONLY)
        try:
            for i, row in enumerate(rows):
                got = os.preadv(fd, [view[i * size:(i + 1) * size]], self.offset + int(row) * size)
                if got != size:
                    raise DataError(f"{self.directory / FEATURES}: truncated at row {row}; rerun the features stage")
        finally:
            os.close(fd)
        return out

    def load(self) -> np.ndarray:
        """Every row in RAM (what `np.load` gives): for stores that fit."""
        return np.load(self.directory / FEATURES, allow_pickle=False)

    def memmap(self) -> np.ndarray:
        """The whole array memory-mapped read-only: index it like an ndarray, pay only for what is read."""
        return np.load(self.directory / FEATURES, mmap_mode="r", allow_pickle=False)


def _return_big_blocks_to_the_os() -> None:
    """Make glibc serve every block of 1 MiB or more with its own mmap, returned on free.

    By default glibc raises that threshold to the size of the last freed block (up to 32 MiB), so
    per-batch feature arrays (tens of MB) then come from per-thread heaps that keep freed memory,
    and an epoch read from disk grows peak RSS by more than the store itself. No effect (and no
    error) on other C libraries.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(1 << 20))  # M_MMAP_THRESHOLD = -3 in <malloc.h>
    except (OSError, AttributeError):
        pass


def feature_lookup(features):
    """A tf function (batch of int32 rows) -> float32 features of those rows, for tf.data `map`: read
    from disk per batch for a FeatureStore (run in parallel: pread releases the GIL), gathered from
    one in-memory table (a tf.constant, the fastest) for an array."""
    if not isinstance(features, FeatureStore):
        table = tf.constant(np.asarray(features))
        return lambda rows: tf.cast(tf.gather(table, rows), tf.float32)
    _return_big_blocks_to_the_os()

    def gather(rows):
        feats = tf.numpy_function(features.read, [rows], tf.as_dtype(features.dtype), stateful=False)
        feats.set_shape((None, *features.row_shape))
        return tf.cast(feats, tf.float32)

    return gather


def feature_batches(features, rows: np.ndarray, batch_size: int):
    """tf.data of float32 feature batches of these rows, in order (for adapting a Normalization
    layer or decoding without holding every row)."""
    lookup = feature_lookup(features)
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(rows, dtype=np.int32)).batch(batch_size)
    return ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


class StoreWriter:
    """Appends row batches to a raw file as they arrive; `finish` writes the store's .npy (header +
    those bytes, copied in chunks) and names. Memory: one batch, never the whole array."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._raw_path = self.directory / (FEATURES + ".rows")
        self._raw = open(self._raw_path, "wb")
        self.rows, self.row_shape, self.dtype = 0, None, None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()  # also when a batch failed; `finish` has closed it otherwise

    def append(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch)
        if self.row_shape is None:
            self.row_shape, self.dtype = batch.shape[1:], batch.dtype
        elif batch.shape[1:] != self.row_shape or batch.dtype != self.dtype:
            raise ValueError(f"rows of {batch.shape[1:]} {batch.dtype} after {self.row_shape} {self.dtype}")
        self._raw.write(memoryview(batch.reshape(-1).view(np.uint8)))
        self.rows += len(batch)

    def append_raw(self, source: Path, offset: int, row_shape: tuple[int, ...], dtype: np.dtype, rows: int) -> None:
        """Rows copied straight from another .npy (a shard), chunk by chunk."""
        if self.row_shape is None:
            self.row_shape, self.dtype = tuple(row_shape), np.dtype(dtype)
        elif tuple(row_shape) != tuple(self.row_shape) or np.dtype(dtype) != self.dtype:
            raise DataError(f"{source}: rows of {tuple(row_shape)} {dtype}, the other shards have "
                            f"{self.row_shape} {self.dtype}; extract every shard with the same features.* params")
        with open(source, "rb") as f:
            f.seek(offset)
            shutil.copyfileobj(f, self._raw, COPY_CHUNK)
        self.rows += rows

    def finish(self, names: Sequence[str], skipped: dict[str, str] | None,
               empty: np.ndarray | None = None) -> None:
        """Write the store (skipped.json unless `skipped` is None); `empty` (a zero-row array) gives
        row shape and dtype if no row came."""
        self._raw.close()
        if len(names) != self.rows:
            raise ValueError(f"{len(names)} names for {self.rows} rows")
        if self.row_shape is None:
            empty = np.zeros((0, 2048), np.float32) if empty is None else empty
            self.row_shape, self.dtype = empty.shape[1:], empty.dtype
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.row_shape)}
        with open(self.directory / FEATURES, "wb") as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header) if _fits_v1(header) else \
                np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(raw, out, COPY_CHUNK)
        self._raw_path.unlink()
        (self.directory / NAMES).write_text(json.dumps(list(names)) + "\n", encoding="utf-8")
        if skipped is not None:
            (self.directory / SKIPPED).write_text(json.dumps(skipped, indent=1, sort_keys=True) + "\n",
                                                  encoding="utf-8")


def _fits_v1(header: dict) -> bool:
    return len(repr(header)) < 65000  # numpy's own rule: version 1.0 headers are < 65535 bytes


def write_store(out_dir: Path, batches: Iterable[tuple[Sequence[str], np.ndarray]],
                skipped: dict[str, str] | None = None, empty: np.ndarray | None = None) -> int:
    """A store at out_dir from (names, rows) batches, one batch in memory at a time (atomically);
    returns the rows written. `skipped` becomes skipped.json after the last batch (`features.encode`
    fills it meanwhile); None writes none (held-out scenes have none). `empty`: see `finish`."""
    names: list[str] = []
    with atomic_path(out_dir) as tmp, StoreWriter(tmp) as writer:
        for batch_names, rows in batches:
            writer.append(rows)
            names += batch_names
        writer.finish(names, skipped, empty)
    return len(names)


# -----------------------------------------------------------------------------
# Extraction as N shards.

def shard_range(num_images: int, batch_size: int, shard: int, shards: int) -> range:
    """The input positions shard `shard` of `shards` encodes: a contiguous run of whole batches
    (so each image keeps the batch position it has in the single-process run)."""
    if not 0 <= shard < shards:
        raise DataError(f"shard {shard} of {shards}: the shard index must be in 0..{shards - 1}")
    batches = -(-num_images // batch_size)
    first, last = batches * shard // shards, batches * (shard + 1) // shards
    return range(min(first * batch_size, num_images), min(last * batch_size, num_images))


def extract_to_store(encoder, paths: Sequence[Path], out_dir: Path, size: int, batch_size: int,
                     shard: int = 0, shards: int = 1, progress: bool = True, *,
                     backbone: str) -> tuple[int, dict[str, str]]:
    """Encode shard `shard` of `shards` of `paths` into a store at out_dir (atomically).

    Returns (rows written, skipped image -> why). Every batch runs at full size (padded), so rows
    are exactly those the single-process run gives the same images (see the module docstring), in
    the same order.
    """
    part = [Path(paths[i]) for i in shard_range(len(paths), batch_size, shard, shards)]
    skipped: dict[str, str] = {}
    batches = encode(encoder, part, size, batch_size, skipped, backbone=backbone, pad=True, progress=progress,
                     desc=f"features {shard + 1}/{shards}")
    return write_store(out_dir, batches, skipped, empty_rows(encoder)), skipped


def merge_stores(shard_dirs: Sequence[Path], out_dir: Path) -> tuple[int, dict[str, str]]:
    """One store from shard stores, in the given order, copied chunk by chunk (atomically).
    Returns (rows, skipped images of every shard)."""
    if not shard_dirs:
        raise DataError("no feature shards to merge")
    names: list[str] = []
    skipped: dict[str, str] = {}
    with atomic_path(out_dir) as tmp, StoreWriter(tmp) as writer:
        for directory in map(Path, shard_dirs):
            part = FeatureStore.open(directory)
            writer.append_raw(directory / FEATURES, part.offset, part.row_shape, part.dtype, len(part))
            names += part.names
            if (directory / SKIPPED).exists():
                skipped.update(json.loads((directory / SKIPPED).read_text(encoding="utf-8")))
        if len(set(names)) != len(names):
            raise DataError(f"{', '.join(map(str, shard_dirs))}: an image is in two shards; "
                            "extract every shard with the same shard count")
        writer.finish(names, skipped)  # every shard's header gave the row shape, also with no row
    return len(names), skipped
