"""A tiny CLIP BPE tokenizer written offline, for tests that build transformers/diffusers folders.

The vocabulary is the 256 byte stand-ins (plain and word-final) of GPT-2 /
CLIP, a few merges and the two special tokens, so any prompt tokenizes
without a download.
"""

import json
import os


def bytes_to_unicode() -> list[str]:
  """GPT-2 / CLIP's printable stand-ins for the 256 bytes, in byte order."""
  printable = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
  )
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return [chars[b] for b in range(256)]


def write_clip_tokenizer(folder: str, merges: tuple[str, ...], max_length: int, **kwargs):
  """Writes vocab.json and merges.txt to `folder`; returns the `transformers.CLIPTokenizer`.

  kwargs go to `from_pretrained` (e.g. pad_token="!" as SDXL's second tokenizer).
  """
  import transformers  # pylint: disable=g-import-not-at-top

  os.makedirs(folder, exist_ok=True)
  chars = bytes_to_unicode()
  tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump({token: i for i, token in enumerate(tokens)}, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
  return transformers.CLIPTokenizer.from_pretrained(
    folder, model_max_length=max_length, local_files_only=True, **kwargs
  )
