"""`jaxgen eval`: FID, KID, IS, SSIM, PSNR, FVD, CLIP score, CLIPSIM, dance or talking-face metrics.

    jaxgen eval --metric fid --real data/real --fake samples/ \
        --weights pt_inception-2015-12-05-6726825d.pth --out fid.json

FID/KID/IS run pytorch-fid's InceptionV3 from the local `--weights` file
(nothing downloads). FID's `--real`/`--fake` may also be a pytorch-fid style
`.npz` of precomputed `mu`/`sigma`. SSIM/PSNR pair `--fake` images with the
`--real` images of the same file name, on pixel values in [0, 255] (data range
255; 16-bit files are scaled into it at full precision), as many pairs per
call as fit in `--memory-gb`. An image file that cannot be read stops the
command with an error naming it (nothing is skipped). `--out` is checked
before anything is computed.
FVD compares two folders of videos (`jaxgen.metrics.video_folder`: .npy
clips, frame folders, .gif/.mp4) with pytorch-i3d's InceptionI3d from the
local `--weights` file, on the first `--clip-length` frames of each video.
CLIP score rates `--fake` images against their `--captions` with a local
transformers CLIPModel folder (`--clip-model`), as torchmetrics `CLIPScore`.
CLIPSIM (`jaxgen.metrics.clipsim`) is that score of every frame of a `--fake`
video folder with its video's caption, averaged per video, then over videos
(`value`, 100 * cos; `cosine`, the scale video papers print). A folder that
`jaxgen sample` wrote for a video run (`<out>_clips/`: `.npy` clips and
captions.json) is read as it is:

    jaxgen eval --metric clipsim --fake video_clips --clip-model clip-vit-base-patch32/
Dance (`jaxgen.cli.eval_dance`) compares folders of `.npy` joints, `--generated`
against `--reference` (aliases of `--fake` / `--real`), with the music of
`--music` and the frame rates `--fps` / `--reference-fps`: BAS, FID_k, FID_g,
Div_k, Div_g and EDGE's PFC.
Talking faces (`jaxgen.cli.eval_talking`): `lse` scores lip sync (LSE-D,
LSE-C, AV offset) of `--fake` videos with their speech (`<name>.wav` or the
MP4's audio) with syncnet_python's SyncNet (`--weights`) or the SyncNetColor
expert of a `wav2lip_expert` run (`--syncnet-run`); `mouth` compares them with
same-named `--real` videos through the procedural faces' mouth judge (opening
correlation, opening/width error, jitter) and SSIM/PSNR per frame.
All argument and folder checks run before the network is loaded or compiled.
"""

from __future__ import annotations

import argparse
import json

# The keys of `eval_folders.RUNNERS` and jaxgen.metrics.fvd's RESIZE_MODES and
# FEATURE_DIMS, spelled out so that `--help` imports no JAX (tests/test_cli.py
# checks they agree).
METRICS = (
  "fid",
  "kid",
  "is",
  "ssim",
  "psnr",
  "fvd",
  "clip-score",
  "clipsim",
  "dance",
  "lse",
  "mouth",
)
FVD_RESIZE_MODES = ("tf1", "center_crop")
FVD_FEATURES = ("logits", "pool")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the image-metric arguments to an argparse (sub)parser."""
  parser.add_argument("--metric", required=True, help=f"one of {', '.join(METRICS)}")
  parser.add_argument(
    "--real",
    "--reference",
    help="folder of real images (fid: or a .npz with mu/sigma; dance: ground-truth .npy "
    "joints; mouth: ground-truth videos); a file that cannot be read is an error naming it, "
    "never skipped",
  )
  parser.add_argument(
    "--fake",
    "--generated",
    required=True,
    help="folder of generated images (fid: or .npz; dance: .npy joints; fvd, clipsim, lse, "
    "mouth: videos, lse with <name>.wav or an audio stream); as --real",
  )
  parser.add_argument(
    "--weights",
    help="local network weights (.safetensors, or .pth/.pt that torch.load(weights_only=True) "
    "reads): pytorch-fid Inception for fid/kid/is, pytorch-i3d InceptionI3d (400 classes) for "
    "fvd, syncnet_python's syncnet_v2.model for lse",
  )
  parser.add_argument("--batch-size", type=int, default=50, help="images per network call")
  parser.add_argument(
    "--memory-gb",
    type=float,
    default=4.0,
    help="ssim/psnr: memory budget per call; large images run fewer than --batch-size pairs",
  )
  parser.add_argument("--out", help="write the result as JSON to this file")
  parser.add_argument("--kid-subsets", type=int, default=100, help="KID: number of subsets")
  parser.add_argument("--kid-subset-size", type=int, default=1000, help="KID: samples per subset")
  parser.add_argument("--is-splits", type=int, default=10, help="Inception Score: number of splits")
  parser.add_argument(
    "--fid-method",
    default="eigh",
    choices=("eigh", "sqrtm"),
    help="trace of the matrix square root: symmetric eigh (fast) or scipy "
    "sqrtm (pytorch-fid's exact procedure, slow at 2048-d)",
  )
  parser.add_argument("--seed", type=int, default=0, help="KID subsets / IS shuffling")
  parser.add_argument(
    "--clip-length", type=int, default=16, help="fvd: frames per clip, the first of each video"
  )
  parser.add_argument(
    "--fvd-resolution", type=int, default=224, help="fvd: side of the frames I3D sees (>= 193)"
  )
  parser.add_argument(
    "--fvd-resize",
    default="tf1",
    choices=FVD_RESIZE_MODES,
    help="fvd: tf1 = the reference FVD's TF1 bilinear resize to a square; center_crop = "
    "StyleGAN-V's shorter side to the resolution (torch bilinear) and a centre crop",
  )
  parser.add_argument(
    "--fvd-features",
    default="logits",
    choices=FVD_FEATURES,
    help="fvd: I3D embedding, the 400 logits (reference FVD) or the 1024-d pool",
  )
  parser.add_argument(
    "--captions",
    help="clip-score, clipsim: a .txt with one caption per image or video (sorted file names) "
    "or a .json mapping file name -> caption (default: captions.json/.txt inside --fake, as "
    "jaxgen sample writes beside video clips)",
  )
  parser.add_argument(
    "--clip-model",
    help="clip-score, clipsim: local transformers CLIPModel folder with its tokenizer",
  )
  parser.add_argument(
    "--music",
    help="dance: per generated file <name>.npy (beat times in seconds) or <name>.wav (beats "
    "tracked); without it BAS is not reported",
  )
  parser.add_argument(
    "--fps", type=float, help="dance: frames per second of the --generated joints (required)"
  )
  parser.add_argument(
    "--reference-fps", type=float, help="dance: frames per second of --reference (default: --fps)"
  )
  parser.add_argument(
    "--syncnet-run",
    help="lse: a wav2lip_expert run directory whose SyncNetColor scores lip sync instead of "
    "syncnet_python (train it apart from the expert a generator's loss used)",
  )
  parser.add_argument(
    "--vshift", type=int, default=15, help="lse: audio offsets searched, -vshift..vshift frames"
  )
  parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
  from jaxgen.cli.eval_folders import run_eval  # pylint: disable=g-import-not-at-top

  print(json.dumps(run_eval(args), indent=2))
  return 0
