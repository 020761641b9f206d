"""Stage 7: caption the test images (and held-out scenes, blank images) and score them (BLEU, METEOR, CIDEr, ...);
how often drawn non-photos are flagged unsure; the caption confidence's calibration on the dev split."""

from pathlib import Path

from captioning import confidence, datasets, evaluation, novelty, reports, scst, tracking
from captioning.attention_maps import write_attention_maps
from captioning.feature_store import FeatureStore
from captioning.io import read_json, write_json
from captioning.models import load_model
from captioning.mlflow_model import latency_ms
from captioning.text import Vocabulary
from stages import TRAINED_ON, load_params, run


def main() -> None:
    params = load_params()
    cfg = params["evaluate"]
    vocab = Vocabulary.from_json(read_json("models/vocab.json"))
    model = load_model("models/model.keras")
    dataset = datasets.get(params["data"]["dataset"])
    scores, samples, holdout_samples, blank, calibration = evaluation.evaluate(
        model, vocab, Path("data"), Path("models"), dataset.score_truth, num_samples=cfg["num_samples"],
        beam_size=cfg["beam_size"], length_penalty=cfg["length_penalty"], batch_size=cfg["batch_size"])
    novelty_model = novelty.load("models")  # the novelty stage's; a model without one has no flag to score
    if novelty_model is not None:
        scores.update({k: round(v, 4) for k, v in evaluation.ood_flag_rates(
            Path("models"), novelty_model, per_kind=cfg["ood_per_kind"], seed=cfg["ood_seed"],
            own_kinds=dataset.own_ood_kinds).items()})
    served = {k: cfg[k] for k in ("beam_size", "length_penalty")}
    write_json("metrics/eval.json", scores)
    write_json("models/decoding.json", served)  # how the model captions
    confidence.save("models", calibration)  # whether, and which word, beside each caption; logged with the model
    write_json("reports/samples.json", samples)
    write_json("reports/holdout_samples.json", holdout_samples)  # every held-out scene's caption
    test = read_json("data/split.json")["test"]
    store = FeatureStore.open("data/features")
    names, feats = store.names, store.memmap()
    shown = test[: cfg["attention_maps"]]
    write_attention_maps(model, feats[[names.index(i) for i in shown]], shown, Path("data/raw/images"), vocab,
                         Path("reports/attention"))
    figures = reports.evaluation_reports(samples, scores)
    latency = latency_ms("models", [f"data/raw/images/{i}" for i in test[:3]], **served)  # MLflow only
    run = tracking.log_evaluation(params, {**scores, "caption_latency_ms": latency}, dataset=params["data"]["dataset"],
                                  registered_model=params["tracking"]["registered_model"],
                                  decoding=served, model_dir="models", source="stages/evaluate.py", hashed=TRAINED_ON,
                                  reports=["reports/samples.json", "reports/holdout_samples.json",
                                           "reports/attention", *figures],
                                  scst=(scst.read_history("metrics/scst_history.csv"), read_json("metrics/scst.json")))
    write_json("metrics/mlflow_run.json", run)  # not cached: evaluate never comes from the run cache
    print(scores)
    print("blank images:", blank)


if __name__ == "__main__":
    run(main)
