"""Procedural music with exact beats: drums, bass and chords in four genres.

A track is a grid of beats at a constant tempo: bars of 4 beats, phrases of
4 or 8 bars, one intensity per phrase. Genres differ in tempo range (disjoint
ranges inside 80-160 BPM), drum pattern, bass line and chord timbre. Every
beat carries a kick or a snare, so the beats are audible onsets; the other
hits fall between beats. Intensity changes between phrases: hats and bass
enter above the lowest level, sixteenth hats at the highest, and loudness
follows the level.

Instruments, all numpy:
- kick: a sine whose pitch sweeps down exponentially, with a decaying
  amplitude;
- snare: band-passed noise plus a short tonal body;
- hat: high-passed noise with a fast decay;
- bass: a few harmonics of the chord root, plucked;
- chords: additive partials per note with the genre's partial amplitudes and
  decay (soft keys, bright stabs, slow pads, square leads).

Hits start on the nearest sample to their time, so stored beat times are
exact to half a sample. Everything is drawn from the generator handed in.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal

SAMPLE_RATE = 22050
BEATS_PER_BAR = 4
STEPS_PER_BEAT = 4  # Patterns are written on a sixteenth-note grid.
STEPS_PER_BAR = BEATS_PER_BAR * STEPS_PER_BEAT
INTENSITY_LEVELS = (0.3, 0.6, 1.0)
_TABLE_SIZE = 4096  # Samples per period of a chord tone's wavetable.


@dataclasses.dataclass(frozen=True)
class Genre:
  """A style of music: tempo range, drum pattern, bass line and chord timbre.

  Patterns are sixteenth steps of one bar (0-15); beats are steps 0, 4, 8, 12.
  """

  name: str
  bpm: tuple[float, float]
  kick: tuple[int, ...]
  snare: tuple[int, ...]
  hat: tuple[int, ...]
  bass: tuple[tuple[int, int], ...]  # (step, semitones above the bar's chord root)
  chord_steps: tuple[int, ...]
  chord: tuple[int, ...]  # Chord tones, semitones above the root.
  partials: tuple[float, ...]  # Amplitudes of harmonics 1, 2, ... of a chord tone.
  chord_decay: float  # Seconds.
  phrase_bars: tuple[int, ...]


_EIGHTHS = tuple(range(0, STEPS_PER_BAR, 2))

GENRES: tuple[Genre, ...] = (
  Genre(
    name="hiphop",
    bpm=(80.0, 95.0),
    kick=(0, 8, 10),
    snare=(4, 12),
    hat=_EIGHTHS,
    bass=((0, 0), (7, 0), (10, 7)),
    chord_steps=(0,),
    chord=(0, 3, 7, 10),
    partials=(1.0, 0.45, 0.2, 0.1),
    chord_decay=1.5,
    phrase_bars=(4,),
  ),
  Genre(
    name="funk",
    bpm=(100.0, 115.0),
    kick=(0, 3, 8, 11),
    snare=(4, 12),
    hat=tuple(range(STEPS_PER_BAR)),
    bass=((0, 0), (3, 12), (6, 0), (8, 7), (11, 10), (14, 12)),
    chord_steps=(2, 6, 10, 14),
    chord=(0, 4, 7, 10),
    partials=(1.0, 0.8, 0.65, 0.5, 0.4, 0.3),
    chord_decay=0.12,
    phrase_bars=(4, 8),
  ),
  Genre(
    name="house",
    bpm=(120.0, 130.0),
    kick=(0, 4, 8, 12),
    snare=(4, 12),
    hat=(2, 6, 10, 14),
    bass=((2, 0), (6, 0), (10, 0), (14, 7)),
    chord_steps=(0,),
    chord=(0, 4, 7, 11),
    partials=(1.0, 0.25, 0.1),
    chord_decay=3.0,
    phrase_bars=(4, 8),
  ),
  Genre(
    name="breakbeat",
    bpm=(140.0, 160.0),
    kick=(0, 6, 8),
    snare=(4, 12, 15),
    hat=_EIGHTHS,
    bass=((0, 0), (6, 0), (8, 3), (12, 5)),
    chord_steps=(0, 8),
    chord=(0, 3, 7),
    partials=(1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14),
    chord_decay=0.4,
    phrase_bars=(4, 8),
  ),
)
GENRE_NAMES: tuple[str, ...] = tuple(g.name for g in GENRES)

# Chord roots of the four bars of a progression, in semitones above the key.
_PROGRESSIONS = ((0, 5, 7, 5), (0, 8, 3, 10), (0, 3, 8, 7), (0, 0, 5, 7))


@dataclasses.dataclass(frozen=True)
class Track:
  """One synthesised piece of music and its score.

  The beat arrays run one beat past the end of the audio (the first beat at
  or after `seconds`), so a dance can move towards a beat the clip cuts off;
  `beat_times < seconds` selects the audible ones.
  """

  audio: np.ndarray  # (samples,) float32 in [-1, 1].
  sample_rate: int
  genre: int
  bpm: float
  beat_times: np.ndarray  # (B,) float64 seconds.
  beat_in_bar: np.ndarray  # (B,) int32, 0 on a bar's downbeat.
  beat_phrase: np.ndarray  # (B,) int32 phrase index.
  beat_intensity: np.ndarray  # (B,) float32, one of INTENSITY_LEVELS.


def synthesize_track(
  rng: np.random.Generator, seconds: float, sample_rate: int = SAMPLE_RATE, genre: int | None = None
) -> Track:
  """A track of `seconds` of audio; the genre is drawn unless given."""
  if not seconds > 0:
    raise ValueError(f"seconds must be > 0, got {seconds}")
  if sample_rate < 8000:
    raise ValueError(f"sample_rate must be >= 8000 Hz for the hats, got {sample_rate}")
  if genre is None:
    genre = int(rng.integers(len(GENRES)))
  elif not 0 <= genre < len(GENRES):
    raise ValueError(f"genre must be in [0, {len(GENRES)}), got {genre}")
  style = GENRES[genre]
  bpm = float(rng.uniform(*style.bpm))
  beat = 60.0 / bpm
  first_beat = float(rng.uniform(0.1, 0.3))
  num_beats = int(np.floor((seconds - first_beat) / beat)) + 2  # One past the end.
  beat_times = first_beat + beat * np.arange(num_beats)
  beat_in_bar = np.arange(num_beats) % BEATS_PER_BAR
  phrase_of_bar, bar_intensity = _phrases(rng, style, -(-num_beats // BEATS_PER_BAR))
  bars = np.arange(num_beats) // BEATS_PER_BAR

  samples = round(seconds * sample_rate)
  audio = np.zeros(samples + int(4 * sample_rate), np.float64)  # Room for tails.
  key = int(rng.integers(45, 53))  # MIDI root of the chords, A2..C#3 (bass an octave down).
  progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]
  kit = _drum_kit(rng, sample_rate)
  step = beat / STEPS_PER_BEAT
  for bar in range(int(bars[-1]) + 1):
    level = bar_intensity[bar]
    gain = 0.4 + 0.6 * level
    root = key + progression[bar % len(progression)]
    start = first_beat + bar * BEATS_PER_BAR * beat
    hats = style.hat if level < 1.0 else tuple(range(STEPS_PER_BAR))
    layers = [(style.kick, kit["kick"], 1.0), (style.snare, kit["snare"], 0.7)]
    if level > INTENSITY_LEVELS[0]:
      layers.append((hats, kit["hat"], 0.25))
    for steps, sound, volume in layers:
      for s in steps:
        _add(audio, sound, start + s * step, sample_rate, gain * volume)
    if level > INTENSITY_LEVELS[0]:
      for i, (s, interval) in enumerate(style.bass):
        end = style.bass[i + 1][0] if i + 1 < len(style.bass) else STEPS_PER_BAR
        note = _bass_note(_hz(root - 12 + interval), (end - s) * step, sample_rate)
        _add(audio, note, start + s * step, sample_rate, gain * 0.35)
    for i, s in enumerate(style.chord_steps):
      end = style.chord_steps[i + 1] if i + 1 < len(style.chord_steps) else STEPS_PER_BAR
      tones = _chord(
        style, [_hz(root + 12 + t) for t in style.chord], (end - s) * step, sample_rate
      )
      _add(audio, tones, start + s * step, sample_rate, gain * 0.12)
  audio = audio[:samples]
  audio *= 0.9 / max(np.abs(audio).max(), 1e-9)
  return Track(
    audio=audio.astype(np.float32),
    sample_rate=sample_rate,
    genre=genre,
    bpm=bpm,
    beat_times=beat_times,
    beat_in_bar=beat_in_bar.astype(np.int32),
    beat_phrase=phrase_of_bar[bars].astype(np.int32),
    beat_intensity=bar_intensity[bars].astype(np.float32),
  )


def _phrases(rng: np.random.Generator, style: Genre, num_bars: int):
  """Phrase index and intensity of each bar; neighbouring phrases differ in intensity."""
  phrase, intensity = [], []
  level, index = None, 0
  while len(phrase) < num_bars:
    choices = [x for x in INTENSITY_LEVELS if x != level]
    level = choices[rng.integers(len(choices))]
    length = style.phrase_bars[rng.integers(len(style.phrase_bars))]
    phrase += [index] * length
    intensity += [level] * length
    index += 1
  return np.array(phrase[:num_bars]), np.array(intensity[:num_bars])


def _hz(midi: float) -> float:
  return 440.0 * 2.0 ** ((midi - 69) / 12)


def _add(audio: np.ndarray, sound: np.ndarray, time: float, sample_rate: int, gain: float):
  start = round(time * sample_rate)
  end = min(start + len(sound), len(audio))
  audio[start:end] += gain * sound[: end - start]


def _decay(n: int, sample_rate: int, seconds: float) -> np.ndarray:
  return np.exp(-np.arange(n) / (seconds * sample_rate))


def _drum_kit(rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
  """Kick, snare and hat one-shots, slightly different for every track."""
  sr = sample_rate
  n = int(0.35 * sr)
  t = np.arange(n) / sr
  # Kick: pitch falls from ~150 Hz to ~45 Hz within a few tens of milliseconds.
  high, low = rng.uniform(130, 170), rng.uniform(40, 55)
  pitch = low + (high - low) * np.exp(-t / 0.03)
  kick = np.sin(2 * np.pi * np.cumsum(pitch) / sr) * _decay(n, sr, rng.uniform(0.12, 0.2))
  # Snare: noise band-passed around 1-5 kHz plus a 180-220 Hz body.
  n_snare = int(0.25 * sr)
  band = scipy.signal.butter(2, [1000, min(5000, 0.45 * sr)], "bandpass", fs=sr, output="sos")
  noise = scipy.signal.sosfilt(band, rng.standard_normal(n_snare))
  noise /= np.abs(noise).max()
  body = np.sin(2 * np.pi * rng.uniform(180, 220) * np.arange(n_snare) / sr)
  snare = noise * _decay(n_snare, sr, 0.07) + 0.5 * body * _decay(n_snare, sr, 0.04)
  # Hat: noise above 6 kHz (or near Nyquist at low rates), very short.
  n_hat = int(0.08 * sr)
  high_pass = scipy.signal.butter(2, min(6000, 0.3 * sr), "highpass", fs=sr, output="sos")
  hiss = scipy.signal.sosfilt(high_pass, rng.standard_normal(n_hat))
  hat = hiss / np.abs(hiss).max() * _decay(n_hat, sr, rng.uniform(0.015, 0.03))
  return {"kick": kick, "snare": snare, "hat": hat}


def _bass_note(hz: float, seconds: float, sample_rate: int) -> np.ndarray:
  n = int(seconds * sample_rate)
  phase = 2 * np.pi * hz * np.arange(n) / sample_rate
  wave = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
  return wave * _decay(n, sample_rate, 0.25) * _attack(n, sample_rate)


def _chord(style: Genre, notes: list[float], seconds: float, sample_rate: int) -> np.ndarray:
  """Additive synthesis: each note is the genre's partials under its decay.

  One period of a note's partials (those below Nyquist) is tabulated and read
  at the note's phase: the same sum as sines per partial, at a fraction of the cost.
  """
  n = int(seconds * sample_rate)
  t = np.arange(n) / sample_rate
  grid = np.arange(_TABLE_SIZE + 1) / _TABLE_SIZE  # One period, closed.
  harmonics = np.arange(1, len(style.partials) + 1)
  amplitudes = np.asarray(style.partials)
  wave = np.zeros(n)
  for hz in notes:
    audible = harmonics * hz < 0.45 * sample_rate
    table = np.sin(2 * np.pi * grid[:, None] * harmonics[audible]) @ amplitudes[audible]
    position = (hz * t) % 1.0 * _TABLE_SIZE
    index = position.astype(np.int64)
    fraction = position - index
    wave += table[index] * (1 - fraction) + table[index + 1] * fraction
  return wave * _decay(n, sample_rate, style.chord_decay) * _attack(n, sample_rate)


def _attack(n: int, sample_rate: int, seconds: float = 0.005) -> np.ndarray:
  """A few-millisecond linear fade-in (no click), ending in a release at the note's end."""
  rise = np.minimum(1.0, np.arange(n) / (seconds * sample_rate))
  return rise * np.minimum(1.0, np.arange(n)[::-1] / (seconds * sample_rate))
