"""Named errors shared across layers (layer 0: imports nothing from jaxgen).

An error lives here when modules of different packages raise it and callers
must catch it with one `except`, whatever raised it.
"""

from __future__ import annotations


class UnsupportedConfigError(ValueError):
  """A model config option (or value) that jaxgen does not implement.

  Raised for diffusers configs (U-Net, autoencoder, scheduler, pipeline) and
  transformers configs (CLIP, T5) alike; the message names the option, what
  jaxgen supports and what was found.
  """
