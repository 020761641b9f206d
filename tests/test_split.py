import pytest

from captioning.io import DataError
from captioning.split import official_split, random_split


def test_random_split_is_by_image_seeded_and_disjoint():
    images = [f"img{i}.jpg" for i in range(1000)]
    s = random_split(images, seed=1, test_size=0.1, val_size=0.1)
    assert (len(s["test"]), len(s["val"]), len(s["train"])) == (100, 90, 810)
    assert not set(s["test"]) & set(s["train"]) and not set(s["val"]) & set(s["train"])
    assert set().union(*s.values()) == set(images)
    assert random_split(list(reversed(images)), seed=1) == s  # order of input does not matter
    assert random_split(images, seed=2)["test"] != s["test"]


def test_random_split_rejects_bad_fractions():
    with pytest.raises(DataError, match="split.test_size"):
        random_split(["a", "b"], seed=0, test_size=1.5)


def test_official_split_uses_dev_for_validation_and_only_available_images():
    lists = {"train": ["a", "b", "x"], "dev": ["c"], "test": ["d"]}
    s = official_split(["a", "b", "c", "d"], lists)
    assert s == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}


def test_official_split_without_lists_says_what_to_do():
    with pytest.raises(DataError, match="split.scheme=official"):
        official_split(["a"], {})
