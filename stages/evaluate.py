"""Stage 7: caption the test images (greedy or beam search) and score them (BLEU, METEOR, CIDEr, ...)."""

from pathlib import Path

from captioning import datasets, reports, tracking
from captioning.attention_maps import attention_for, is_attention_model, write_attention_maps
from captioning.decoding import decode
from captioning.features import load_features
from captioning.holdout import score_holdout
from captioning.io import read_captions, read_json, write_json
from captioning.metrics import (attention_localisation, attribute_accuracy, caption_scores, object_pairs,
                                repeated_word_share)
from captioning.models import load_model
from captioning.sanity import blank_image_features
from captioning.serving import latency_ms
from captioning.text import UNK, Vocabulary, references
from stages import load_params, run

# The data the model was trained on (stages/train.py's): a new MLflow run is tagged with its dvc.lock hashes.
TRAINED_ON = ("data/raw", "data/features", "data/tokens")


def main() -> None:
    params = load_params()
    cfg = params["evaluate"]
    decoding = {"beam_size": cfg["beam_size"], "length_penalty": cfg["length_penalty"], "batch_size": cfg["batch_size"]}
    vocab = Vocabulary.from_json(read_json("models/vocab.json"))
    model = load_model("models/model.keras")
    names, feats = load_features("data/features", mmap=True)  # only the test rows are read
    rows = {n: i for i, n in enumerate(names)}
    split = read_json("data/split.json")
    test, dev = split["test"], split["val"]
    refs = references(read_captions("data/clean/captions.csv"))

    test_feats = feats[[rows[i] for i in test]]
    predicted = decode(model, test_feats, vocab, **decoding)
    scores = caption_scores([refs[i] for i in test], predicted)
    # The dev (validation) images chose the settings and the early stop; test scores stay unseen until here.
    dev_predicted = decode(model, feats[[rows[i] for i in dev]], vocab, **decoding)
    scores.update({f"dev_{k}": v for k, v in caption_scores([refs[i] for i in dev], dev_predicted).items()})
    captions = {image: " ".join(words) for image, words in zip(test, predicted)}
    has_truth = datasets.get(params["data"]["dataset"]).has_attribute_truth
    scenes = read_json("data/raw/scenes.json") if has_truth else {}
    if has_truth:
        scores["attribute_accuracy"] = attribute_accuracy(captions, scenes)
        if is_attention_model(model):  # where it looked for each shape word of the captions just scored
            alphas = attention_for(model, test_feats, vocab, predicted, cfg["batch_size"])
            scores["attention_localisation"] = attention_localisation(list(zip(test, predicted, alphas)), scenes)
    holdout_scores, holdout_samples = score_holdout(model, vocab, Path("data/holdout"), object_pairs(scenes),
                                                    **decoding)
    scores.update(holdout_scores)
    blank_names, blank_feats = blank_image_features("models")
    blank = decode(model, blank_feats, vocab, **decoding)
    scores.update(repeated_words=repeated_word_share(predicted), blank_repeated_words=repeated_word_share(blank),
                  unk_captions=sum(UNK in words for words in predicted) / len(predicted))
    scores = {k: round(v, 4) for k, v in scores.items()}
    scores.update(test_images=len(test), beam_size=cfg["beam_size"], length_penalty=cfg["length_penalty"])

    samples = [{"image": image, "prediction": captions[image], "references": [" ".join(r) for r in refs[image]]}
               for image in test[: cfg["num_samples"]]]
    write_json("metrics/eval.json", scores)
    write_json("models/decoding.json", {k: cfg[k] for k in ("beam_size", "length_penalty")})  # how the model captions
    write_json("reports/samples.json", samples)
    write_json("reports/holdout_samples.json", holdout_samples)  # every held-out scene's caption
    shown = test[: cfg["attention_maps"]]
    write_attention_maps(model, feats[[rows[i] for i in shown]], shown, Path("data/raw/images"), vocab,
                         Path("reports/attention"))
    figures = reports.evaluation_reports(samples, scores)
    served = {k: cfg[k] for k in ("beam_size", "length_penalty")}
    latency = latency_ms("models", [f"data/raw/images/{i}" for i in test[:3]], **served)  # MLflow only
    run = tracking.log_evaluation(params, {**scores, "caption_latency_ms": latency}, dataset=params["data"]["dataset"],
                                  registered_model=params["tracking"]["registered_model"],
                                  decoding=served, model_dir="models", source="stages/evaluate.py", hashed=TRAINED_ON,
                                  reports=["reports/samples.json", "reports/holdout_samples.json",
                                           "reports/attention", *figures])
    write_json("metrics/mlflow_run.json", run)  # not cached: evaluate never comes from the run cache
    print(scores)
    print("blank images:", {name: " ".join(words) for name, words in zip(blank_names, blank)})


if __name__ == "__main__":
    run(main)
