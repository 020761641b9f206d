"""The generic download / extraction code (captioning/datasets/download.py), against a real HTTP
server on 127.0.0.1 and zips built here: resume, restarts, clear errors, and archives that try to
escape their folder or explode."""

import re
import socket
import zipfile
from pathlib import Path

import pytest

from captioning.datasets.download import RESUME_ATTEMPTS, download, safe_extract
from captioning.io import DataError

BIG = 4 << 30  # a size limit no test archive comes near

# -----------------------------------------------------------------------------
# download

def test_download_complete_and_skip_when_present(tmp_path, server):
    body = bytes(range(256)) * 1000
    server.files["/f.zip"] = body
    dest = download(server.url("/f.zip"), tmp_path / "f.zip", progress=False, chunk=4096)
    assert dest.read_bytes() == body and not (tmp_path / "f.zip.part").exists()
    download(server.url("/f.zip"), tmp_path / "f.zip", progress=False)
    assert len(server.requests) == 1  # a complete dest needs no network


def test_download_resumes_after_a_dropped_connection(tmp_path, server):
    body = bytes(range(256)) * 4000
    server.files["/f.zip"] = body
    server.drops["/f.zip"] = 1
    dest = download(server.url("/f.zip"), tmp_path / "f.zip", progress=False, chunk=8192)
    assert dest.read_bytes() == body
    assert server.requests == [("/f.zip", None), ("/f.zip", f"bytes={len(body) // 2}-")]


def test_download_keeps_part_across_runs_and_resumes(tmp_path, server):
    body = bytes(range(256)) * 4000
    server.files["/f.zip"] = body
    server.drops["/f.zip"] = 1 + RESUME_ATTEMPTS  # every try in this call is cut short
    with pytest.raises(DataError, match=r"/f\.zip: download interrupted .*rerun to resume"):
        download(server.url("/f.zip"), tmp_path / "f.zip", progress=False)
    part = tmp_path / "f.zip.part"
    kept = part.stat().st_size
    assert len(body) // 2 < kept < len(body) and not (tmp_path / "f.zip").exists()  # each try made progress
    assert len(server.requests) == 1 + RESUME_ATTEMPTS
    server.requests.clear()
    download(server.url("/f.zip"), tmp_path / "f.zip", progress=False)
    assert (tmp_path / "f.zip").read_bytes() == body and not part.exists()
    assert server.requests == [("/f.zip", f"bytes={kept}-")]


def test_download_restarts_from_zero_when_server_ignores_range(tmp_path, server):
    body = b"x" * 50_000
    server.files["/f.zip"] = body
    server.ignore_range = True
    (tmp_path / "f.zip.part").write_bytes(b"stale bytes of something else")
    download(server.url("/f.zip"), tmp_path / "f.zip", progress=False)
    assert (tmp_path / "f.zip").read_bytes() == body
    assert server.requests[0][1] == "bytes=29-"  # asked to resume, got 200, rewrote cleanly


def test_download_stale_part_longer_than_file_starts_over(tmp_path, server):
    body = b"y" * 1000
    server.files["/f.zip"] = body
    (tmp_path / "f.zip.part").write_bytes(b"z" * 5000)
    download(server.url("/f.zip"), tmp_path / "f.zip", progress=False)
    assert (tmp_path / "f.zip").read_bytes() == body
    assert [r[1] for r in server.requests] == ["bytes=5000-", None]


def test_download_404_names_url_and_fix(tmp_path, server):
    url = server.url("/nope.zip")
    with pytest.raises(DataError, match=rf"^{re.escape(url)}: HTTP 404 .*; set the local copy instead$"):
        download(url, tmp_path / "nope.zip", hint="set the local copy instead", progress=False)
    assert not list(tmp_path.iterdir())


def test_download_refused_connection_names_url(tmp_path, closed_port):
    url = f"http://127.0.0.1:{closed_port}/Flickr8k_Dataset.zip"
    with pytest.raises(DataError, match=rf"^{re.escape(url)}: cannot connect .*refused"):
        download(url, tmp_path / "x.zip", progress=False, timeout=5)


def test_download_timeout_names_url(tmp_path):
    with socket.socket() as s:  # accepts connections (kernel backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/slow.zip"
        with pytest.raises(DataError, match=rf"^{re.escape(url)}: .*(timed out|timeout)"):
            download(url, tmp_path / "slow.zip", progress=False, timeout=0.2)


# -----------------------------------------------------------------------------
# safe_extract

def _zip_with(tmp_path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name, reason", [
    ("../evil.txt", r"'\.\.' in path"),
    ("ok/../../evil.txt", r"'\.\.' in path"),
    ("/tmp/abs_evil.txt", "absolute path"),
    ("C:\\evil.txt", "absolute path"),
])
def test_safe_extract_refuses_escaping_entries(tmp_path, name, reason):
    zpath = _zip_with(tmp_path, [("Flicker8k_Dataset/a.jpg", b"fine"), (name, b"evil")])
    out = tmp_path / "sub" / "out"
    with pytest.raises(DataError, match=rf"entry {re.escape(repr(name))} refused \({reason}\)"):
        safe_extract(zpath, out, BIG)
    assert [p.name for p in tmp_path.iterdir()] == ["evil.zip"]  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/abs_evil.txt").exists()


def test_safe_extract_refuses_symlinks_and_bombs(tmp_path):
    link = zipfile.ZipInfo("Flicker8k_Dataset/link.jpg")
    link.external_attr = (0o120777 << 16)
    with pytest.raises(DataError, match="link.jpg' refused \\(symbolic link\\)"):
        safe_extract(_zip_with(tmp_path, [(link, b"/etc/passwd")]), tmp_path / "out", BIG)
    big = _zip_with(tmp_path, [("a.bin", b"\0" * 600), ("b.bin", b"\0" * 600)])
    with pytest.raises(DataError, match="'b.bin' takes the uncompressed size past 1000 bytes"):
        safe_extract(big, tmp_path / "out", max_total_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_safe_extract_all_or_nothing_on_corrupt_member(tmp_path):
    zpath = _zip_with(tmp_path, [("a.txt", b"a" * 1000), ("b.txt", b"b" * 1000)])
    data = bytearray(zpath.read_bytes())
    data[data.index(b"b" * 1000) + 10] = ord("c")  # stored data no longer matches its CRC
    zpath.write_bytes(bytes(data))
    with pytest.raises(DataError, match="entry 'b.txt' is corrupt"):
        safe_extract(zpath, tmp_path / "out", BIG)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.zip"]


def test_safe_extract_extracts_and_skips_macosx(tmp_path):
    zpath = _zip_with(tmp_path, [("Flicker8k_Dataset/", b""), ("Flicker8k_Dataset/a.jpg", b"jpg"),
                                 ("__MACOSX/Flicker8k_Dataset/._a.jpg", b"fork")])
    out = safe_extract(zpath, tmp_path / "out", BIG)
    assert (out / "Flicker8k_Dataset" / "a.jpg").read_bytes() == b"jpg" and not (out / "__MACOSX").exists()
