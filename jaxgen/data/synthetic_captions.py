"""The caption grammar of the procedural motion data: templates with synonyms.

A clip's caption is a subject and one action phrase, or two phrases joined by
a connector ("a person walks forward then waves the right hand"). A phrase
names the action and its direction with one of several synonyms, plus its
speed ("slowly", "quickly", "fast"; nothing for normal speed) before or after
it and, for repeated actions, a count ("twice", "two times"). Every choice is
drawn from the generator's `np.random.Generator`, so captions are
deterministic in its seed. `CAPTION_WORDS` is every word the grammar can
produce: the vocabulary of a caption tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_SUBJECTS = ("a person", "someone", "a man", "a woman", "the person")
_SPEED_WORDS = {"slowly": ("slowly",), "normally": ("",), "quickly": ("quickly", "fast")}
# Indexed by the repetition count.
_REPEAT_WORDS = {1: ("once",), 2: ("twice", "two times"), 3: ("three times", "thrice")}
_CONNECTORS = ("then", "and then", ", then", "and afterwards")
# (action, direction) -> synonyms; actions without a direction use "".
_PHRASES: dict[tuple[str, str], tuple[str, ...]] = {
  ("walk", "forward"): ("walks forward", "walks straight ahead", "walks ahead"),
  ("walk", "backward"): ("walks backward", "walks backwards", "steps backwards"),
  ("walk", "left"): (
    "walks sideways to the left",
    "side steps to the left",
    "steps sideways to the left",
  ),
  ("walk", "right"): (
    "walks sideways to the right",
    "side steps to the right",
    "steps sideways to the right",
  ),
  ("run", "forward"): ("runs forward", "jogs forward", "runs straight ahead"),
  ("run", "backward"): ("runs backward", "jogs backwards"),
  ("run", "left"): ("runs to the left", "turns left and runs"),
  ("run", "right"): ("runs to the right", "turns right and runs"),
  ("jump", "in_place"): ("jumps", "jumps up", "jumps in place", "hops up and down"),
  ("jump", "forward"): ("jumps forward", "leaps forward"),
  ("wave_left_hand", ""): (
    "waves the left hand",
    "waves with the left hand",
    "raises the left hand and waves",
  ),
  ("wave_right_hand", ""): (
    "waves the right hand",
    "waves with the right hand",
    "raises the right hand and waves",
  ),
  ("turn_left", "90"): ("turns left", "turns to the left", "turns ninety degrees to the left"),
  ("turn_left", "180"): ("turns around to the left", "makes a half turn to the left"),
  ("turn_right", "90"): ("turns right", "turns to the right", "turns ninety degrees to the right"),
  ("turn_right", "180"): ("turns around to the right", "makes a half turn to the right"),
  ("sit_down", ""): ("sits down", "sits down on a chair", "takes a seat", "sits down on a stool"),
  ("kick_left", ""): (
    "kicks with the left leg",
    "kicks the left foot forward",
    "does a kick with the left leg",
  ),
  ("kick_right", ""): (
    "kicks with the right leg",
    "kicks the right foot forward",
    "does a kick with the right leg",
  ),
}
# A speed adverb before these would read as modifying the turn only.
_NO_LEADING_SPEED = ("turns left and", "turns right and")


def _caption_vocabulary() -> tuple[str, ...]:
  texts = [
    *_SUBJECTS,
    *_CONNECTORS,
    *(w for ws in _SPEED_WORDS.values() for w in ws),
    *(w for ws in _REPEAT_WORDS.values() for w in ws),
    *(p for ps in _PHRASES.values() for p in ps),
  ]
  words = {w.lower() for t in texts for w in re.findall(r"\w+|[^\w\s]+", t)}
  return tuple(sorted(words))


CAPTION_WORDS: tuple[str, ...] = _caption_vocabulary()


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[rng.integers(len(options))]


def _join(*parts: str) -> str:
  text = " ".join(p for p in parts if p)
  return text.replace(" ,", ",")


def action_phrase(
  rng: np.random.Generator, action: str, direction: str, speed: str, repetitions: int | None
) -> str:
  """One action's phrase, e.g. "quickly jumps forward twice".

  Args:
    rng: draws the synonyms and the speed word's place.
    action, direction: a key of the phrase table ("" for actions without one).
    speed: "slowly", "normally" or "quickly".
    repetitions: 1 to 3 for repeated actions (jumps, waves, kicks), else None.
  """
  phrase = _choice(rng, _PHRASES[(action, direction)])
  speed_word = _choice(rng, _SPEED_WORDS[speed])
  repeat = "" if repetitions is None else _choice(rng, _REPEAT_WORDS[repetitions])
  if speed_word.endswith("ly") and rng.integers(2) and not phrase.startswith(_NO_LEADING_SPEED):
    return _join(speed_word, phrase, repeat)
  return _join(phrase, repeat, speed_word)


def clip_caption(rng: np.random.Generator, phrases: Sequence[str]) -> str:
  """A subject and the phrases of a clip's one or two actions, joined by a connector."""
  subject = _choice(rng, _SUBJECTS)
  if len(phrases) == 1:
    return _join(subject, phrases[0])
  return _join(subject, phrases[0], _choice(rng, _CONNECTORS), phrases[1])
