"""Stage 1: the raw dataset as data/raw/images/ + data/raw/captions.csv (image,caption; 5 per image)."""

from pathlib import Path

from captioning.io import load_params, write_json

OUT = Path("data/raw")


def main() -> None:
    data = load_params()["data"]
    if data["dataset"] == "shapes":
        from captioning import shapes

        cfg = data["shapes"]
        summary = shapes.generate(OUT, num_images=cfg["num_images"], seed=data["seed"],
                                  min_size=cfg["min_size"], max_size=cfg["max_size"],
                                  exclude=cfg.get("holdout") or ())  # shown only in data/holdout
    elif data["dataset"] == "flickr8k":
        from captioning import flickr8k

        cfg = data["flickr8k"]
        if cfg.get("local_dir"):
            summary = flickr8k.import_local(cfg["local_dir"], OUT)
        else:
            # verify: all (default) demands all 8,091 sha256-listed JPEGs; present / none are for
            # test archives and resized copies only.
            verify = cfg.get("verify", "all")
            if verify not in ("all", "present", "none"):
                raise SystemExit(f"params.yaml data.flickr8k.verify={verify!r}: use all, present or none")
            summary = flickr8k.fetch(cfg["images_url"], cfg["text_url"], Path("data/download"), OUT,
                                     verify=False if verify == "none" else verify)
        summary = flickr8k.data_metrics(summary)
    else:
        raise SystemExit(f"params.yaml data.dataset={data['dataset']!r}: use shapes or flickr8k")
    write_json("metrics/data.json", {"dataset": data["dataset"], **summary})
    print(summary)


if __name__ == "__main__":
    main()
