"""The real-photo profile end to end, in a temporary clone with nothing beside it and an empty Keras
cache (the encoder's ImageNet weights are the packaged file): `make flickr8k FLICKR8K=DIR` on the
205 real Flickr8k images of ../shared, then `make flickr8k` without a copy, downloading the same
images as archives served from 127.0.0.1.

The copy is laid out as the original Flickr8k is (Flicker8k_Dataset/, Flickr8k.token.txt and the
three split lists). Restricted to these images the official lists give 5 train, 0 dev and 200 test
images, so the lists here are the real ones with 140 of the test images moved to train and 30 to
dev. The profile's own params run unchanged (profiles/flickr8k.yaml): only its data are small.
"""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import clone, flickr8k_images_zip, flickr8k_token_lines

from captioning.datasets import flickr8k
from captioning.text import PAD, UNK

pytestmark = pytest.mark.slow

TO_TRAIN, TO_DEV = 140, 30


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory, flickr8k_dir, sample_images) -> Path:
    originals = sorted((flickr8k_dir / "images_sample" / "original").glob("*.jpg"))
    root = tmp_path_factory.mktemp("flickr8k_copy")
    (root / "Flicker8k_Dataset").mkdir()
    for path in originals + sample_images:
        (root / "Flicker8k_Dataset" / path.name).write_bytes(path.read_bytes())
    names = [p.name for p in sample_images]
    (root / flickr8k.TOKEN_FILE).write_text(flickr8k_token_lines(flickr8k_dir, {p.name for p in originals + sample_images}))
    real = {s: flickr8k.read_split_list(flickr8k_dir / f) for s, f in flickr8k.SPLIT_FILES.items()}
    moved = set(names[:TO_TRAIN + TO_DEV])
    lists = {"train": real["train"] + names[:TO_TRAIN], "dev": real["dev"] + names[TO_TRAIN:TO_TRAIN + TO_DEV],
             "test": [n for n in real["test"] if n not in moved]}
    for split, fname in flickr8k.SPLIT_FILES.items():
        (root / fname).write_text("".join(f"{n}\n" for n in lists[split]))
    return root


def make_flickr8k(repo: Path, *args: str) -> None:
    """`make flickr8k ARGS` in `repo` with this environment, taken as installed (-o: no second
    install), and an empty Keras cache: ImageNet weights can only come from the package."""
    venv = Path(sys.prefix)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "KERAS_HOME": str(repo / ".keras-empty")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(["make", "-o", f"{venv}/.installed", "flickr8k", f"VENV={venv}", *args],
                          cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def profile_repo(tmp_path_factory, local_copy) -> Path:
    """A clone, alone in its folder, after `make flickr8k FLICKR8K=<the copy>`."""
    repo = tmp_path_factory.mktemp("profile") / "repo"
    repo.mkdir()
    clone(repo, {})
    make_flickr8k(repo, f"FLICKR8K={local_copy}")
    return repo


def test_make_flickr8k_names_its_experiment_and_leaves_its_results(profile_repo):
    listed = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=profile_repo,
                            capture_output=True, text=True, check=True).stdout.split()
    assert "flickr8k" in listed
    scores = json.loads((profile_repo / "metrics/eval.json").read_text())
    assert scores["test_images"] == 30 and scores["beam_size"] == 2
    assert json.loads((profile_repo / "metrics/scst.json").read_text())["epochs"] >= 1  # self-critical training ran
    for key in ("bleu1", "bleu4", "meteor", "cider", "human_bleu4"):
        assert 0 <= scores[key] <= 1 or key == "cider", key
    assert json.loads((profile_repo / "metrics/data.json").read_text())["images"] == 205


def test_the_profile_encoder_is_the_packaged_imagenet_mobilenet(profile_repo):
    spec = json.loads((profile_repo / "models/encoder.json").read_text())
    assert spec["backbone"] == "mobilenet_v2" and spec["alpha"] == 0.5 and spec["weights"] == "imagenet"
    assert not (profile_repo / ".keras-empty/models").exists() or not any((profile_repo / ".keras-empty/models").iterdir())
    assert spec["layer"] == "out_relu" and spec["pooling"] == "grid" and spec["grid_side"] is None
    vocab = json.loads((profile_repo / "models/vocab.json").read_text())
    assert vocab["max_length"] == 22


def test_the_profile_model_captions_a_new_photo_cleanly(profile_repo, flickr8k_dir):
    photo = sorted((flickr8k_dir / "images_sample" / "original").glob("*.jpg"))[0]  # full size, not resized
    out = subprocess.run([sys.executable, "-m", "captioning", "caption", str(photo), "--json",
                          "--model", str(profile_repo / "models")], capture_output=True, text=True, check=True)
    (line,) = out.stdout.splitlines()
    caption = json.loads(line)["caption"]
    words = caption.split()
    assert words and UNK not in words and PAD not in words
    vocab = set(json.loads((profile_repo / "models/vocab.json").read_text())["words"])
    assert set(words) <= vocab


def test_make_flickr8k_without_a_copy_downloads_it(profile_repo, local_copy, module_server, flickr8k_dir):
    """No FLICKR8K: the download stage's verified path, from archives of the same copy served on
    127.0.0.1 (resized images cannot match the originals' sha256: verify=none; test_flickr8k.py
    covers verification). Same data as the import, so DVC reuses what it can from the first run."""
    images = sorted((local_copy / "Flicker8k_Dataset").glob("*.jpg"))
    text = io.BytesIO()
    with zipfile.ZipFile(text, "w") as zf:
        for name in (flickr8k.TOKEN_FILE, *flickr8k.SPLIT_FILES.values()):
            zf.write(local_copy / name, f"Flickr8k_text/{name}")
    module_server.files["/Flickr8k_Dataset.zip"] = flickr8k_images_zip(images)
    module_server.files["/Flickr8k_text.zip"] = text.getvalue()
    make_flickr8k(profile_repo, "EXP=flickr8k-download",
                  f"SET=data.flickr8k.images_url={module_server.url('/Flickr8k_Dataset.zip')} "
                  f"data.flickr8k.text_url={module_server.url('/Flickr8k_text.zip')} data.flickr8k.verify=none")
    assert sorted(path for path, _ in module_server.requests) == ["/Flickr8k_Dataset.zip", "/Flickr8k_text.zip"]
    data = json.loads((profile_repo / "metrics/data.json").read_text())
    assert data["images"] == 205 and data["verify"] is False and data["layout"] == "original"
    raw = profile_repo / "data/raw/images"
    assert all((raw / p.name).read_bytes() == p.read_bytes() for p in images)
    assert json.loads((profile_repo / "metrics/eval.json").read_text())["test_images"] == 30
