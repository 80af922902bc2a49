"""Word-level caption tokenizer (Hugging Face `tokenizers`, WordLevel model).

Captions are NFKC-normalised and lowercased, split into words and
punctuation, and mapped to ids; words outside the vocabulary become [UNK].
Every encoded caption is wrapped as [BOS] words [EOS] and padded with [PAD]
(id 0) to a fixed length, with a mask that is True on real tokens. Captions
cut to that length and words that become [UNK] are counted in one logged
warning per `encode` call (an `EncodingReport`). Saved
files are the standard `tokenizers` JSON, loadable by
`tokenizers.Tokenizer.from_file` and `transformers.PreTrainedTokenizerFast`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors

from jaxgen.data import shapes

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)  # Ids 0, 1, 2, 3.
_EXAMPLES = 5  # words quoted in a warning

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EncodingReport:
  """What encoding lost: captions cut to the length, and words outside the vocabulary."""

  num_captions: int
  cut_captions: int  # captions longer than max_length - 2 words
  dropped_words: int  # words past the cut, over all captions
  unknown_words: int  # words that became [UNK], over all captions
  unknown_captions: int  # captions with at least one [UNK]
  unknown_examples: tuple[str, ...]  # the first few unknown words, as written

  def warning(self, max_words: int) -> str | None:
    """One sentence for the log, or None when nothing was lost."""
    parts = []
    if self.cut_captions:
      parts.append(
        f"{self.cut_captions} of {self.num_captions} captions were cut to their first "
        f"{max_words} words ({self.dropped_words} words dropped)"
      )
    if self.unknown_words:
      parts.append(
        f"{self.unknown_words} words in {self.unknown_captions} of {self.num_captions} captions "
        f"are not in the tokenizer's vocabulary and became {UNK} "
        f"(e.g. {', '.join(repr(w) for w in self.unknown_examples)})"
      )
    return "captions: " + "; ".join(parts) if parts else None


class CaptionTokenizer:
  """Fixed-length word-level encoding of captions for text conditioning."""

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    for expected_id, token in enumerate(SPECIAL_TOKENS):
      found = tokenizer.token_to_id(token)
      if found != expected_id:
        raise ValueError(f"tokenizer must map {token} to id {expected_id}, found {found}.")
    self._tokenizer = tokenizer

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size()

  @property
  def pad_id(self) -> int:
    return SPECIAL_TOKENS.index(PAD)

  @property
  def unk_id(self) -> int:
    return SPECIAL_TOKENS.index(UNK)

  @property
  def bos_id(self) -> int:
    return SPECIAL_TOKENS.index(BOS)

  @property
  def eos_id(self) -> int:
    return SPECIAL_TOKENS.index(EOS)

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The underlying Hugging Face tokenizer."""
    return self._tokenizer

  def encode(self, captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes N captions to ids int32 [N, max_length] and mask bool [N, L].

    Captions longer than `max_length` are cut after their first
    `max_length - 2` words and still end with [EOS]. Cut captions and words
    outside the vocabulary ([UNK]) are counted in one logged warning.
    """
    if isinstance(captions, (str, bytes)):
      raise ValueError(f"captions must be a sequence of strings, got a single string {captions!r}.")
    captions = list(captions)
    if not captions:
      raise ValueError("captions must be non-empty, got an empty sequence.")
    not_str = [i for i, c in enumerate(captions) if not isinstance(c, str)]
    if not_str:
      raise ValueError(
        f"captions must be strings, got "
        f"{type(captions[not_str[0]]).__name__} at index "
        f"{not_str[0]}."
      )
    empty = [i for i, c in enumerate(captions) if not c.strip()]
    if empty:
      raise ValueError(
        f"captions must be non-empty strings, got empty ones at indices {empty[:10]}."
      )
    if not isinstance(max_length, (int, np.integer)) or max_length < 3:
      raise ValueError(f"max_length must be an int >= 3 ([BOS] word [EOS]), got {max_length!r}.")

    ids = np.full((len(captions), max_length), self.pad_id, np.int32)
    encodings = self._tokenizer.encode_batch(captions, add_special_tokens=False)
    for row, encoding in enumerate(encodings):
      words = encoding.ids[: max_length - 2]
      ids[row, : len(words) + 2] = [self.bos_id, *words, self.eos_id]
    message = self._report(captions, encodings, max_length).warning(max_length - 2)
    if message:
      _LOG.warning("%s", message)
    return ids, ids != self.pad_id

  def _report(self, captions: list[str], encodings: list, max_length: int) -> EncodingReport:
    """Counts the words `encode` drops past `max_length` and the ones it maps to [UNK]."""
    kept = max_length - 2
    dropped = [max(0, len(e.ids) - kept) for e in encodings]
    unknown_counts, examples = [], []
    for caption, encoding in zip(captions, encodings):
      unknown = [i for i, token in enumerate(encoding.ids) if token == self.unk_id]
      unknown_counts.append(len(unknown))
      for i in unknown[: _EXAMPLES - len(examples)]:
        start, end = encoding.offsets[i]
        examples.append(caption[start:end])
    return EncodingReport(
      num_captions=len(captions),
      cut_captions=sum(1 for d in dropped if d),
      dropped_words=sum(dropped),
      unknown_words=sum(unknown_counts),
      unknown_captions=sum(1 for u in unknown_counts if u),
      unknown_examples=tuple(examples),
    )

  def decode(self, ids: np.ndarray) -> list[str]:
    """Words of each row of ids [N, L], without special tokens."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"ids must be [N, L], got shape {ids.shape}.")
    return self._tokenizer.decode_batch(ids.tolist(), skip_special_tokens=True)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the `tokenizers` JSON format."""
    self._tokenizer.save(os.fspath(path))

  @classmethod
  def load(cls, path: str | os.PathLike) -> CaptionTokenizer:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"tokenizer path {os.fspath(path)!r}: no such file.")
    return cls(tokenizers.Tokenizer.from_file(os.fspath(path)))


def build_caption_tokenizer(words: Sequence[str] | None = None) -> CaptionTokenizer:
  """Builds the tokenizer over `words` (default: every captioned-shapes word).

  Ids: the special tokens first ([PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3), then
  the lowercased words in sorted order, so the vocabulary is reproducible.
  """
  if words is None:
    words = shapes.caption_vocabulary()
  if isinstance(words, str):
    raise ValueError(f"words must be a sequence of words, got a string {words!r}.")
  normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
  pre_tokenizer = pre_tokenizers.Whitespace()
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
  for word in sorted({normalizer.normalize_str(w) for w in words}):
    pieces = [p for p, _ in pre_tokenizer.pre_tokenize_str(word)]
    if pieces != [word]:
      raise ValueError(
        f"words must each be one token after pre-tokenization, got {word!r} -> {pieces}."
      )
    vocab[word] = len(vocab)

  tokenizer = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  tokenizer.normalizer = normalizer
  tokenizer.pre_tokenizer = pre_tokenizer
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  # Lets plain `tokenizer.encode(text)` users get the same framing.
  tokenizer.post_processor = processors.TemplateProcessing(
    single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
  )
  return CaptionTokenizer(tokenizer)
