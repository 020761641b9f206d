"""Stage 7: caption the test images (greedy or beam search) and score them (BLEU, METEOR, CIDEr, ...)."""

from collections import defaultdict
from pathlib import Path

from captioning import reports, tracking
from captioning.attention_maps import write_attention_maps
from captioning.decoding import decode
from captioning.features import load_features
from captioning.holdout import score_holdout
from captioning.io import load_params, read_captions, read_json, write_json
from captioning.metrics import attribute_accuracy, bleu, coco_scores, human_bleu
from captioning.model import load_model
from captioning.text import Vocabulary, strip_tokens


def main() -> None:
    params = load_params()
    cfg = params["evaluate"]
    vocab = Vocabulary.from_json(read_json("models/vocab.json"))
    model = load_model("models/model.keras")
    names, feats = load_features("data/features")
    rows = {n: i for i, n in enumerate(names)}
    test = read_json("data/split.json")["test"]
    references = defaultdict(list)
    for image, caption in read_captions("data/clean/captions.csv"):
        references[image].append(strip_tokens(caption))

    predicted = decode(model, feats[[rows[i] for i in test]], vocab, cfg["beam_size"], cfg["length_penalty"],
                       cfg["batch_size"])
    refs = [references[i] for i in test]
    scores = {**bleu(refs, predicted), **coco_scores(refs, predicted), **human_bleu(refs)}
    captions = {image: " ".join(words) for image, words in zip(test, predicted)}
    if Path("data/raw/scenes.json").exists():  # the generated dataset knows what is in each image
        scores["attribute_accuracy"] = attribute_accuracy(captions, read_json("data/raw/scenes.json"))
    scores.update(score_holdout(model, vocab, Path("data/holdout"), cfg["beam_size"], cfg["length_penalty"],
                                cfg["batch_size"]))
    scores = {k: round(v, 4) for k, v in scores.items()}
    scores.update(test_images=len(test), beam_size=cfg["beam_size"], length_penalty=cfg["length_penalty"])

    samples = [{"image": image, "prediction": captions[image],
                "references": [" ".join(r) for r in references[image]]} for image in test[: cfg["num_samples"]]]
    write_json("metrics/eval.json", scores)
    write_json("reports/samples.json", samples)
    shown = test[: cfg["attention_maps"]]
    write_attention_maps(model, feats[[rows[i] for i in shown]], shown, Path("data/raw/images"), vocab,
                         Path("reports/attention"))
    figures = reports.evaluation_reports(samples, scores)
    run = tracking.log_evaluation(params, scores, ["reports/samples.json", "reports/attention", *figures],
                                  latency_images=[f"data/raw/images/{i}" for i in test[:3]])
    write_json("metrics/mlflow_run.json", run)  # not cached: evaluate never comes from the run cache
    print(scores)


if __name__ == "__main__":
    main()
