"""Getting a dataset's files from the web safely, for any dataset adapter: a resumable HTTP
download, zip extraction that cannot write outside its folder, and file checksums.

Downloads are large and connections drop: `download` writes to a .part file, resumes it with HTTP
Range requests, and renames it into place only when the announced length has arrived. Archives are
untrusted input: `safe_extract` refuses absolute paths, '..', links and bombs before writing a byte.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from captioning.io import DataError, atomic_path

RESUME_ATTEMPTS = 3  # in-call resumes after a dropped connection, each must make progress


class _Interrupted(Exception):
    """The transfer stopped early; the .part file keeps what arrived."""


class _StaleRange(_Interrupted):
    """The server refused to resume at the .part's size (416): the .part is not a prefix of this file."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header such as 'bytes 100-199/200' or 'bytes */200'."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if not m:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _open(url: str, offset: int, timeout: float, hint: str) -> http.client.HTTPResponse | None:
    """The response for bytes offset.. of url; None when the .part already holds the whole file."""
    headers = {"User-Agent": "captioning/0.1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range starts at/after the end: complete already, or a stale .part
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == offset:
                return None
            raise _StaleRange(f"server refused to resume at byte {offset}") from None
        raise DataError(f"{url}: HTTP {e.code} {e.reason}; {hint}") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: cannot connect ({e.reason}); check the network, or {hint}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as e:
        raise DataError(f"{url}: no answer ({type(e).__name__}: {e}); check the network, or {hint}") from None


def _transfer(url: str, part: Path, progress: bool, chunk: int, timeout: float, hint: str) -> None:
    """Append the rest of url to part (or rewrite it when the server ignores Range); raise
    _Interrupted when fewer bytes arrive than announced."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, timeout, hint)
    if resp is None:
        return
    with resp:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if resp.status == 206 and start == offset:
            mode = "ab"
        else:
            # 200 (server ignores Range) or a range we didn't ask for: start cleanly from zero.
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        got = offset
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-len(".part")],
                                         disable=not progress) as bar:
            while True:
                try:
                    block = resp.read(chunk)
                except (http.client.IncompleteRead, TimeoutError, OSError) as e:
                    raise _Interrupted(f"{type(e).__name__}: {e}") from None
                if not block:
                    break
                f.write(block)
                got += len(block)
                bar.update(len(block))
    # urllib returns b"" when the connection closes early, so the length is the only proof of a
    # complete file (chunked answers without a length are trusted; the zip and sha256 checks follow).
    if total is not None and got != total:
        raise _Interrupted(f"connection closed after {got} of {total} bytes")


def download(url: str, dest: str | Path, hint: str = "check the URL", progress: bool = True, chunk: int = 1 << 20,
             timeout: float = 30) -> Path:
    """Download url to dest via dest.part, resuming a .part left by an earlier try (HTTP Range).

    dest only ever appears complete (renamed from .part after the length check), so an existing
    dest is reused without touching the network. A dropped connection is resumed up to
    RESUME_ATTEMPTS times while bytes keep arriving; after that the .part stays for the next run.
    `hint` ends every error message: what the user can change (e.g. which params.yaml key).
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    reason = ""
    for _ in range(1 + RESUME_ATTEMPTS):
        before = part.stat().st_size if part.exists() else 0
        try:
            _transfer(url, part, progress, chunk, timeout, hint)
        except _StaleRange as e:
            reason = str(e)
            part.unlink(missing_ok=True)  # a stale/oversized .part: the next try starts from zero
            continue
        except _Interrupted as e:
            reason = str(e)
            if (part.stat().st_size if part.exists() else 0) <= before:
                break  # no progress: retrying at once would only spin
            continue
        os.replace(part, dest)
        return dest
    have = part.stat().st_size if part.exists() else 0
    raise DataError(f"{url}: download interrupted ({reason}); {have} bytes kept in {part}: "
                    "rerun to resume, or " + hint)


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")  # Windows tools write backslashes; treat them as separators
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in path"
    if stat.S_ISLNK(info.external_attr >> 16):  # Unix mode lives in the high 16 bits
        return "symbolic link"
    return None


def safe_extract(zip_path: str | Path, out_dir: str | Path, max_total_bytes: int) -> Path:
    """Extract zip_path to out_dir after checking every entry; all or nothing.

    Refused (DataError naming the entry): absolute paths, '..' components, symlinks, and a total
    uncompressed size above max_total_bytes. Entries under __MACOSX/ (resource forks) are skipped.
    Extraction happens beside out_dir and is renamed into place only when complete.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: not a readable zip ({e}); delete it and rerun to download it again") from None
    with zf:
        members = [i for i in zf.infolist() if not i.filename.startswith("__MACOSX/")]
        total = 0
        for info in members:
            reason = _unsafe_reason(info)
            if reason:
                raise DataError(f"{zip_path}: entry {info.filename!r} refused ({reason}); "
                                "not the archive expected")
            total += info.file_size
            if total > max_total_bytes:
                raise DataError(f"{zip_path}: entry {info.filename!r} takes the uncompressed size past "
                                f"{max_total_bytes} bytes; refusing (zip bomb or wrong archive)")
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            for info in members:
                target = tmp.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise DataError(f"{zip_path}: entry {info.filename!r} is corrupt ({e}); "
                                    "delete the archive and rerun") from None
                except OSError as e:  # disk full, or an entry clashing with a directory of the same name
                    raise DataError(f"{zip_path}: cannot extract entry {info.filename!r} to {out_dir} ({e})") from None
    return out_dir
