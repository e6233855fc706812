"""Embedded synthetic music: seeded solo piano (YouTubeMix stand-in) and piano/bass/drums trio (BigBand).

Deterministic from (style, seed, clip index) and written as 16 kHz WAV files, then prepared like any
folder; never downloads, never uses global random state.

Music: each clip picks a major key, a tempo and a four-bar diatonic chord progression; a melody
built from chord tones and scale steps repeats as an A A B A form (piano), or a walking bass,
swung ride cymbal and syncopated piano chords repeat every bar (trio). A note is
  s(t) = sum_h a_h sin(2 pi f_h t) (0.7 e^(-t/tau_h) + 0.3 e^(-t/(4 tau_h))),
  f_h = h f_0 sqrt(1 + B h^2) (piano string inharmonicity), a_h = h^-1.3, tau_h = tau_1 h^-0.8,
with a 4 ms attack and an 80 ms release after the note's end; drums are decaying noise and sweeps.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from study.data.cache import build_once

TOY_SAMPLE_RATE = 16000
GENERATOR_VERSION = 1  # bump when the generated audio changes
STYLES = ("piano", "trio")
MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
PIANO_PROGRESSIONS = ([0, 4, 5, 3], [0, 5, 3, 4], [0, 3, 4, 0], [5, 3, 0, 4], [0, 5, 1, 4])
TRIO_PROGRESSIONS = ([1, 4, 0, 5], [0, 5, 1, 4], [0, 3, 1, 4], [2, 5, 1, 4])
TEMPOS_BPM = (84, 96, 108, 120)
RELEASE_SECONDS = 0.08
TEMPLATE_SECONDS = 3.0


def midi_frequency(midi: float) -> float:
    """Equal temperament: f = 440 * 2^((midi - 69) / 12) Hz."""
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def scale_midi(key_midi: int, degree: int) -> int:
    """MIDI note of a major-scale degree (any integer; 7 is the octave) above key_midi."""
    octave, step = divmod(degree, 7)
    return key_midi + 12 * octave + int(MAJOR_SCALE[step])


@dataclass
class Renderer:
    """Caches one decaying template per instrument and pitch and one release envelope per length."""

    sample_rate: int = TOY_SAMPLE_RATE
    templates: dict = field(default_factory=dict)
    envelopes: dict = field(default_factory=dict)

    def tone(self, midi: int, instrument: str) -> np.ndarray:
        key = (instrument, midi)
        if key not in self.templates:
            self.templates[key] = self._render_tone(midi, instrument)
        return self.templates[key]

    def _render_tone(self, midi: int, instrument: str) -> np.ndarray:
        rate = self.sample_rate
        f0 = midi_frequency(midi)
        t = np.arange(int(TEMPLATE_SECONDS * rate), dtype=np.float32) / rate
        if instrument == "piano":
            partials, inharmonicity = 8, 1.5e-4 * (f0 / 261.6)
            tau = float(np.clip(1.4 * (261.6 / f0) ** 0.5, 0.35, 3.0))
        else:  # bass: fewer partials, a plucked decay
            partials, inharmonicity, tau = 6, 0.0, 0.9
        h = np.arange(1, partials + 1, dtype=np.float32)[:, None]
        frequency = h * f0 * np.sqrt(1 + inharmonicity * h**2)
        amplitude = h**-2.0 * (frequency < 0.45 * rate)
        tau_h = tau * h**-1.0
        decay = 0.7 * np.exp(-t / tau_h) + 0.3 * np.exp(-t / (4 * tau_h))
        wave = (amplitude * decay * np.sin(2 * np.pi * frequency * t)).sum(axis=0)
        attack = np.minimum(t / 0.004, 1.0)
        return (wave * attack / amplitude.sum()).astype(np.float32)

    def envelope(self, hold_samples: int) -> np.ndarray:
        """1 while the key is held, then exp(-t / 80 ms); length hold + 4 release time constants."""
        if hold_samples not in self.envelopes:
            release = int(4 * RELEASE_SECONDS * self.sample_rate)
            tail = np.exp(-np.arange(release, dtype=np.float32) / (RELEASE_SECONDS * self.sample_rate))
            self.envelopes[hold_samples] = np.concatenate([np.ones(hold_samples, np.float32), tail])
        return self.envelopes[hold_samples]

    def add_note(self, buffer: np.ndarray, start_seconds: float, hold_seconds: float, midi: int,
                 velocity: float, instrument: str = "piano") -> None:
        start = int(round(start_seconds * self.sample_rate))
        if start >= len(buffer):
            return
        template = self.tone(midi, instrument)
        envelope = self.envelope(min(int(hold_seconds * self.sample_rate), len(template) // 2))
        length = min(len(envelope), len(template), len(buffer) - start)
        buffer[start:start + length] += velocity * template[:length] * envelope[:length]

    @staticmethod
    def add_hit(buffer: np.ndarray, start: int, hit: np.ndarray, velocity: float) -> None:
        if start < len(buffer):
            length = min(len(hit), len(buffer) - start)
            buffer[start:start + length] += velocity * hit[:length]


def drum_kit(seed: int, sample_rate: int = TOY_SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Kick (110 -> 45 Hz sweep), snare (noise + 190 Hz), ride and hi-hat (high-passed noise + pings)."""
    rng = np.random.default_rng([seed, 7919])
    t = np.arange(int(0.6 * sample_rate), dtype=np.float32) / sample_rate
    sweep = 45 + 65 * np.exp(-t / 0.03)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-t / 0.18)
    noise = rng.standard_normal(len(t)).astype(np.float32)
    bright = np.diff(noise, 2, prepend=[0, 0]) / 4
    snare = 0.6 * noise * np.exp(-t / 0.07) + 0.6 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05)
    pings = sum(np.sin(2 * np.pi * f * t) for f in (3150.0, 4730.0, 5910.0)) / 3
    ride = (0.5 * bright + 0.3 * pings) * np.exp(-t / 0.2)
    hat = bright * np.exp(-t / 0.025)
    return {name: hit.astype(np.float32) for name, hit in
            {"kick": kick, "snare": snare, "ride": ride, "hat": hat}.items()}


def _chord_degrees(root_degree: int, sevenths: bool) -> list[int]:
    return [root_degree, root_degree + 2, root_degree + 4] + ([root_degree + 6] if sevenths else [])


def _melody_phrase(rng: np.random.Generator, progression: list[int]) -> list[tuple[float, float, int]]:
    """One pass of the progression: (start beat, length beats, scale degree) notes, 4 beats a bar."""
    rhythms = ([1, 1, 1, 1], [1.5, 0.5, 1, 1], [0.5, 0.5, 1, 2], [1, 0.5, 0.5, 2], [2, 1, 1], [0.5] * 8)
    notes, degree = [], 7 + int(rng.integers(0, 5))
    for bar, chord_root in enumerate(progression):
        chord = [d + 7 for d in _chord_degrees(chord_root, False)]
        beat = 0.0
        for index, length in enumerate(rhythms[int(rng.integers(len(rhythms)))]):
            if index == 0 or rng.random() < 0.35:  # strong beats and some others land on a chord tone
                degree = min(chord, key=lambda d: abs(d - degree) + 0.5 * rng.random())
            else:
                degree = int(np.clip(degree + rng.choice([-2, -1, -1, 1, 1, 2]), 4, 14))
            notes.append((4 * bar + beat, length, degree))
            beat += length
    return notes


def render_piano(rng: np.random.Generator, seconds: float, renderer: Renderer) -> np.ndarray:
    rate = renderer.sample_rate
    key = 50 + int(rng.integers(0, 12))
    beat = 60.0 / TEMPOS_BPM[int(rng.integers(len(TEMPOS_BPM)))]
    progression = PIANO_PROGRESSIONS[int(rng.integers(len(PIANO_PROGRESSIONS)))]
    phrase_a, phrase_b = _melody_phrase(rng, progression), _melody_phrase(rng, progression)
    accompaniment = int(rng.integers(3))  # 0 block chords, 1 Alberti bass, 2 bass note + chords
    buffer = np.zeros(int(seconds * rate) + 1, np.float32)
    bars = int(np.ceil(seconds / (4 * beat)))
    for cycle in range(int(np.ceil(bars / 4))):
        phrase = phrase_b if cycle % 4 == 2 else phrase_a
        origin = 16 * cycle * beat
        for start, length, degree in phrase:
            velocity = 0.55 + 0.1 * rng.random()
            renderer.add_note(buffer, origin + start * beat, length * beat * 0.95, scale_midi(key, degree), velocity)
        for bar, chord_root in enumerate(progression):
            bar_start = origin + 4 * bar * beat
            low = [scale_midi(key - 12, d) for d in _chord_degrees(chord_root, False)]
            if accompaniment == 0:
                for half in (0, 2):
                    for midi in low:
                        renderer.add_note(buffer, bar_start + half * beat, 1.9 * beat, midi, 0.22)
            elif accompaniment == 1:
                for step, index in enumerate([0, 2, 1, 2, 0, 2, 1, 2]):
                    renderer.add_note(buffer, bar_start + step * beat / 2, 0.5 * beat, low[index], 0.28)
            else:
                renderer.add_note(buffer, bar_start, 3.8 * beat, low[0] - 12, 0.35)
                for quarter in (1, 2, 3):
                    for midi in low[1:]:
                        renderer.add_note(buffer, bar_start + quarter * beat, 0.8 * beat, midi, 0.16)
    return buffer[: int(seconds * rate)]


def render_trio(rng: np.random.Generator, seconds: float, renderer: Renderer, kit: dict) -> np.ndarray:
    rate = renderer.sample_rate
    key = 48 + int(rng.integers(0, 12))
    beat = 60.0 / TEMPOS_BPM[int(rng.integers(len(TEMPOS_BPM)))]
    swing = 2 / 3  # the off-beat eighth lands two thirds into the beat
    progression = TRIO_PROGRESSIONS[int(rng.integers(len(TRIO_PROGRESSIONS)))]
    comp_rhythm = ([1 + swing, 3], [0, 1 + swing], [1, 2 + swing])[int(rng.integers(3))]
    piano = np.zeros(int(seconds * rate) + 1, np.float32)
    bass = np.zeros_like(piano)
    drums = np.zeros_like(piano)
    bars = int(np.ceil(seconds / (4 * beat)))
    for bar in range(bars):
        chord_root = progression[bar % 4]
        next_root = progression[(bar + 1) % 4]
        bar_start = 4 * bar * beat
        # walking bass: root, two chord tones or scale steps, then a step into the next root
        root = scale_midi(key - 12, chord_root)
        target = scale_midi(key - 12, next_root)
        walk = [root, scale_midi(key - 12, chord_root + int(rng.choice([1, 2]))),
                scale_midi(key - 12, chord_root + int(rng.choice([2, 4]))), target + int(rng.choice([-1, 1]))]
        for quarter, midi in enumerate(walk):
            renderer.add_note(bass, bar_start + quarter * beat, 0.9 * beat, midi, 0.9, "bass")
        voicing = [scale_midi(key, d) for d in _chord_degrees(chord_root, True)[1:]]
        for hit in comp_rhythm:
            for midi in voicing:
                renderer.add_note(piano, bar_start + hit * beat, 0.45 * beat, midi, 0.3)
        for quarter in range(4):
            at = bar_start + quarter * beat
            renderer.add_hit(drums, int(at * rate), kit["ride"], 0.35)
            if quarter in (1, 3):
                renderer.add_hit(drums, int((at + swing * beat) * rate), kit["ride"], 0.35)
                renderer.add_hit(drums, int(at * rate), kit["hat"], 0.5)
            if quarter in (0, 2):
                renderer.add_hit(drums, int(at * rate), kit["kick"], 0.6)
        if bar % 4 == 3:
            renderer.add_hit(drums, int((bar_start + (3 + swing) * beat) * rate), kit["snare"], 0.4)
    mix = 0.55 * piano + 0.8 * bass + 0.45 * drums
    return mix[: int(seconds * rate)]


def generate_clip(style: str, seed: int, clip_index: int, seconds: float,
                  renderer: Renderer | None = None) -> np.ndarray:
    """One clip, float32 in [-0.9, 0.9] at 16 kHz, a pure function of (style, seed, clip_index, seconds)."""
    if style not in STYLES:
        raise ValueError(f"toy style {style!r} is not one of {STYLES}")
    renderer = renderer or Renderer()
    rng = np.random.default_rng([seed, clip_index, STYLES.index(style)])
    if style == "piano":
        audio = render_piano(rng, seconds, renderer)
    else:
        audio = render_trio(rng, seconds, renderer, drum_kit(seed, renderer.sample_rate))
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    return (audio * (0.9 / peak) if peak > 0 else audio).astype(np.float32)


def write_toy_set(style: str, folder: Path, clips: int, seconds: float, seed: int) -> list[Path]:
    """Write clip-000.wav ... as 16-bit 16 kHz WAV files into `folder` (which must exist)."""
    renderer = Renderer()
    paths = []
    for index in range(clips):
        path = folder / f"clip-{index:03d}.wav"
        soundfile.write(str(path), generate_clip(style, seed, index, seconds, renderer), TOY_SAMPLE_RATE,
                        subtype="PCM_16")
        paths.append(path)
    return paths


def toy_folder(cache_root: Path, style: str, clips: int, seconds: float, seed: int) -> Path:
    """The folder of a toy set under <cache_root>/toy-sources/, generated once (atomically) if missing."""
    tag = f"toy-{style}-v{GENERATOR_VERSION}-seed{seed}-{clips}x{seconds:g}s"
    target = cache_root / "toy-sources" / tag
    build_once(target, lambda temporary: write_toy_set(style, temporary, clips, seconds, seed))
    return target
