"""Training is repeatable: the same params on the same machine give the same weights, bit for bit.
Without that a rerun of `dvc repro` could not reproduce the committed metrics."""

import numpy as np
import pytest
from conftest import copy_of, dvc

from captioning.models import load_model

pytestmark = pytest.mark.slow  # retrains the tiny pipelines' models


def weights(repo, model: str = "xe.keras") -> list[np.ndarray]:
    return load_model(repo / "models" / model).get_weights()


# merge_bilstm on pooled vectors, and the offline default's tiny twin (soft_attention on grids, cosine
# schedule, clipping, early stopping; then a self-critical epoch: sampled captions, dropout).
@pytest.mark.parametrize("pipeline", ["trained_repo", "attention_repo"])
def test_training_again_in_a_fresh_process_gives_bit_identical_weights(pipeline, request, tmp_path):
    first = request.getfixturevalue(pipeline)
    again = copy_of(first, tmp_path / "again")
    for stage, model in (("train", "xe.keras"), ("scst", "model.keras")):
        dvc(again, "repro", "--force", "--single-item", stage)
        assert (again / "models" / model).stat().st_mtime > (first / "models" / model).stat().st_mtime
        old, new = weights(first, model), weights(again, model)
        assert len(old) == len(new)
        different = [i for i, (a, b) in enumerate(zip(old, new)) if not np.array_equal(a, b)]
        assert not different, f"{stage}: weights {different} differ between two trainings with the same params"
