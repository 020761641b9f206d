"""Every stage ends on bad input the same way: one `error:` line naming the file or params.yaml
key and what to do, exit code 1, no traceback (stages/__init__.py: run)."""

import io
import os
import subprocess
import sys
import zipfile

import yaml

from conftest import REPO, flickr8k_images_zip, flickr8k_token_lines

from captioning.datasets import flickr8k


def run_stage(workdir, stage: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)


def write_params(workdir, data: dict) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def assert_one_error_line(proc, *fragments: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_unknown_dataset_is_one_line_naming_the_key(tmp_path):
    write_params(tmp_path, {"dataset": "coco"})
    assert_one_error_line(run_stage(tmp_path, "download"), "params.yaml data.dataset='coco'", "shapes, flickr8k")


def test_tampered_flickr8k_archive_is_one_line_naming_the_image(tmp_path, server, flickr8k_dir):
    originals = sorted((flickr8k_dir / "images_sample" / "original").glob("*.jpg"))
    names = {p.name for p in originals}
    bad = originals[0].name
    server.files["/images.zip"] = flickr8k_images_zip(originals, corrupt=bad)
    text = {flickr8k.TOKEN_FILE: flickr8k_token_lines(flickr8k_dir, names)}
    for fname in flickr8k.SPLIT_FILES.values():
        text[fname] = "".join(n + "\n" for n in sorted(names))
    server.files["/text.zip"] = _zip(text)
    write_params(tmp_path, {"dataset": "flickr8k", "flickr8k": {
        "local_dir": None, "images_url": server.url("/images.zip"), "text_url": server.url("/text.zip"),
        "verify": "present"}})
    proc = run_stage(tmp_path, "download")
    assert_one_error_line(proc, f"{bad}: sha256 mismatch")
    assert not (tmp_path / "data/raw").exists()  # nothing half-written for the next stage


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()
