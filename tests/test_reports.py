"""The figures and tables written for `dvc plots` and MLflow."""

import csv

from PIL import Image

from captioning import reports


def test_learning_curves_png(tmp_path):
    (tmp_path / "h.csv").write_text("epoch,loss,val_loss\n1,3.0,3.5\n2,2.0,2.9\n")
    reports.learning_curves(tmp_path / "h.csv", tmp_path / "lc.png")
    with Image.open(tmp_path / "lc.png") as img:
        assert img.format == "PNG" and img.size == (600, 400)


def test_sample_grid_draws_each_image(tmp_path, sample_images):
    samples = [{"image": p.name, "prediction": "a dog runs" if i else "", "references": ["a dog", "a brown dog"]}
               for i, p in enumerate(sample_images[:3])]
    reports.sample_grid(samples, sample_images[0].parent, tmp_path / "grid.png", columns=2)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.format == "PNG" and img.size == (1600, 640)  # 2 rows of 2 (image, text) pairs


def test_bleu_csv_has_the_four_orders(tmp_path):
    reports.write_bleu({"bleu1": 0.5, "bleu2": 0.3, "bleu3": 0.2, "bleu4": 0.1, "human_bleu1": 0.9}, tmp_path / "b.csv")
    with open(tmp_path / "b.csv") as f:
        assert list(csv.DictReader(f)) == [{"metric": f"BLEU-{n}", "value": v}
                                           for n, v in zip(range(1, 5), ["0.5", "0.3", "0.2", "0.1"])]
