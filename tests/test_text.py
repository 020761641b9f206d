import numpy as np
import pytest

from captioning.text import (END, START, Vocabulary, clean, clean_rows, encode_padded, fit_vocabulary, references,
                             strip_tokens)


@pytest.fixture(scope="module")
def real_token_captions(flickr8k_dir) -> list[str]:
    return [line.split("\t", 1)[1] for line in (flickr8k_dir / "Flickr8k.token.txt").read_text().splitlines()]


def test_clean_lowercases_drops_symbols_and_wraps():
    assert clean("A dog's  T-shirt, 2 cats!") == f"{START} a dog s t shirt cats {END}"
    assert clean("  ...  ") == ""
    assert clean("") == ""


def test_clean_on_the_real_token_file(real_token_captions):
    assert len(real_token_captions) == 40460
    cleaned = [clean(c) for c in real_token_captions]
    assert all(c.startswith(f"{START} ") and c.endswith(f" {END}") for c in cleaned)
    words = {w for c in cleaned for w in c.split()}
    assert all(w.isalpha() and w.islower() for w in words)
    assert "  " not in "".join(cleaned)
    # the real file's first caption, a known line
    assert cleaned[0] == f"{START} a child in a pink dress is climbing up a set of stairs in an entry way {END}"


def test_clean_rows_reports_empty_captions_by_image_and_line():
    kept, dropped = clean_rows([("a.jpg", "A cat."), ("b.jpg", ""), ("c.jpg", "123 !!")])
    assert kept == [("a.jpg", f"{START} a cat {END}")]
    assert dropped == ["captions.csv line 3 (b.jpg): empty caption",
                       "captions.csv line 4 (c.jpg): caption '123 !!' is empty after cleaning"]


def test_vocabulary_min_count_unknown_and_json_round_trip():
    caps = [clean(c) for c in ["a red dog", "a red cat", "a blue dog"]]
    vocab = fit_vocabulary(caps, min_word_count=2)
    assert vocab.words[:4] == ["<pad>", "<unk>", START, END]
    assert set(vocab.words[4:]) == {"a", "red", "dog"}  # cat and blue seen once
    assert vocab.max_length == 5
    assert vocab.decode(vocab.encode(caps[1])) == [START, "a", "red", "<unk>", END]
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_encode_padded_pads_with_zero_and_keeps_end_when_truncating():
    vocab = fit_vocabulary([clean("one two three four")], max_length=4)
    seqs = encode_padded(vocab, [clean("one"), clean("one two three four")])
    assert seqs.dtype == np.int32 and seqs.shape == (2, 4)
    assert seqs[0].tolist()[3] == 0
    assert vocab.decode(seqs[1]) == [START, "one", "two", END]


def test_strip_tokens():
    assert strip_tokens(f"{START} a cat {END}") == ["a", "cat"]


def test_vocabulary_on_real_captions_is_deterministic(real_token_captions):
    caps = [clean(c) for c in real_token_captions[:5000]]
    assert fit_vocabulary(caps, 5) == fit_vocabulary(list(reversed(caps)), 5)


def test_references_are_the_same_words_from_raw_or_cleaned_captions():
    raw = [("a.jpg", "A red Circle."), ("a.jpg", "  "), ("b.jpg", "Two dogs' toys")]
    cleaned = [(image, clean(caption)) for image, caption in raw]
    expected = {"a.jpg": [["a", "red", "circle"]], "b.jpg": [["two", "dogs", "toys"]]}
    assert references(raw) == references(cleaned) == expected
