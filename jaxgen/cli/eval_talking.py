"""`jaxgen eval --metric lse | mouth`: talking-face metrics over folders of videos.

    jaxgen eval --metric lse --fake samples/ --weights syncnet_v2.safetensors
    jaxgen eval --metric lse --fake samples/ --syncnet-run runs/expert_seed1
    jaxgen eval --metric mouth --fake samples/ --real ground_truth/

A folder holds one video per name (`jaxgen.metrics.talking_face`): a
`<name>.npy` (T, H, W, 3) uint8 array, a folder of frames or a `<name>.mp4`;
its speech is `<name>.wav` or the MP4's audio stream. Videos are 25 fps face
crops, as talking-face models write them (no face detection runs here).

- `lse`: LSE-D (lower is better), LSE-C (higher is better) and the AV offset
  per video and their means over videos, with offsets of +-`--vshift`
  frames. The network is syncnet_python's SyncNet from `--weights` (a local
  syncnet_v2.model or its .safetensors conversion; frames resized to
  224x224, as Wav2Lip's `scores_LSE`), or with `--syncnet-run` the
  `SyncNetColor` expert of a `wav2lip_expert` run: an evaluation expert
  trained apart (another seed) from the one a generator's loss used. The two
  networks' scores are on different scales.
- `mouth`: same-named generated (`--fake`) and ground-truth (`--real`) videos
  of the procedural faces, read by the analytic mouth judge: opening
  correlation, mean |opening| and |width| errors (fractions of the face
  crop's side), SSIM and PSNR per frame (data range 255), and the jitter
  (mean |change of opening| between frames) of both. Per video and averaged.
Every folder, speech track and length is checked before a network is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxgen.cli.errors import UsageError
from jaxgen.convert import metric_networks, torch_state_dict
from jaxgen.metrics import lipsync, talking_face
from jaxgen.metrics.frechet import TooFewSamplesError

logger = logging.getLogger(__name__)

SYNCNET_PYTHON = "syncnet_python"
WAV2LIP_EXPERT = "wav2lip_expert"


def run_lse(args: argparse.Namespace) -> dict[str, Any]:
  """LSE-D / LSE-C of every video in `args.fake` with its speech (see the module docstring)."""
  vshift = _vshift(args.vshift)
  if args.syncnet_run and args.weights:
    raise UsageError(
      "--metric lse takes one network: --weights (syncnet_python) or --syncnet-run "
      "(a wav2lip_expert run), got both"
    )
  if not (args.syncnet_run or args.weights):
    raise torch_state_dict.MissingWeightsError(
      "--weights is required for --metric lse: a local copy of syncnet_python's "
      "syncnet_v2.model (or a .safetensors conversion; jaxgen never downloads weights), "
      "or --syncnet-run with a wav2lip_expert run"
    )
  videos = talking_face.index_videos(args.fake, name="--fake")
  speech = {}
  for name, files in videos.items():  # every check before a network is loaded
    talking_face.check_frame_rate(files.frames)
    speech[name] = talking_face.read_speech(files)
    num_frames = talking_face.frame_count(files.frames)
    talking_face.check_speech_length(num_frames, len(speech[name]), name)
    talking_face.window_count(num_frames, len(speech[name]))
  embed, network = _embedder(args)
  scores = {}
  with tqdm(total=len(videos), unit="video", desc="lse", disable=args.no_progress) as bar:
    for name, files in videos.items():
      frames = talking_face.read_frames(files.frames)
      scores[name] = talking_face.lip_sync_scores(embed, frames, speech[name], vshift=vshift)
      bar.update(1)
  lse_d, lse_c = lipsync.mean_scores(list(scores.values()))
  return {
    "lse_d": lse_d,
    "lse_c": lse_c,
    "num_videos": len(scores),
    "network": network,
    "vshift": vshift,
    "videos": {
      name: {"lse_d": s.lse_d, "lse_c": s.lse_c, "offset": s.offset} for name, s in scores.items()
    },
  }


def run_mouth(args: argparse.Namespace) -> dict[str, Any]:
  """The mouth judge, SSIM and PSNR of same-named generated and ground-truth videos."""
  if not args.real:
    raise UsageError("--real is required for --metric mouth: a folder of ground-truth videos")
  fake = talking_face.index_videos(args.fake, name="--fake")
  real = talking_face.index_videos(args.real, name="--real")
  if set(fake) != set(real):
    raise talking_face.UnpairedVideosError(
      "--metric mouth pairs videos by name; --fake has no ground truth for "
      f"{sorted(set(fake) - set(real))[:5]}, --real has no generated video for "
      f"{sorted(set(real) - set(fake))[:5]}"
    )
  for name in fake:
    counts = [talking_face.frame_count(v[name].frames) for v in (fake, real)]
    if counts[0] != counts[1]:
      raise talking_face.FrameCountMismatchError(
        f"{name!r}: expected the generated video to have as many frames as its ground truth "
        f"({counts[1]}), found {counts[0]}"
      )
    if counts[0] < 2:
      raise TooFewSamplesError(f"{name!r}: expected at least 2 frames, found {counts[0]}")
  scores = {}
  with tqdm(total=len(fake), unit="video", desc="mouth", disable=args.no_progress) as bar:
    for name in fake:
      scores[name] = talking_face.mouth_scores(
        talking_face.read_frames(fake[name].frames),
        talking_face.read_frames(real[name].frames),
        name=name,
        batch_size=args.batch_size,
      )
      bar.update(1)
  fields = [f.name for f in dataclasses.fields(talking_face.MouthScores) if f.name != "num_frames"]
  means = {field: float(np.mean([getattr(s, field) for s in scores.values()])) for field in fields}
  return {
    **means,
    "num_videos": len(scores),
    "num_frames": int(sum(s.num_frames for s in scores.values())),
    "units": "opening/width errors and jitter in fractions of the face crop's side",
    "videos": {name: dataclasses.asdict(s) for name, s in scores.items()},
  }


def _vshift(value: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise UsageError(f"--vshift: expected an integer >= 0 (frames), got {value!r}")
  return value


def _embedder(args: argparse.Namespace) -> tuple[talking_face.Embedder, str]:
  """The lip-sync network `args` names, and its name for the result."""
  if args.syncnet_run:
    # Deferred: only --syncnet-run needs the task (and its imports).
    from jaxgen.tasks.registry import load_run_of
    from jaxgen.tasks.talking_face.wav2lip_expert import Wav2LipExpertTask

    task, params = load_run_of(Wav2LipExpertTask, args.syncnet_run, flag="--syncnet-run")
    embed = talking_face.syncnet_color_embedder(
      params, width=task.width, batch_size=args.batch_size
    )
    return embed, f"{WAV2LIP_EXPERT}:{args.syncnet_run}"
  variables = metric_networks.SYNCNET.load(args.weights)
  return talking_face.syncnet_python_embedder(variables, batch_size=args.batch_size), SYNCNET_PYTHON
