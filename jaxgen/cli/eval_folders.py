"""The work of `jaxgen eval`: metrics between folders of images, videos, dances or talking faces.

`run_eval(args)` takes the namespace `jaxgen.cli.eval.add_arguments` parses;
see that module for the metrics and their inputs. All argument and folder
checks run before a network is loaded or compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxgen.cli.errors import UsageError
from jaxgen.cli.eval_dance import run_dance
from jaxgen.cli.eval_talking import run_lse, run_mouth
from jaxgen.convert import metric_networks, torch_state_dict
from jaxgen.metrics import (
  clip_score,
  clipsim,
  frechet,
  fvd,
  image_folder,
  image_quality,
  inception_score,
  kid,
)
from jaxgen.training.task import check_writable_file

logger = logging.getLogger(__name__)

# SSIM/PSNR compare pixel values in [0, 255] (16-bit files scaled into it at full precision).
PIXEL_DATA_RANGE = 255.0


class UnknownMetricError(UsageError):
  """--metric names no metric this command computes."""


class UnpairedImagesError(ValueError):
  """SSIM/PSNR found fake images without a same-named real image (or the reverse)."""


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
  """Computes `args.metric`, writes JSON to `args.out` if given, returns the result dict."""
  metric = str(args.metric).lower()
  if metric not in RUNNERS:
    raise UnknownMetricError(f"--metric must be one of {', '.join(RUNNERS)}, got {args.metric!r}")
  if args.batch_size < 1:
    raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
  if not args.memory_gb > 0:
    raise ValueError(f"--memory-gb: expected a positive budget in GB, got {args.memory_gb}")
  if args.out:
    check_writable_file(args.out)
  result = {"metric": metric, **RUNNERS[metric](args)}
  logger.info("%s", result)
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  return result


# --- FID / KID / IS ---------------------------------------------------------


def _require(args: argparse.Namespace, name: str, metric: str) -> str:
  value = getattr(args, name)
  if not value:
    raise ValueError(f"--{name} is required for --metric {metric}")
  return value


def _load_weights(args: argparse.Namespace, metric: str) -> Any:
  path = args.weights
  if not path:
    raise torch_state_dict.MissingWeightsError(
      f"--weights is required for --metric {metric}: a local copy of pytorch-fid's "
      "pt_inception-2015-12-05-6726825d.pth (jaxgen never downloads weights)"
    )
  return metric_networks.FID_INCEPTION.load(path)


def _check_count(paths: list[Path], needed: int, name: str, why: str) -> None:
  if len(paths) < needed:
    raise frechet.TooFewSamplesError(
      f"{why} needs at least {needed} images, {name} holds {len(paths)}"
    )


def _is_stats_file(path: str) -> bool:
  return os.path.isfile(path) and path.endswith(".npz")


def _frechet_between(
  sources: dict[str, str],
  folders: dict[str, list[Path]],
  method: str,
  statistics: Callable[[str, list[Path]], frechet.GaussianStatistics],
) -> tuple[float, dict[str, int | None]]:
  """Fréchet distance between `real` and `fake`, each a folder or a saved statistics file.

  Returns (distance, per-source sample counts; None for a statistics file).
  """
  gaussians, counts = {}, {}
  for name, source in sources.items():
    if name in folders:
      stats = statistics(name, folders[name])
      gaussians[name], counts[name] = (stats.mean, stats.covariance), stats.count
    else:
      gaussians[name], counts[name] = frechet.load_statistics(source), None
  return frechet.frechet_distance(*gaussians["real"], *gaussians["fake"], method=method), counts


def _run_fid(args: argparse.Namespace) -> dict[str, Any]:
  sources = {"real": _require(args, "real", "fid"), "fake": _require(args, "fake", "fid")}
  folders = {}
  for name, source in sources.items():
    if not _is_stats_file(source):
      folders[name] = image_folder.list_images(source, name=f"--{name}")
      _check_count(folders[name], 2, f"--{name}", "FID (a covariance)")
  variables = _load_weights(args, "fid") if folders else None
  value, counts = _frechet_between(
    sources,
    folders,
    args.fid_method,
    lambda name, paths: image_folder.pool_feature_statistics(
      paths,
      variables,
      batch_size=args.batch_size,
      progress=not args.no_progress,
      description=f"fid {name}",
    ),
  )
  return {"value": value, "num_real": counts["real"], "num_fake": counts["fake"]}


def _run_kid(args: argparse.Namespace) -> dict[str, Any]:
  paths = {
    name: image_folder.list_images(_require(args, name, "kid"), name=f"--{name}")
    for name in ("real", "fake")
  }
  for name, folder_paths in paths.items():
    _check_count(
      folder_paths,
      args.kid_subset_size,
      f"--{name}",
      f"KID with --kid-subset-size {args.kid_subset_size}",
    )
  if args.kid_subsets < 1:
    raise ValueError(f"--kid-subsets must be >= 1, got {args.kid_subsets}")
  variables = _load_weights(args, "kid")
  features = {
    name: image_folder.collect_inception_outputs(
      folder_paths,
      variables,
      batch_size=args.batch_size,
      progress=not args.no_progress,
      description=f"kid {name}",
    ).pool
    for name, folder_paths in paths.items()
  }
  result = kid.kernel_inception_distance(
    features["real"],
    features["fake"],
    key=jax.random.key(args.seed),
    num_subsets=args.kid_subsets,
    subset_size=args.kid_subset_size,
  )
  return {
    "value": result.mean,
    "std": result.std,
    "num_real": len(paths["real"]),
    "num_fake": len(paths["fake"]),
    "subsets": args.kid_subsets,
    "subset_size": args.kid_subset_size,
  }


def _run_is(args: argparse.Namespace) -> dict[str, Any]:
  paths = image_folder.list_images(args.fake, name="--fake")
  _check_count(
    paths, args.is_splits, "--fake", f"Inception Score with --is-splits {args.is_splits}"
  )
  variables = _load_weights(args, "is")
  logits = image_folder.collect_inception_outputs(
    paths,
    variables,
    batch_size=args.batch_size,
    progress=not args.no_progress,
    description="is fake",
  ).logits_unbiased
  result = inception_score.inception_score(
    logits, splits=args.is_splits, key=jax.random.key(args.seed)
  )
  return {"value": result.mean, "std": result.std, "num_fake": len(paths), "splits": args.is_splits}


# --- SSIM / PSNR ------------------------------------------------------------


def _paired_paths(
  args: argparse.Namespace, metric: str
) -> tuple[list[Path], list[Path], tuple[int, int]]:
  real = image_folder.list_images(_require(args, "real", metric), name="--real")
  fake = image_folder.list_images(args.fake, name="--fake")
  real_names, fake_names = {p.name for p in real}, {p.name for p in fake}
  if real_names != fake_names:
    only_fake = sorted(fake_names - real_names)[:5]
    only_real = sorted(real_names - fake_names)[:5]
    raise UnpairedImagesError(
      f"--{metric} pairs images by file name; --fake has no real match for {only_fake}, "
      f"--real has no fake match for {only_real}"
    )
  size = image_folder.common_image_size(real + fake, name=f"--{metric} images (real and fake)")
  if metric == "ssim" and min(size) < 11:
    raise ValueError(f"--metric ssim needs images of at least 11x11 pixels, got {size}")
  image_folder.warn_reduced_precision(real + fake, name=f"--{metric} images")
  return real, fake, size


def _run_pairwise(
  args: argparse.Namespace, metric: str, fn: Callable[..., jax.Array]
) -> dict[str, Any]:
  real, fake, size = _paired_paths(args, metric)
  # Large images would exhaust memory at --batch-size pairs per call (SSIM on 4000x4000 images
  # needs ~2 GB a pair): the batch is what fits in --memory-gb.
  batch_size = image_quality.batch_size_for_memory(
    metric, (*size, 3), args.memory_gb * 1e9, args.batch_size
  )
  if batch_size < args.batch_size:
    logger.info(
      "%s: %d image pairs per call (%dx%d images, --memory-gb %g)",
      metric,
      batch_size,
      *size,
      args.memory_gb,
    )
  values = []
  batches = zip(
    image_folder.iterate_batches(real, batch_size, full_precision=True),
    image_folder.iterate_batches(fake, batch_size, full_precision=True),
  )
  with tqdm(total=len(real), unit="img", desc=metric, disable=args.no_progress) as bar:
    for (real_batch, num_valid), (fake_batch, _) in batches:
      per_image = fn(fake_batch, real_batch, data_range=PIXEL_DATA_RANGE)
      values.append(np.asarray(per_image)[:num_valid])
      bar.update(num_valid)
  values = np.concatenate(values).astype(np.float64)
  return {
    "value": float(values.mean()),
    "std": float(values.std()),
    "num_pairs": len(values),
    "data_range": PIXEL_DATA_RANGE,
  }


# --- FVD --------------------------------------------------------------------


def _run_fvd(args: argparse.Namespace) -> dict[str, Any]:
  config = fvd.FVDConfig(
    clip_length=args.clip_length,
    resolution=args.fvd_resolution,
    resize=args.fvd_resize,
    feature=args.fvd_features,
  )
  sources = {"real": _require(args, "real", "fvd"), "fake": _require(args, "fake", "fvd")}
  folders = {}
  for name, source in sources.items():
    if not _is_stats_file(source):
      folders[name] = fvd.check_folder(source, config, name=f"--{name}")
      if len(folders[name]) < 2:
        raise frechet.TooFewSamplesError(
          f"FVD (a covariance) needs at least 2 videos, --{name} holds {len(folders[name])}"
        )
  variables = None
  if folders:
    if not args.weights:
      raise torch_state_dict.MissingWeightsError(
        "--weights is required for --metric fvd: a local pytorch-i3d checkpoint "
        "(e.g. rgb_imagenet.pt, 400 Kinetics classes; jaxgen never downloads weights)"
      )
    variables = metric_networks.I3D.load(args.weights)
  value, counts = _frechet_between(
    sources,
    folders,
    args.fid_method,
    lambda name, paths: fvd.embedding_statistics(
      paths,
      variables,
      config,
      batch_size=args.batch_size,
      progress=not args.no_progress,
      description=f"fvd {name}",
    ),
  )
  return {
    "value": value,
    "num_real": counts["real"],
    "num_fake": counts["fake"],
    **dataclasses.asdict(config),
  }


# --- CLIP score ---------------------------------------------------------------


def _captions_path(args: argparse.Namespace) -> str:
  if args.captions:
    return args.captions
  for name in clip_score.CAPTION_FILE_NAMES:
    if os.path.isfile(os.path.join(args.fake, name)):
      return os.path.join(args.fake, name)
  raise ValueError(
    "--captions is required for --metric clip-score: a .txt file with one caption per image "
    "(sorted file-name order) or a .json mapping file name -> caption; --fake holds no "
    f"{' or '.join(clip_score.CAPTION_FILE_NAMES)} either"
  )


def _clip_model(args: argparse.Namespace, metric: str) -> str:
  if not args.clip_model:
    raise ValueError(
      f"--clip-model is required for --metric {metric}: a local transformers CLIPModel folder "
      "(config.json, model.safetensors, vocab.json, merges.txt; jaxgen never downloads weights)"
    )
  return args.clip_model


def _run_clip_score(args: argparse.Namespace) -> dict[str, Any]:
  paths = image_folder.list_images(args.fake, name="--fake")
  captions = clip_score.read_captions(
    _captions_path(args), [p.name for p in paths], name="--captions", images_name="--fake"
  )
  folder = _clip_model(args, "clip-score")
  scorer = clip_score.load_clip_scorer(folder, batch_size=args.batch_size)
  scores = []
  with tqdm(total=len(paths), unit="img", desc="clip-score", disable=args.no_progress) as bar:
    for start in range(0, len(paths), args.batch_size):
      chunk = slice(start, start + args.batch_size)
      images = [clip_score.load_rgb_image(p) for p in paths[chunk]]
      scores.append(clip_score.image_text_scores(scorer, images, captions[chunk]))
      bar.update(len(images))
  scores = np.concatenate(scores)
  return {
    "value": clip_score.clipped_mean(scores),
    "std": float(np.std(scores.astype(np.float64))),
    "num_fake": len(paths),
    "clip_model": str(folder),
  }


def _run_clipsim(args: argparse.Namespace) -> dict[str, Any]:
  videos = clipsim.captioned_videos(args.fake, args.captions, name="--fake")
  folder = _clip_model(args, "clipsim")
  scorer = clip_score.load_clip_scorer(folder, batch_size=args.batch_size)
  with tqdm(total=len(videos.paths), unit="video", desc="clipsim", disable=args.no_progress) as bar:
    result = clipsim.folder_clipsim(
      videos,
      clipsim.transformers_frame_scorer(scorer),
      frames_per_call=max(args.batch_size, max(videos.num_frames)),
      progress=bar.update,
    )
  return {**result.summary(), "num_frames": int(sum(videos.num_frames)), "clip_model": str(folder)}


# --metric -> its runner (`jaxgen.cli.eval.METRICS` lists the same names for --help).
RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
  "fid": _run_fid,
  "kid": _run_kid,
  "is": _run_is,
  "ssim": lambda args: _run_pairwise(args, "ssim", image_quality.ssim),
  "psnr": lambda args: _run_pairwise(args, "psnr", image_quality.psnr),
  "fvd": _run_fvd,
  "clip-score": _run_clip_score,
  "clipsim": _run_clipsim,
  "dance": run_dance,
  "lse": run_lse,
  "mouth": run_mouth,
}
