"""LSE-D / LSE-C: MFCCs, windows and scores against syncnet_python's protocol."""

import numpy as np
import pytest
import python_speech_features
import torch

from jaxgen.convert import metric_networks
from jaxgen.metrics import lipsync
from jaxgen.metrics.frechet import TooFewSamplesError


def _speech_like(num_samples, seed=0):
  """16-bit PCM: a few harmonics with a syllable-rate envelope, plus noise and silence."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / 16000
  voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate([140, 280, 420, 1100], 1))
  envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
  audio = 8000 * envelope * voice + rng.normal(0, 30, num_samples)
  audio[: num_samples // 10] = 0  # exact silence: the reference's log(eps) branch
  return np.clip(audio, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("num_samples", [16000, 7681, 300])
def test_mfcc_equals_python_speech_features(num_samples):
  audio = _speech_like(num_samples)
  want = python_speech_features.mfcc(audio, 16000)
  got = lipsync.mfcc(audio)
  assert got.shape == want.shape and got.shape[1] == 13
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_float_audio_is_read_as_int16_scale():
  audio = _speech_like(8000)
  np.testing.assert_allclose(
    lipsync.mfcc(audio.astype(np.float32) / 32768), lipsync.mfcc(audio), rtol=1e-6, atol=1e-6
  )


def _reference_scores(video, audio, vshift):
  """SyncNetInstance.evaluate's calc_pdist / min / median in torch float32."""
  feat1, feat2 = torch.from_numpy(video).float(), torch.from_numpy(audio).float()
  win_size = 2 * vshift + 1
  feat2p = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
  dists = [
    torch.nn.functional.pairwise_distance(
      feat1[[i], :].repeat(win_size, 1), feat2p[i : i + win_size, :]
    )
    for i in range(len(feat1))
  ]
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  return (
    torch.stack(dists).numpy(),
    vshift - int(minidx),
    float(torch.median(mdist) - minval),
    float(minval),
  )


@pytest.mark.parametrize("vshift", [15, 3, 0])
def test_scores_equal_reference_on_random_embeddings(vshift):
  rng = np.random.default_rng(vshift)
  video, audio = rng.normal(size=(2, 40, 64))
  dists, offset, conf, minval = _reference_scores(video, audio, vshift)
  np.testing.assert_allclose(lipsync.offset_distances(video, audio, vshift), dists, rtol=1e-5)
  scores = lipsync.lse_d_c(video, audio, vshift)
  assert scores.offset == offset
  assert scores.lse_d == pytest.approx(minval, rel=1e-5)
  assert scores.lse_c == pytest.approx(conf, rel=1e-4, abs=1e-5)
  assert scores.mean_distances.shape == (2 * vshift + 1,)


@pytest.mark.parametrize("k", [0, 3, -5])
def test_audio_shifted_by_k_frames_gives_offset_k_and_known_distance(k):
  rng = np.random.default_rng(7)
  num_windows, dim = 50, 32
  video = rng.normal(size=(num_windows, dim))
  audio = rng.normal(size=(num_windows, dim))  # unrelated where there is no partner
  t = np.arange(num_windows)
  has_partner = (t + k >= 0) & (t + k < num_windows)
  audio[has_partner] = video[t[has_partner] + k]  # audio_t = video_{t+k}: audio leads by k
  scores = lipsync.lse_d_c(video, audio)
  assert scores.offset == k
  # Video i meets audio i - k: identical where 0 <= i - k < W (distance of the
  # 1e-6 offset alone), the zero padding elsewhere.
  eps = lipsync.PAIRWISE_DISTANCE_EPS
  i = np.arange(num_windows)
  inside = (i - k >= 0) & (i - k < num_windows)
  expected = np.where(inside, eps * np.sqrt(dim), np.linalg.norm(video + eps, axis=1)).mean()
  assert scores.lse_d == pytest.approx(expected, rel=1e-9)
  assert scores.lse_c == pytest.approx(np.median(scores.mean_distances) - expected, rel=1e-9)
  _, ref_offset, ref_conf, _ref_min = _reference_scores(video, audio, 15)
  assert (ref_offset, scores.lse_c) == (k, pytest.approx(ref_conf, rel=1e-4))


def test_windows_follow_the_reference_slicing():
  num_frames = 11
  audio = _speech_like(num_frames * 640 + 100)
  frames = np.random.default_rng(0).integers(0, 256, (num_frames, 224, 224, 3), dtype=np.uint8)
  video, mfcc_windows = lipsync.sync_windows(frames, audio)
  count = min(num_frames, len(audio) // 640) - 5
  assert video.shape == (count, 5, 224, 224, 3) and mfcc_windows.shape == (count, 20, 13)
  cct = python_speech_features.mfcc(audio, 16000).T  # (13, T), the reference's image
  for v in range(count):
    np.testing.assert_array_equal(video[v], frames[v : v + 5].astype(np.float32))
    np.testing.assert_allclose(mfcc_windows[v], cct[:, 4 * v : 4 * v + 20].T, rtol=1e-6)
  rgb, _ = lipsync.sync_windows(frames[..., ::-1], audio, channels="rgb")
  np.testing.assert_array_equal(rgb, video)


def _random_syncnet_variables(seed=0):
  """Random weights through the importer (no init compile); He-scaled so activations stay O(1)."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, entry in metric_networks.SYNCNET.key_map().items():
    shape = entry.torch_shape
    if key.endswith("running_var") or (len(shape) == 1 and key.endswith("weight")):
      state[key] = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1:
      state[key] = rng.normal(0, 0.1, shape)
    else:
      state[key] = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
  return metric_networks.SYNCNET.from_torch(state)


def test_end_to_end_scores_with_random_weights():
  variables = _random_syncnet_variables()
  frames = np.random.default_rng(1).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
  audio = _speech_like(8 * 640)
  # 3 windows in batches of 2: the last batch is padded and trimmed.
  video_emb, audio_emb = lipsync.syncnet_embeddings(variables, frames, audio, batch_size=2)
  assert video_emb.shape == audio_emb.shape == (3, 1024)
  video, mfcc_windows = lipsync.sync_windows(frames, audio)

  def embed_rows(rows):  # one batch of 2, the size syncnet_embeddings compiled for
    v, a = lipsync._embed(variables, video[rows], mfcc_windows[rows])
    return np.asarray(v), np.asarray(a)

  # The batches it ran were [0, 1] and [2, zero padding]; the padding's row is cut. A random
  # SyncNet is chaotic in float32, so each row is compared with the same row at the same
  # batch position: a different position reorders the arithmetic.
  padded = (
    np.concatenate([video, np.zeros_like(video[:1])]),
    np.concatenate([mfcc_windows, np.zeros_like(mfcc_windows[:1])]),
  )
  want = [lipsync._embed(variables, padded[0][rows], padded[1][rows]) for rows in ([0, 1], [2, 3])]
  want_video = np.concatenate([np.asarray(v) for v, _ in want])[:3]
  want_audio = np.concatenate([np.asarray(a) for _, a in want])[:3]
  np.testing.assert_allclose(video_emb, want_video, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(audio_emb, want_audio, rtol=1e-5, atol=1e-5)
  # Nothing of the padding reaches a real row: other padding, the same row 2.
  other_video, other_audio = embed_rows([2, 0])
  np.testing.assert_allclose(video_emb[2], other_video[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(audio_emb[2], other_audio[0], rtol=1e-5, atol=1e-5)
  scores = lipsync.lip_sync_scores(variables, frames, audio, batch_size=2)
  direct = lipsync.lse_d_c(video_emb, audio_emb)
  assert scores.offset == direct.offset
  assert (scores.lse_d, scores.lse_c) == pytest.approx((direct.lse_d, direct.lse_c), rel=1e-6)
  assert lipsync.mean_scores([scores, scores]) == pytest.approx((scores.lse_d, scores.lse_c))


def test_bad_input_is_named():
  with pytest.raises(
    ValueError, match=r"video_embeddings and audio_embeddings.*\(4, 8\).*\(5, 8\)"
  ):
    lipsync.lse_d_c(np.zeros((4, 8)), np.zeros((5, 8)))
  with pytest.raises(ValueError, match=r"video_embeddings must have shape \(W, D\)"):
    lipsync.lse_d_c(np.zeros(4), np.zeros(4))
  with pytest.raises(ValueError, match="vshift must be an integer >= 0, got -1"):
    lipsync.lse_d_c(np.zeros((4, 8)), np.zeros((4, 8)), vshift=-1)
  with pytest.raises(TooFewSamplesError, match="at least 6 video frames"):
    lipsync.sync_windows(np.zeros((5, 224, 224, 3)), np.zeros(16000, np.int16))
  with pytest.raises(ValueError, match=r"frames must have shape \(T, 224, 224, 3\)"):
    lipsync.sync_windows(np.zeros((9, 112, 112, 3)), np.zeros(16000, np.int16))
  with pytest.raises(ValueError, match="channels must be 'bgr' or 'rgb'"):
    lipsync.sync_windows(np.zeros((9, 224, 224, 3)), np.zeros(16000, np.int16), channels="gray")
  with pytest.raises(ValueError, match=r"audio must be mono"):
    lipsync.mfcc(np.zeros((100, 2)))
  with pytest.raises(TooFewSamplesError, match="at least one clip"):
    lipsync.mean_scores([])
