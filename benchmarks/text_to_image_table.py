"""The text-to-image comparison table (issue 20): every family on the same held-out captions.

    python benchmarks/text_to_image_table.py \
        --run pixel-diffusion=runs/text_to_image_shapes --run latent-diffusion=runs/latent_shapes \
        --run AR=runs/dalle_shapes --run AR+rerank=runs/dalle_shapes --option AR+rerank:rerank=8 \
        --run MaskGIT-T4=runs/maskgit_shapes --option MaskGIT-T4:num_steps=4 \
        --run VQ-Diffusion=runs/vq_diffusion_shapes --run StackGAN++=runs/stackgan_shapes \
        --clip-run runs/clip_shapes --num-examples 256 --out runs/table.json

Rows, columns and their conventions are `jaxgen.tasks.image.caption_table`'s
docstring. A run may appear under several labels with different sampling
options (`--option LABEL:KEY=VALUE`: `generate`'s keyword arguments such as
num_steps, guidance_scale, sampler; `rerank=N` draws N candidates per caption
and keeps the one the `--clip-run` contrastive model scores highest). The
extra columns come from the run directory: parameters of the generator (the
prior, or the GAN's generator; `with tokenizer` adds the VQGAN / autoencoder
and the DAMSM encoders it samples through), training steps of the checkpoint,
the process CPU minutes the trainer logged by then, and the median training
steps/s it logged. `--grid` writes a PNG of the first 8
captions: one row per method.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import jax
import numpy as np

from jaxgen.render.grid import make_grid, save_png
from jaxgen.tasks.image import caption_table
from jaxgen.tasks.registry import load_run

EXAMPLE = "MaskGIT-T8=runs/maskgit_shapes"


class TableArgumentError(ValueError):
  """A --run, --option or --clip-run the table cannot use."""


def generation_params(task, params):
  """The generator's part of `params`: discriminators (top-level keys `disc*`) left out."""
  if isinstance(params, dict):
    return {k: v for k, v in params.items() if not k.startswith("disc")}
  return params


def frozen_parts(task) -> list:
  """The trained models a run samples through besides its own params: the VQGAN of a token
  prior, the autoencoder of latent diffusion, the DAMSM text encoder of a text GAN."""
  autoencoder = getattr(task, "autoencoder", None)
  parts = [getattr(task, "vq_params", None), getattr(task, "damsm_params", None)]
  return [p for p in parts + [getattr(autoencoder, "params", None)] if p is not None]


def method(task, params, options: dict, clip, batch_size: int) -> caption_table.Generator:
  """(captions, rng) -> uint8 images of one run under its sampling options."""
  options = dict(options)
  candidates = options.pop("rerank", None)
  if candidates is not None:
    if clip is None:
      raise TableArgumentError("--option ...:rerank=N needs --clip-run (a trained `clip` run)")
    clip_task, clip_params = clip

    def score(images, captions):
      return clip_task.similarity(clip_params, images, list(captions))

    return lambda captions, rng: task.generate_reranked(
      params,
      task.conditions(list(captions)),
      rng,
      num_candidates=int(candidates),
      score_fn=score,
      batch_size=batch_size,
      **options,
    )["image"]
  return lambda captions, rng: task.generate(
    params, task.conditions(list(captions)), rng, batch_size=batch_size, **options
  )["image"]


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--run", action="append", required=True, help=f"LABEL=RUN_DIR, e.g. {EXAMPLE}"
  )
  parser.add_argument("--option", action="append", default=[], help="LABEL:KEY=VALUE")
  parser.add_argument("--clip-run", default=None, help="a `clip` run, for rerank=N options")
  parser.add_argument("--num-examples", type=int, default=256, help="held-out captions judged")
  parser.add_argument("--diversity-captions", type=int, default=16)
  parser.add_argument("--samples-per-caption", type=int, default=4)
  parser.add_argument("--batch-size", type=int, default=64, help="captions per compiled call")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--out", default=None, help="JSON of the rows (a .md table is written beside)"
  )
  parser.add_argument("--grid", default=None, help="PNG: the first 8 captions, a row per method")
  args = parser.parse_args(argv)
  for name in ("num_examples", "diversity_captions", "samples_per_caption", "batch_size"):
    _common.check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
  runs = [_common.parse_run(item, TableArgumentError, EXAMPLE) for item in args.run]
  options = _common.parse_options(args.option, [label for label, _ in runs], TableArgumentError)
  clip = load_run(args.clip_run) if args.clip_run else None

  rng = jax.random.PRNGKey(args.seed)
  loaded, rows, pictures, held_out, first = {}, [], [], None, None
  for label, run_dir in runs:
    if run_dir not in loaded:
      loaded[run_dir] = load_run(run_dir)
    task, params = loaded[run_dir]
    if held_out is None:
      held_out = task.eval_split(args.num_examples)
      captions = [str(c) for c in held_out["caption"]]
    generate = method(task, params, options[label], clip, args.batch_size)
    row, images = caption_table.score_method(
      label,
      generate,
      captions,
      rng,
      diversity_captions=args.diversity_captions,
      samples_per_caption=args.samples_per_caption,
      warmup=args.batch_size,
    )
    step = _common.checkpoint_step(run_dir)
    own = _common.parameter_count(generation_params(task, params))
    extra = sum(_common.parameter_count(p) for p in frozen_parts(task))
    rows.append(
      dict(
        row.as_dict(),
        parameters=own,
        with_tokenizer=own + extra,
        train_steps=step,
        train_cpu_minutes=_common.logged_at(run_dir, "cpu_minutes", step),
        train_steps_per_sec=_common.train_rate(run_dir),
      )
    )
    pictures.append((label, images[:8]))
    first = first or (label, images)  # the shuffled-caption row re-judges its samples
    print(_common.markdown_table(rows[-1:]), flush=True)
  references = caption_table.reference_rows(held_out["image"], captions, first)
  rows = [r.as_dict() for r in references[:1]] + rows + [r.as_dict() for r in references[1:]]
  table = _common.markdown_table(rows)
  print(f"\n{len(captions)} held-out captions; {_common.machine_line()}\n\n{table}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
      f.write(table + "\n")
  if args.grid:
    images = np.concatenate([held_out["image"][:8]] + [p for _, p in pictures])
    labels = [c for c in captions[:8]] + [label for label, p in pictures for _ in p]
    save_png(args.grid, make_grid(images, labels, scale=3, ncols=8))
  return rows


if __name__ == "__main__":
  sys.exit(0 if main() else 1)
