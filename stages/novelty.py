"""Stage: fit the novelty score on the training images' features, its threshold on the dev split's.

Saves models/novelty.npz + models/novelty.json (read by the CLI, the web service and the MLflow
model) and metrics/novelty.json: the share of dev and test images flagged unsure at the threshold
(dev is about 1 - quantile by construction; test says whether that holds on unseen photos).
"""

import numpy as np

from captioning import novelty
from captioning.feature_store import FeatureStore
from captioning.io import DataError, read_json, write_json
from stages import load_params, run


def main() -> None:
    params = load_params()
    cfg = params["novelty"]
    split = read_json("data/split.json")
    store = FeatureStore.open("data/features")
    index = {name: i for i, name in enumerate(store.names)}
    missing = [name for part in ("train", "val", "test") for name in split[part] if name not in index]
    if missing:
        raise DataError(f"data/split.json: {len(missing)} images without features (e.g. {missing[0]}); "
                        "rerun the split stage")
    rows = {part: novelty.StoreRows(store, np.array([index[n] for n in split[part]], np.int64))
            for part in ("train", "val", "test")}
    model = novelty.fit(rows["train"], rows["val"], method=cfg["method"], quantile=cfg["quantile"], k=cfg["k"],
                        seed=cfg["seed"], dataset=params["data"]["dataset"])
    novelty.save("models", model)
    flagged = {part: float(np.mean(model.score(rows[part]) > model.threshold)) if len(rows[part]) else None
               for part in ("val", "test")}
    write_json("metrics/novelty.json", {"method": model.method, "threshold": model.threshold,
                                        "quantile": model.quantile, "flagged_val": flagged["val"],
                                        "flagged_test": flagged["test"], "train_images": model.counts["train"]})
    print(f"novelty ({model.method}): threshold {model.threshold:.4f}, flagged val {flagged['val']}, "
          f"test {flagged['test']}")


if __name__ == "__main__":
    run(main)
