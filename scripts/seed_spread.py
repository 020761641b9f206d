"""Mean and spread of a run's scores over training seeds: the README's "over 3 seeds" figures.

    python scripts/seed_spread.py c866221 sat2-seed-43 sat2-seed-44

`dvc exp show` lists every experiment's metrics but has no mean or std. This reads the same rows
(dvc.api.exp_show over all commits) and prints, for each score, mean +- sample std and the values
in the order given. A run is named by its experiment name (`dvc exp run -n ...`) or by the first
characters of its commit or experiment rev (a committed run is its commit).
"""

from __future__ import annotations

import statistics
import sys

import dvc.api

SCORES = ["bleu1", "bleu4", "cider", "attribute_accuracy", "holdout_bleu4", "holdout_attribute_accuracy",
          "attention_localisation", "repeated_words", "holdout_repeated_words", "blank_repeated_words",
          "train_seconds"]


def pick(rows: list[dict], names: list[str]) -> list[dict]:
    """The row of each named run, in the order named; a name that matches no row or several is an error."""
    picked = []
    for name in names:
        matches = {row["rev"]: row for row in rows
                   if row.get("Experiment") == name or str(row.get("rev", "")).startswith(name)}
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs ({', '.join(matches)})"
            raise SystemExit(f"seed_spread: {name!r} names {found}: give an experiment name or a longer rev")
        picked.append(next(iter(matches.values())))
    return picked


def spread(rows: list[dict], scores: list[str] = SCORES) -> dict[str, tuple[float, float, list[float]]]:
    """score -> (mean, sample std, values) over the rows that all report it; scores some row lacks are left out."""
    table = {}
    for score in scores:
        values = [row.get(score) for row in rows]
        if all(isinstance(v, (int, float)) for v in values):
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            table[score] = (statistics.fmean(values), std, values)
    return table


def label(row: dict) -> str:
    name, seed = row.get("Experiment") or row["rev"], row.get("train.seed")
    return f"{name} (train.seed {seed:g})" if isinstance(seed, (int, float)) else name  # numbers come as floats


def main(names: list[str]) -> None:
    if not names:
        raise SystemExit(__doc__)
    rows = pick(dvc.api.exp_show(num=-1), names)
    print(f"{len(rows)} runs: " + ", ".join(label(row) for row in rows))
    for score, (mean, std, values) in spread(rows).items():
        print(f"{score:28s} {mean:9.3f} +- {std:.3f}   ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main(sys.argv[1:])
