"""The caption condition of the motion tasks: a small trained encoder or frozen CLIP.

`text.encoder` picks one: "trained" (`jaxgen.models.caption_encoder`, trained
with the task) or "clip" (the CLIP text tower and projection read from a
local transformers folder at `text.clip_path`, frozen). Either way the
weights live in the task's parameter tree, so checkpoints are
self-contained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.caption_encoder import CaptionEncoder

TEXT_ENCODERS = ("trained", "clip")


class FrozenCLIPText:
  """MDM's text encoder: the CLIP text tower and its projection, frozen.

  Read from a local transformers folder (`CLIPTextModelWithProjection` or
  `CLIPTextModel` weights as safetensors, plus its tokenizer files). The
  weights live in the task's parameter tree under "clip" (so checkpoints are
  self-contained) and get no gradient; configs that use it must set
  optim.weight_decay=0 so the optimizer leaves them untouched.
  """

  def __init__(
    self, config, params: Mapping, projection: np.ndarray | None, tokenizer, max_length: int
  ):
    from jaxgen.models.text_encoders import CLIPTextModel  # pylint: disable=g-import-not-at-top

    if not 3 <= max_length <= config.max_position_embeddings:
      raise ValueError(
        f"text.max_length: expected 3 .. {config.max_position_embeddings} for "
        f"CLIP, found {max_length}"
      )
    self.config, self.params, self.projection = config, params, projection
    self.tokenizer, self.max_length = tokenizer, max_length
    self.model = CLIPTextModel(config)

  @classmethod
  def load(cls, folder: str, max_length: int) -> FrozenCLIPText:
    # transformers and the weight maps only load for runs that use CLIP.
    import transformers  # pylint: disable=g-import-not-at-top

    from jaxgen.convert import transformers_text  # pylint: disable=g-import-not-at-top
    from jaxgen.models.text_encoders import CLIPTextConfig  # pylint: disable=g-import-not-at-top

    if not folder or not os.path.isfile(os.path.join(folder, "config.json")):
      raise FileNotFoundError(
        f"text.clip_path: expected a local transformers CLIP text folder "
        f"(config.json, safetensors, tokenizer), found {folder!r}"
      )
    with open(os.path.join(folder, "config.json")) as f:
      config = CLIPTextConfig.from_transformers(json.load(f))
    state = transformers_text.read_safetensors_folder(folder)
    projection = state.pop("text_projection.weight", None)
    params = transformers_text.clip_text_from_transformers(state, config)
    tokenizer = transformers.CLIPTokenizerFast.from_pretrained(folder, local_files_only=True)
    return cls(
      config,
      params,
      None if projection is None else np.asarray(projection).T,
      tokenizer,
      max_length,
    )

  @property
  def embedding_dim(self) -> int:
    return self.config.hidden_size if self.projection is None else self.projection.shape[1]

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(captions, str) or not captions or any(not str(c).strip() for c in captions):
      raise ValueError(
        f"captions: expected a non-empty list of non-empty strings, found {captions!r}"
      )
    out = self.tokenizer(
      [str(c) for c in captions],
      padding="max_length",
      truncation=True,
      max_length=self.max_length,
      return_tensors="np",
    )
    return out["input_ids"].astype(np.int32), out["attention_mask"].astype(bool)

  def boxed_params(self) -> dict[str, Any]:
    """The loaded weights, boxed with the logical names the tower declares."""
    tokens = jnp.zeros((1, self.max_length), jnp.int32)
    boxes = jax.eval_shape(self.model.init, jax.random.PRNGKey(0), tokens)["params"]
    tower = jax.tree.map(
      lambda box, value: box.replace_boxed(jnp.asarray(value)),
      boxes,
      self.params,
      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned),
    )
    out = dict(text_model=tower)
    if self.projection is not None:
      out["text_projection"] = nn.LogicallyPartitioned(
        jnp.asarray(self.projection), ("embed", "kv")
      )
    return out

  def embed(
    self, params: Mapping, tokens: jax.Array, mask: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """(end-of-text state projected (B, embedding_dim) (CLIP's `encode_text`), token states)."""
    out = self.model.apply({"params": params["text_model"]}, tokens, mask)
    pooled = out.pooler_output
    if "text_projection" in params:
      pooled = pooled @ params["text_projection"]
    return pooled, out.last_hidden_state


def load_frozen_clip(text: Mapping) -> FrozenCLIPText | None:
  """The frozen CLIP tower `text.encoder` asks for, or None for the trained encoder."""
  if text["encoder"] not in TEXT_ENCODERS:
    raise ValueError(f"text.encoder: expected one of {TEXT_ENCODERS}, found {text['encoder']!r}")
  if text["encoder"] != "clip":
    return None
  return FrozenCLIPText.load(text["clip_path"], text["max_length"])


def make_caption_encoder(text: Mapping, vocab_size: int) -> CaptionEncoder:
  """The trained caption encoder of `text` (max_length, width, num_layers, num_heads)."""
  return CaptionEncoder(
    vocab_size=vocab_size,
    max_length=text["max_length"],
    width=text["width"],
    num_layers=text["num_layers"],
    num_heads=text["num_heads"],
  )


def caption_dims(text: Mapping, clip: FrozenCLIPText | None) -> tuple[int, int]:
  """(pooled text vector width, token state width) of the encoder `text.encoder` picks."""
  if clip is None:
    return text["width"], text["width"]
  return clip.embedding_dim, clip.config.hidden_size


def check_frozen_clip_optim(text: Mapping, optim: Mapping) -> None:
  """The frozen CLIP tower sits in the parameter tree, so weight decay must leave it alone."""
  if text["encoder"] == "clip" and optim["weight_decay"]:
    raise ValueError(
      f"optim.weight_decay: expected 0 with the frozen CLIP text encoder "
      f"(its weights sit in the parameter tree), found "
      f"{optim['weight_decay']}"
    )


def init_caption_params(
  clip: FrozenCLIPText | None,
  encoder: CaptionEncoder,
  rng: jax.Array,
  tokens: jax.Array,
  mask: jax.Array,
) -> dict[str, Any]:
  """{"clip": the frozen tower} or {"text_encoder": fresh trained-encoder params}.

  The frozen tower is kept in the tree so checkpoints are self-contained.
  """
  if clip is not None:
    return dict(clip=clip.boxed_params())
  return dict(text_encoder=encoder.init(rng, tokens, mask)["params"])


def encode_captions(
  clip: FrozenCLIPText | None,
  encoder: CaptionEncoder,
  params: Mapping,
  tokens: jax.Array,
  mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """(pooled (B, text_dim), token states (B, L, W)); the CLIP tower gets no gradient."""
  if clip is not None:
    return clip.embed(jax.lax.stop_gradient(params["clip"]), tokens, mask)
  return encoder.apply({"params": params["text_encoder"]}, tokens, mask)
