"""Speech-like audio from a viseme inventory, with the exact mouth shape under every video frame.

A talking-face model must learn which sounds move the lips how; real corpora
give that only through noisy landmark trackers. Here a script of viseme
segments (what the lips do, and for how long) drives both the sound and the
mouth, so the audio–mouth alignment is exact by construction.

Visemes (`VISEMES`): silence, three vowel classes (open a, spread i/e,
rounded o/u) and two lip consonants (closed p/b/m, labiodental f/v).
`random_script` strings them into syllables: silence at both ends,
consonant–vowel alternation, 60–250 ms segments, some pauses.

Sound (`synthesize_utterance`), a source–filter voice, all numpy/scipy:
- voiced source: a Rosenberg glottal pulse at the speaker's pitch with a
  slow phrase melody (declination plus random bumps) and jitter,
  differentiated (lip radiation), plus breath noise in the open phase;
- vocal tract: three cascaded second-order resonators (Klatt's form) whose
  formant frequencies glide between the segments' targets, scaled by the
  speaker's vocal-tract length (`formant_scale`), updated every 5 ms;
- closed lips: a silent closure then a noise burst (p), a weak voice bar
  then a burst (b), or a nasal murmur (m); labiodentals: band-passed
  frication noise, voiced for v; silence: a −80 dBFS noise floor (never
  exact zeros, so features never take the log of 0).
Gains change through 20-ms Hann ramps, bursts through 2-ms attacks: no clicks.

Mouth (`mouth_trajectory`): every segment's (opening, width, rounding)
target (`MOUTH_TARGETS`) sits at its centre (vowels) or is held over its
middle (consonants, silence); a monotone cubic (PCHIP) joins them, so the
lips start closing at the vowel before a plosive, reach the target exactly
(closed lips open 0) and never overshoot. Consonants take half their width
and rounding from the next vowel (anticipatory co-articulation: "fu" is
rounded, "fi" spread). Frame i shows the mouth at its centre (i + ½) / fps.

Everything is drawn from the numpy Generator handed in: same seed, same
arrays.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.interpolate
import scipy.signal

VISEMES: tuple[str, ...] = ("silence", "open", "spread", "rounded", "closed", "labiodental")
SILENCE, OPEN, SPREAD, ROUNDED, CLOSED, LABIODENTAL = range(len(VISEMES))
VOWELS = (OPEN, SPREAD, ROUNDED)
CONSONANTS = (CLOSED, LABIODENTAL)
# (opening, width, rounding), each in [0, 1].
MOUTH_TARGETS: dict[str, tuple[float, float, float]] = {
  "silence": (0.05, 0.5, 0.2),
  "open": (0.9, 0.6, 0.1),
  "spread": (0.35, 0.95, 0.0),
  "rounded": (0.45, 0.2, 1.0),
  "closed": (0.0, 0.5, 0.3),
  "labiodental": (0.12, 0.55, 0.1),
}
FPS = 25.0
SAMPLE_RATE = 16000

# Fraction of a segment before its target is reached and after it is left;
# vowels have one target at their centre.
_HOLD = {SILENCE: 0.2, CLOSED: 0.2, LABIODENTAL: 0.25}
# Formants (F1, F2, F3) in Hz of an adult male tract (Peterson & Barney); the
# speaker's formant_scale shortens or lengthens it.
_FORMANTS = {
  SILENCE: (500.0, 1500.0, 2500.0),  # Schwa: the relaxed tract.
  OPEN: (730.0, 1090.0, 2440.0),
  SPREAD: (300.0, 2200.0, 2960.0),
  ROUNDED: (380.0, 850.0, 2300.0),
  CLOSED: (250.0, 1100.0, 2300.0),  # Nasal murmur / voice bar.
  LABIODENTAL: (350.0, 1400.0, 2500.0),
}
_BANDWIDTHS = (80.0, 100.0, 150.0)
# Fixed higher formants (Klatt's defaults: F4, F5 with their bandwidths), the
# same for every viseme: without them the spectrum above F3 falls far faster
# than speech does, and the top mel bands would hold nothing.
_HIGHER_FORMANTS = ((3300.0, 250.0), (3750.0, 200.0))
# Segment lengths (seconds) of the script.
_VOWEL_SECONDS = (0.10, 0.25)
_CONSONANT_SECONDS = {CLOSED: (0.08, 0.14), LABIODENTAL: (0.06, 0.12)}
_PAUSE_SECONDS = (0.12, 0.25)
_LEAD_SECONDS = (0.10, 0.25)
_MIN_TAIL_SECONDS = 0.10
_MIN_SEGMENT_SECONDS = 0.01  # Shortest segment a given script may hold.
_BLOCK_SECONDS = 0.005  # Formant and jitter update interval.
_RAMP_SECONDS = 0.02  # Hann smoothing of the gains.
_NOISE_FLOOR = 1e-4  # -80 dBFS.


class SpeechSynthesisError(ValueError):
  """A speaker, script or length that no utterance can be synthesised from."""


@dataclasses.dataclass(frozen=True)
class Speaker:
  """A voice: its pitch and vocal-tract length, and how it moves and breathes.

  pitch_hz: mean F0 (50–400 Hz). formant_scale: factor on all formant
  frequencies (0.7–1.4; ~1 adult male, ~1.15 adult female). intonation:
  the phrase melody's relative F0 swing (0–0.5). jitter: relative
  cycle-to-cycle F0 perturbation (0–0.1). breathiness: aspiration noise
  relative to voicing (0–1).
  """

  pitch_hz: float
  formant_scale: float
  intonation: float = 0.1
  jitter: float = 0.01
  breathiness: float = 0.1

  def __post_init__(self):
    limits = {
      "pitch_hz": (50.0, 400.0),
      "formant_scale": (0.7, 1.4),
      "intonation": (0.0, 0.5),
      "jitter": (0.0, 0.1),
      "breathiness": (0.0, 1.0),
    }
    for name, (low, high) in limits.items():
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpeechSynthesisError(f"Speaker.{name} must be a number, got {value!r}")
      if not (math.isfinite(value) and low <= value <= high):
        raise SpeechSynthesisError(f"Speaker.{name} must be in [{low}, {high}], got {value!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Utterance:
  """One synthesised utterance and its ground truth.

  audio: (num_samples,) float32, peak ≤ 0.9, num_samples = num_frames ·
  sample_rate / fps exactly. mouth: (num_frames, 3) float32 (opening, width,
  rounding) in [0, 1] at each frame's centre. visemes: (num_frames,) int32
  index into `VISEMES` of the segment under each frame's centre. segments:
  (viseme index, start s, end s), covering [0, seconds).
  """

  audio: np.ndarray
  sample_rate: int
  fps: float
  mouth: np.ndarray
  visemes: np.ndarray
  segments: tuple[tuple[int, float, float], ...]

  @property
  def num_frames(self) -> int:
    return int(self.mouth.shape[0])

  @property
  def seconds(self) -> float:
    return self.num_frames / self.fps


def random_speaker(rng: np.random.Generator) -> Speaker:
  """A random adult voice: low-pitched with a long tract, or high-pitched with a short one."""
  if rng.random() < 0.5:
    pitch, scale = rng.uniform(90.0, 150.0), rng.uniform(0.92, 1.05)
  else:
    pitch, scale = rng.uniform(160.0, 250.0), rng.uniform(1.08, 1.2)
  return Speaker(
    pitch_hz=float(pitch),
    formant_scale=float(scale),
    intonation=float(rng.uniform(0.05, 0.15)),
    jitter=float(rng.uniform(0.005, 0.02)),
    breathiness=float(rng.uniform(0.02, 0.25)),
  )


def random_script(rng: np.random.Generator, seconds: float) -> tuple[tuple[int, float, float], ...]:
  """A plausible syllable sequence of (viseme index, start s, end s) covering [0, seconds).

  Silence of 100–250 ms leads and 100–200 ms ends the utterance; between
  them syllables of an optional lip consonant (75%: closed 80–140 ms or
  labiodental 60–120 ms) and a vowel (100–250 ms; never the same vowel twice
  in a row without a consonant or pause between), with a 120–250 ms pause
  before 15% of the syllables after the first. Times are whole milliseconds
  except the end, which is `seconds`. An utterance too short for a syllable
  is silence only.
  """
  total = _checked_seconds(seconds)
  t = min(_ms(rng.uniform(*_LEAD_SECONDS)), total)
  segments = [(SILENCE, 0.0, t)]
  previous_vowel = None
  while True:
    syllable = []
    if segments[-1][0] != SILENCE and rng.random() < 0.15:
      syllable.append((SILENCE, _ms(rng.uniform(*_PAUSE_SECONDS))))
    if rng.random() < 0.75:
      consonant = CLOSED if rng.random() < 0.6 else LABIODENTAL
      syllable.append((consonant, _ms(rng.uniform(*_CONSONANT_SECONDS[consonant]))))
    vowel = _next_vowel(rng, previous_vowel if len(syllable) == 0 else None)
    syllable.append((vowel, _ms(rng.uniform(*_VOWEL_SECONDS))))
    room = total - _MIN_TAIL_SECONDS - t
    if sum(length for _, length in syllable) > room + 1e-9:
      # The last syllable is a bare vowel that fits, if one of at least 100 ms does.
      if room < _VOWEL_SECONDS[0]:
        break
      vowel = _next_vowel(rng, segments[-1][0])
      syllable = [(vowel, min(_VOWEL_SECONDS[1], math.floor(room * 1000 + 1e-6) / 1000))]
    for viseme, length in syllable:
      segments.append((viseme, t, _ms(t + length)))
      t = _ms(t + length)
    previous_vowel = vowel
  if segments[-1][0] == SILENCE:  # No syllable fitted: silence throughout.
    segments[-1] = (SILENCE, segments[-1][1], total)
  elif t < total:
    segments.append((SILENCE, t, total))
  return tuple((int(v), float(start), float(end)) for v, start, end in segments)


def _next_vowel(rng: np.random.Generator, previous: int | None) -> int:
  """A vowel viseme other than `previous` (two equal vowels in a row would be one long one)."""
  return int(rng.choice([v for v in VOWELS if v != previous]))


def mouth_trajectory(
  segments: tuple[tuple[int, float, float], ...], times: np.ndarray
) -> np.ndarray:
  """(len(times), 3) float32 (opening, width, rounding) at `times` seconds, in [0, 1].

  Targets at segment centres (vowels) or held over the middle of the
  segment (consonants and silence: from 20–25% of it to its mirror), joined
  by a monotone cubic; consonants borrow half their width and rounding
  from the next vowel.
  """
  key_times, key_values = [], []
  for k, (viseme, start, end) in enumerate(segments):
    target = np.array(MOUTH_TARGETS[VISEMES[viseme]], dtype=np.float64)
    following = segments[k + 1][0] if k + 1 < len(segments) else None
    if viseme in CONSONANTS and following in VOWELS:
      target[1:] = 0.5 * target[1:] + 0.5 * np.array(MOUTH_TARGETS[VISEMES[following]][1:])
    length = end - start
    if viseme in VOWELS:
      times_here = [start + 0.5 * length]
    else:
      times_here = [start + _HOLD[viseme] * length, end - _HOLD[viseme] * length]
    for key in times_here:
      key_times.append(key)
      key_values.append(target)
  # Hold the first and last targets to the utterance's ends.
  key_times = [segments[0][1], *key_times, segments[-1][2]]
  key_values = [key_values[0], *key_values, key_values[-1]]
  key_times, unique = np.unique(np.asarray(key_times), return_index=True)
  curve = scipy.interpolate.PchipInterpolator(key_times, np.asarray(key_values)[unique], axis=0)
  times = np.clip(np.asarray(times, dtype=np.float64), key_times[0], key_times[-1])
  return np.clip(curve(times), 0.0, 1.0).astype(np.float32)


def synthesize_utterance(
  rng: np.random.Generator,
  speaker: Speaker,
  seconds: float = 3.0,
  *,
  sample_rate: int = SAMPLE_RATE,
  fps: float = FPS,
  script: tuple[tuple[int, float, float], ...] | None = None,
) -> Utterance:
  """An utterance of `seconds` (a whole number of frames) by `speaker`.

  `script` (default: `random_script(rng, seconds)`) is a sequence of
  (viseme index, start s, end s) covering [0, seconds) without gaps. The
  audio and the per-frame mouth and visemes come from the same segment
  times, so they align exactly.
  """
  if not isinstance(speaker, Speaker):
    raise SpeechSynthesisError(f"speaker must be a Speaker, got {type(speaker).__name__}")
  total = _checked_seconds(seconds)
  if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
    raise SpeechSynthesisError(f"sample_rate must be an int, got {sample_rate!r}")
  if not 8000 <= sample_rate <= 96000:
    raise SpeechSynthesisError(f"sample_rate must be in [8000, 96000] Hz, got {sample_rate}")
  if isinstance(fps, bool) or not (
    isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0
  ):
    raise SpeechSynthesisError(f"fps must be a positive number, got {fps!r}")
  num_frames = round(total * fps)
  samples_per_frame = sample_rate / fps
  if abs(num_frames - total * fps) > 1e-6 or num_frames < 1:
    raise SpeechSynthesisError(
      f"seconds must be a whole number of video frames at fps={fps}, got {seconds!r} "
      f"({total * fps:g} frames)"
    )
  if samples_per_frame != round(samples_per_frame):
    raise SpeechSynthesisError(
      f"sample_rate / fps must be a whole number of samples per frame, got "
      f"{sample_rate} / {fps} = {samples_per_frame:g}"
    )
  segments = random_script(rng, total) if script is None else _checked_script(script, total)
  num_samples = num_frames * int(samples_per_frame)
  audio = _render_audio(rng, speaker, segments, num_samples, sample_rate)
  centres = (np.arange(num_frames) + 0.5) / fps
  starts = np.array([start for _, start, _ in segments])
  under = np.searchsorted(starts, centres, side="right") - 1
  visemes = np.array([segments[i][0] for i in under], dtype=np.int32)
  return Utterance(
    audio=audio,
    sample_rate=int(sample_rate),
    fps=float(fps),
    mouth=mouth_trajectory(segments, centres),
    visemes=visemes,
    segments=segments,
  )


def _render_audio(
  rng: np.random.Generator,
  speaker: Speaker,
  segments: tuple[tuple[int, float, float], ...],
  num_samples: int,
  sample_rate: int,
) -> np.ndarray:
  """The mixed waveform: voice, frication and bursts under their gains, peak-normalised."""
  voiced_gain, fricative_gain, bursts = _segment_gains(rng, segments)
  bounds = [round(start * sample_rate) for _, start, _ in segments] + [num_samples]
  ramp = _ramp(sample_rate)
  voiced = _smoothed_steps(voiced_gain, bounds, ramp)
  fricative = _smoothed_steps(fricative_gain, bounds, ramp)
  burst = _burst_envelope(bursts, num_samples, sample_rate)

  voice = _voice(rng, speaker, segments, num_samples, sample_rate)
  hiss = scipy.signal.sosfilt(
    scipy.signal.butter(4, [2500.0, 7000.0], btype="bandpass", fs=sample_rate, output="sos"),
    rng.standard_normal(num_samples),
  )
  pop = scipy.signal.sosfilt(
    scipy.signal.butter(2, 800.0, btype="highpass", fs=sample_rate, output="sos"),
    rng.standard_normal(num_samples),
  )
  mix = voiced * _unit_rms(voice) + fricative * _unit_rms(hiss) + burst * _unit_rms(pop)
  peak = float(np.max(np.abs(mix)))
  level = rng.uniform(0.5, 0.89)
  if peak > 0:
    mix = mix * (level / peak)
  floor = _NOISE_FLOOR * rng.standard_normal(num_samples)
  return np.clip(mix + floor, -0.9, 0.9).astype(np.float32)


def _segment_gains(rng, segments):
  """Per segment: voicing and frication gains; bursts as (time s, amplitude)."""
  voiced, fricative, bursts = [], [], []
  for viseme, _, end in segments:
    v = f = 0.0
    if viseme in VOWELS:
      v = rng.uniform(0.7, 1.0)  # Syllable stress.
    elif viseme == CLOSED:
      kind = rng.choice(3)  # p, b, m
      v = (0.0, 0.06, 0.25)[kind]
      if kind < 2:
        bursts.append((end, (0.5, 0.35)[kind]))
    elif viseme == LABIODENTAL:
      voiced_fricative = rng.random() < 0.5  # v, else f
      v, f = (0.3, 0.2) if voiced_fricative else (0.0, 0.35)
    voiced.append(v)
    fricative.append(f)
  return voiced, fricative, bursts


def _voice(rng, speaker, segments, num_samples, sample_rate) -> np.ndarray:
  """Glottal source through three formant resonators that glide between segment targets."""
  block = max(1, round(_BLOCK_SECONDS * sample_rate))
  num_blocks = -(-num_samples // block)
  block_times = (np.arange(num_blocks) + 0.5) * block / sample_rate
  source = _glottal_source(rng, speaker, num_samples, sample_rate, block_times)
  key_times, key_formants = _formant_keys(segments)
  tract = source
  for k, bandwidth in enumerate(_BANDWIDTHS):
    track = np.interp(block_times, key_times, key_formants[:, k]) * speaker.formant_scale
    tract = _resonate(tract, track, bandwidth, sample_rate, block)
  for frequency, bandwidth in _HIGHER_FORMANTS:
    track = np.full(1, frequency * speaker.formant_scale)
    tract = _resonate(tract, track, bandwidth, sample_rate, num_samples)
  return tract


def _glottal_source(rng, speaker, num_samples, sample_rate, block_times) -> np.ndarray:
  """Rosenberg pulses' derivative at a moving F0, plus breath noise in the open phase."""
  t = np.arange(num_samples) / sample_rate
  duration = num_samples / sample_rate
  declination = 0.5 - t / duration  # Phrases fall in pitch.
  rates = rng.uniform(0.7, 2.0, size=2)
  phases = rng.uniform(0.0, 2.0 * np.pi, size=2)
  bumps = 0.25 * np.sin(2 * np.pi * rates[:, None] * t + phases[:, None]).sum(axis=0)
  wobble = np.interp(t, block_times, rng.standard_normal(block_times.size))
  f0 = speaker.pitch_hz * (1.0 + speaker.intonation * (declination + bumps))
  f0 = f0 * (1.0 + speaker.jitter * wobble)
  cycle = (rng.random() + np.cumsum(f0 / sample_rate)) % 1.0
  open_quotient = 0.6 + 0.2 * speaker.breathiness
  rise, fall = 0.7 * open_quotient, 0.3 * open_quotient
  flow = np.where(
    cycle < rise,
    0.5 * (1.0 - np.cos(np.pi * cycle / rise)),
    np.where(cycle < rise + fall, np.cos(0.5 * np.pi * (cycle - rise) / fall), 0.0),
  )
  pulses = _unit_rms(np.diff(flow, prepend=flow[0]))
  breath = rng.standard_normal(num_samples) * np.where(cycle < open_quotient, 1.0, 0.3)
  return pulses + speaker.breathiness * breath


def _formant_keys(segments) -> tuple[np.ndarray, np.ndarray]:
  """Formant targets at segment centres; consonants take F2, F3 halfway to the next vowel's."""
  times, formants = [], []
  for k, (viseme, start, end) in enumerate(segments):
    target = np.array(_FORMANTS[viseme])
    following = segments[k + 1][0] if k + 1 < len(segments) else None
    if viseme in CONSONANTS and following in VOWELS:
      target[1:] = 0.5 * target[1:] + 0.5 * np.array(_FORMANTS[following][1:])
    times.append(0.5 * (start + end))
    formants.append(target)
  return np.asarray(times), np.asarray(formants)


def _resonate(x, frequencies, bandwidth, sample_rate, block) -> np.ndarray:
  """Klatt's resonator (unit gain at 0 Hz) with its frequency updated every `block` samples.

  The state carried between blocks is rebuilt from the last two outputs for
  the new coefficients, so the filter behaves as one direct-form-I recursion.
  """
  period = 1.0 / sample_rate
  c = -np.exp(-2.0 * np.pi * bandwidth * period)
  b = 2.0 * np.exp(-np.pi * bandwidth * period) * np.cos(2.0 * np.pi * frequencies * period)
  a = 1.0 - b - c
  out = np.empty_like(x)
  last, before = 0.0, 0.0
  for k in range(frequencies.size):
    span = slice(k * block, min((k + 1) * block, x.size))
    a1, a2 = -b[k], -c
    y, _ = scipy.signal.lfilter(
      [a[k]], [1.0, a1, a2], x[span], zi=[-a1 * last - a2 * before, -a2 * last]
    )
    out[span] = y
    before, last = (y[-2], y[-1]) if y.size > 1 else (last, y[-1])
  return out


def _smoothed_steps(gains, bounds, ramp) -> np.ndarray:
  steps = np.repeat(np.asarray(gains, dtype=np.float64), np.diff(bounds))
  return scipy.signal.fftconvolve(steps, ramp, mode="same")


def _ramp(sample_rate) -> np.ndarray:
  window = np.hanning(max(3, round(_RAMP_SECONDS * sample_rate)))
  return window / window.sum()


def _burst_envelope(bursts, num_samples, sample_rate) -> np.ndarray:
  """Releases: a 2-ms raised-cosine attack at the segment's end, then a 6-ms exponential decay."""
  envelope = np.zeros(num_samples)
  attack = max(2, round(0.002 * sample_rate))
  length = round(0.03 * sample_rate)
  shape = np.concatenate(
    [
      0.5 * (1.0 - np.cos(np.pi * np.arange(attack) / attack)),
      np.exp(-np.arange(length) / (0.006 * sample_rate)),
    ]
  )
  for time, amplitude in bursts:
    start = round(time * sample_rate) - attack
    stop = min(num_samples, start + shape.size)
    if 0 <= start < stop:
      envelope[start:stop] += amplitude * shape[: stop - start]
  return envelope


def _unit_rms(x: np.ndarray) -> np.ndarray:
  rms = float(np.sqrt(np.mean(np.square(x))))
  return x / rms if rms > 0 else x


def _checked_seconds(seconds: float) -> float:
  if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)):
    raise SpeechSynthesisError(f"seconds must be a positive number, got {seconds!r}")
  if not (math.isfinite(seconds) and seconds > 0):
    raise SpeechSynthesisError(f"seconds must be a positive number, got {seconds!r}")
  return float(seconds)


def _checked_script(script, total: float) -> tuple[tuple[int, float, float], ...]:
  """`script` as a tuple of (int, float, float) covering [0, total) without gaps, or a named error."""
  try:
    segments = tuple((int(v), float(start), float(end)) for v, start, end in script)
  except (TypeError, ValueError) as error:
    raise SpeechSynthesisError(
      f"script must be a sequence of (viseme index, start s, end s), got {script!r}"
    ) from error
  if not segments:
    raise SpeechSynthesisError("script must hold at least one segment, got none")
  time = 0.0
  for k, (viseme, start, end) in enumerate(segments):
    if not 0 <= viseme < len(VISEMES):
      raise SpeechSynthesisError(
        f"script[{k}] has viseme index {viseme}, expected 0..{len(VISEMES) - 1} ({VISEMES})"
      )
    if abs(start - time) > 1e-6 or end - start < _MIN_SEGMENT_SECONDS:
      raise SpeechSynthesisError(
        f"script[{k}] = {segments[k]} must start where the previous segment ends ({time:g} s) "
        f"and last at least {_MIN_SEGMENT_SECONDS} s"
      )
    time = end
  if abs(time - total) > 1e-6:
    raise SpeechSynthesisError(f"script must end at seconds={total:g}, got an end of {time:g} s")
  return segments


def _ms(seconds: float) -> float:
  return round(float(seconds), 3)
