"""Stage 3: lowercase, keep letters only, wrap in start/end tokens; report captions left empty."""

import warnings

from captioning.io import read_captions, write_captions, write_json
from captioning.text import clean_rows
from stages import run


def main() -> None:
    rows = read_captions("data/raw/captions.csv")
    kept, dropped = clean_rows(rows)
    for why in dropped:
        warnings.warn(f"dropped {why}", stacklevel=1)
    write_captions("data/clean/captions.csv", kept)
    write_json("metrics/clean.json", {"captions": len(kept), "dropped": len(dropped)})
    print(f"{len(kept)} captions cleaned, {len(dropped)} dropped")


if __name__ == "__main__":
    run(main)
