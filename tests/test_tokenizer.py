"""Tests for the word-level caption tokenizer."""

import numpy as np
import pytest
import tokenizers

from jaxgen.data import shapes
from jaxgen.data import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.build_caption_tokenizer()


def test_vocabulary_layout(tok):
  vocab = tok.tokenizer.get_vocab()
  assert tok.vocab_size == len(tokenizer_lib.SPECIAL_TOKENS) + len(shapes.caption_vocabulary())
  assert [vocab[t] for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert sorted(vocab.values()) == list(range(tok.vocab_size))


def test_every_caption_round_trips(tok):
  captions = [s.caption for s in shapes.all_combinations()]
  ids, mask = tok.encode(captions, max_length=12)
  assert ids.shape == mask.shape == (len(captions), 12)
  assert ids.dtype == np.int32 and mask.dtype == bool
  assert tok.decode(ids) == captions
  assert not np.any(ids == tok.unk_id)
  lengths = mask.sum(axis=1)
  rows = np.arange(len(captions))
  np.testing.assert_array_equal(ids[:, 0], tok.bos_id)
  np.testing.assert_array_equal(ids[rows, lengths - 1], tok.eos_id)
  np.testing.assert_array_equal(lengths, [len(c.split()) + 2 for c in captions])
  # Mask is a prefix of ones; everything after it is padding.
  np.testing.assert_array_equal(mask, np.arange(12) < lengths[:, None])
  np.testing.assert_array_equal(ids[~mask], tok.pad_id)


def test_normalisation_and_unknown_words(tok):
  reference, _ = tok.encode(["a small red circle on the left"], 12)
  shouted, _ = tok.encode(["  A Small RED circle\ton THE left "], 12)
  np.testing.assert_array_equal(shouted, reference)
  ids, mask = tok.encode(["a purple circle, please"], 12)
  words = ids[0, 1 : mask[0].sum() - 1]
  vocab = tok.tokenizer.get_vocab()
  np.testing.assert_array_equal(
    words, [vocab["a"], tok.unk_id, vocab["circle"], tok.unk_id, tok.unk_id]
  )


def test_long_captions_are_truncated_but_keep_eos(tok):
  ids, mask = tok.encode(["a large blue triangle in the bottom right"], 5)
  vocab = tok.tokenizer.get_vocab()
  np.testing.assert_array_equal(
    ids[0], [tok.bos_id, vocab["a"], vocab["large"], vocab["blue"], tok.eos_id]
  )
  assert mask.all()


def test_bad_inputs_raise_named_errors(tok):
  with pytest.raises(ValueError, match="non-empty"):
    tok.encode([], 8)
  with pytest.raises(ValueError, match="indices \\[1\\]"):
    tok.encode(["a red circle", ""], 8)
  with pytest.raises(ValueError, match="indices \\[0\\]"):
    tok.encode(["   "], 8)
  with pytest.raises(ValueError, match="single string"):
    tok.encode("a red circle", 8)
  with pytest.raises(ValueError, match="strings"):
    tok.encode(["a red circle", None], 8)
  with pytest.raises(ValueError, match="max_length"):
    tok.encode(["a red circle"], 2)
  with pytest.raises(ValueError, match="ids"):
    tok.decode(np.zeros(4, np.int32))
  with pytest.raises(ValueError, match="one token"):
    tokenizer_lib.build_caption_tokenizer(["red", "top-left"])


def test_save_and_load_round_trip(tok, tmp_path):
  path = tmp_path / "tokenizer.json"
  tok.save(path)
  loaded = tokenizer_lib.CaptionTokenizer.load(path)
  captions = ["a small red circle in the top left", "A green dog."]
  for got, want in zip(loaded.encode(captions, 10), tok.encode(captions, 10)):
    np.testing.assert_array_equal(got, want)
  # The file is the standard `tokenizers` format, usable on its own.
  plain = tokenizers.Tokenizer.from_file(str(path))
  ids, mask = tok.encode(captions[:1], 12)
  assert plain.encode(captions[0]).ids == ids[mask].tolist()


def test_load_rejects_missing_file_and_wrong_special_ids(tmp_path):
  with pytest.raises(FileNotFoundError):
    tokenizer_lib.CaptionTokenizer.load(tmp_path / "missing.json")
  other = tokenizers.Tokenizer(
    tokenizers.models.WordLevel({"[UNK]": 0, "[PAD]": 1}, unk_token="[UNK]")
  )
  other.save(str(tmp_path / "other.json"))
  with pytest.raises(ValueError, match=r"\[PAD\] to id 0"):
    tokenizer_lib.CaptionTokenizer.load(tmp_path / "other.json")
