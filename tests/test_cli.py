"""`captioning caption` as users run it: bad and dangerous files never stop the good ones, --json
gives one record per input (errors included), the model's own decoding settings are used (not
./params.yaml), TensorFlow stays quiet, and the exit code says whether anything failed."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from captioning.cli import expand, main
from captioning.confidence import WORDS
from conftest import REPO, blank_png, in_domain_image, library_captions

pytestmark = pytest.mark.slow  # trains a tiny model once per session


def in_process(args, cwd, capsys, monkeypatch) -> tuple[int, str, str]:
    """main() in this process (TensorFlow already imported: seconds, not a minute per call)."""
    monkeypatch.chdir(cwd)
    code = main(["caption", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def run(args, cwd, unreadable_ok: bool = False):
    """The command in a fresh process, as a user's shell runs it."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout's package
    cmd = [sys.executable, "-m", "captioning", "caption", *map(str, args)]
    if unreadable_ok and os.geteuid() == 0:
        # root reads mode-000 files through these two capabilities: drop them, as an ordinary user lacks them
        cmd = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture
def folder(tmp_path, odd_inputs, trained_repo):
    """A folder of good images and every kind of bad file, one of them unreadable."""
    out = tmp_path / "images"
    out.mkdir()
    shutil.copy(odd_inputs["jpeg"], out / "a_good.jpg")
    shutil.copy(odd_inputs["rgba"], out / "b_good_rgba.png")
    for kind in ("bomb", "truncated", "empty", "text"):
        shutil.copy(odd_inputs[kind], out / f"c_{kind}{odd_inputs[kind].suffix}")
    shutil.copy(odd_inputs["png"], out / "d_unreadable.png")
    (out / "d_unreadable.png").chmod(0)
    shutil.copy(odd_inputs["grayscale"], out / "e_good_gray.jpg")
    return out


def test_bad_files_never_stop_the_good_ones_and_json_has_a_record_each(folder, trained_repo, tmp_path):
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux): a mode-000 file stays readable")
    proc = run([folder, "/nonexistent.jpg", "--json", "--model", trained_repo / "models"], tmp_path,
               unreadable_ok=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    names = sorted(p.name for p in folder.iterdir())
    assert [r["image"] for r in records] == [str(folder / n) for n in names] + ["/nonexistent.jpg"]
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in records}
    good = ["a_good.jpg", "b_good_rgba.png", "e_good_gray.jpg"]
    captions = library_captions(trained_repo / "models", [folder / name for name in good])
    for name in good:
        record = by_name[name]
        assert record == {"image": str(folder / name), "caption": captions[name], "novelty": record["novelty"],
                          "threshold": record["threshold"], "unsure": record["novelty"] > record["threshold"],
                          "reason": record["reason"], "confidence": record["confidence"]}
        assert isinstance(record["novelty"], float) and (record["reason"] is not None) == record["unsure"]
        assert record["confidence"] is None or (record["confidence"] in WORDS and not record["unsure"])
    expected = {"c_bomb.png": "decompression bomb", "c_truncated.jpg": "truncated", "c_empty.jpg": "empty file",
                "c_text.jpg": "not an image", "d_unreadable.png": "permission denied",
                "nonexistent.jpg": "not found"}
    for name, words in expected.items():
        record = by_name[name]
        assert set(record) == {"image", "error"}, record
        assert name in record["error"] and words in record["error"], record
    # Nothing but our own notes on stderr: no TF/CUDA start-up chatter, no traceback.
    assert proc.stderr.strip() == "", proc.stderr[-3000:]


def test_plain_output_prints_errors_on_stderr_one_line_each(folder, trained_repo, tmp_path, capsys, monkeypatch):
    code, out, err = in_process([folder / "a_good.jpg", folder / "c_bomb.png", folder / "c_text.jpg", "--model",
                                 trained_repo / "models"], tmp_path, capsys, monkeypatch)
    assert code == 1
    assert out.startswith(f"{folder / 'a_good.jpg'}\t") and len(out.splitlines()) == 1
    errors = [line for line in err.splitlines() if not line.startswith(f"note: {folder / 'a_good.jpg'}: ")]
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), err
    assert "c_bomb.png" in errors[0] and "c_text.jpg" in errors[1]


def test_decoding_comes_from_the_model_not_the_current_directory(trained_repo, tmp_path, capsys, monkeypatch):
    """decoding.json (beam 3, penalty 0.7) decides, whatever ./params.yaml says; flags override it."""
    samples = json.loads((trained_repo / "reports/samples.json").read_text())
    images = [trained_repo / "data/raw/images" / s["image"] for s in samples]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"beam_size": 7, "length_penalty": 0.0}}))
    code, out, err = in_process([*images, "--json", "--model", trained_repo / "models"], tmp_path, capsys, monkeypatch)
    assert code == 0, err
    assert [json.loads(line)["caption"] for line in out.splitlines()] == [s["prediction"] for s in samples]

    from captioning.captioner import Captioner

    greedy = Captioner(trained_repo / "models", beam_size=1)
    expected = [c.text for c in greedy.caption_arrays(np.stack([greedy.load(p) for p in images]))]
    code, out, err = in_process([*images, "--json", "--beam-size", "1", "--model", trained_repo / "models"], tmp_path,
                                capsys, monkeypatch)
    assert [json.loads(line)["caption"] for line in out.splitlines()] == expected


def test_a_model_without_saved_decoding_settings_decodes_greedily_with_a_note(trained_repo, tmp_path, capsys,
                                                                             monkeypatch):
    model = tmp_path / "old_model"
    shutil.copytree(trained_repo / "models", model)
    (model / "decoding.json").unlink()
    image = trained_repo / "data/raw/images" / json.loads((trained_repo / "reports/samples.json").read_text())[0]["image"]
    code, out, err = in_process([image, "--model", model], tmp_path, capsys, monkeypatch)
    assert code == 0, err
    notes = [line for line in err.splitlines() if not line.startswith(f"note: {image}: ")]  # unsure: a tiny dev split
    assert notes[0].startswith("note: decoding greedy") and len(notes) == 1


def test_json_and_plain_output_flag_an_image_unlike_the_training_ones(trained_repo, tmp_path, capsys, monkeypatch):
    """A blank page is unsure, with a reason (--json) or a note on stderr (plain: stdout stays path<TAB>caption);
    a training image is not."""
    train = json.loads((trained_repo / "data/split.json").read_text())["train"][0]
    seen, blank = trained_repo / "data/raw/images" / train, blank_png(tmp_path / "blank.png")
    code, out, err = in_process([seen, blank, "--json", "--model", trained_repo / "models"], tmp_path, capsys,
                                monkeypatch)
    assert code == 0, err
    first, second = map(json.loads, out.splitlines())
    threshold = json.loads((trained_repo / "models/novelty.json").read_text())["threshold"]
    assert first["unsure"] is False and first["reason"] is None and first["novelty"] < threshold
    assert second["unsure"] is True and second["novelty"] > threshold
    assert second["reason"] == "this image looks unlike the photos this model learned from (shapes)"
    assert first["threshold"] == second["threshold"] == round(threshold, 4)

    code, out, err = in_process([seen, blank, "--model", trained_repo / "models"], tmp_path, capsys, monkeypatch)
    assert code == 0 and out == f"{seen}\t{first['caption']}\n{blank}\t{second['caption']}\n"
    assert err.splitlines() == [f"note: {blank}: {second['reason']} (novelty {second['novelty']:g} > "
                                f"{second['threshold']:g})"]


def test_json_carries_the_confidence_word_and_plain_output_stays_path_tab_caption(trained_repo, confident_models,
                                                                                  no_confidence_models, tmp_path,
                                                                                  capsys, monkeypatch):
    """A known image gets its word, a blank (unsure) one null, a model without confidence.json null;
    the plain lines are path<TAB>caption as before."""
    from captioning.captioner import Captioner

    seen, blank = in_domain_image(trained_repo), blank_png(tmp_path / "blank.png")
    code, out, err = in_process([seen, blank, "--json", "--model", confident_models], tmp_path, capsys, monkeypatch)
    assert code == 0, err
    first, second = map(json.loads, out.splitlines())
    records, _ = Captioner(confident_models).caption_records([str(seen), str(blank)])
    assert first == {"image": str(seen), **records[str(seen)]} and first["confidence"] in WORDS
    assert second == {"image": str(blank), **records[str(blank)]} and second["confidence"] is None
    assert list(first) == ["image", "caption", "novelty", "threshold", "unsure", "reason", "confidence"]

    code, out, err = in_process([seen, blank, "--model", confident_models], tmp_path, capsys, monkeypatch)
    assert code == 0 and out == f"{seen}\t{first['caption']}\n{blank}\t{second['caption']}\n"

    code, out, err = in_process([seen, blank, "--json", "--model", no_confidence_models], tmp_path, capsys,
                                monkeypatch)
    assert code == 0 and list(map(json.loads, out.splitlines())) == [{**first, "confidence": None}, second]


def test_a_missing_model_is_one_line_and_exit_2(tmp_path, odd_inputs, capsys, monkeypatch):
    code, out, err = in_process([odd_inputs["jpeg"], "--model", tmp_path / "no_model"], tmp_path, capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "not found" in err and len(err.splitlines()) == 1


def test_expand_lists_folders_sorted_without_hidden_files(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert expand([str(tmp_path), "x.jpg"]) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "x.jpg"]
