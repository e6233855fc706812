"""Generated audio examples for reports: every *.wav under a folder, optional labels from any
manifest.json beside it (e.g. prompt_seconds, the prompt/continuation boundary), and spectrograms.

The manifest `study generate` writes is read by its format; any other is read leniently: a file is
never skipped for lacking a manifest entry, and an unreadable manifest only adds a note.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

MANIFEST_FILE = "manifest.json"
PROMPT_KEYS = ("prompt_seconds", "prompt_length_seconds", "prompt_duration_seconds")
LABEL_KEYS = ("label", "title", "name")
GENERIC_FILE_KEYS = ("file", "files", "path", "paths", "wav", "audio", "filename", "examples", "samples", "items")
GENERATION_FORMAT = "sashimi-study/generation/"   # the prefix of `study generate`'s manifest format
SETTING_NAMES = {"temperature": "temperature", "top_p": "top-p", "top_k": "top-k", "seed": "seed"}


@dataclass
class Example:
    """One WAV file: where it is, what it is called, how long, and what its manifest says about it."""
    path: Path
    label: str
    sample_rate: int
    seconds: float
    channels: int
    prompt_seconds: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def settings(self) -> str:
        """The sampling settings in short, e.g. 'temperature 0.9, top-p 0.95, rank 1 of 2'."""
        shown = {key: self.details[key] for key in SETTING_NAMES if key in self.details
                 and not (key == "top_k" and self.details[key] == 0)}           # top-k 0: no cut
        parts = [f"{SETTING_NAMES[key]} {value:g}" if isinstance(value, (int, float)) else f"{SETTING_NAMES[key]} {value}"
                 for key, value in shown.items()]
        if self.details.get("rank") is not None and self.details.get("ranked") is not None:
            parts.append(f"rank {self.details['rank']} of {self.details['ranked']}")
        return ", ".join(parts)


@dataclass
class Spectrogram:
    """Log magnitude in dB relative to the loudest bin: decibels[frequency, frame]."""
    times_seconds: np.ndarray
    frequencies_hz: np.ndarray
    decibels: np.ndarray


def continuation_only(role: str) -> bool:
    """True for a file that holds only the generated part (so a prompt boundary does not apply)."""
    role = role.lower()
    return ("continuation" in role or "generated" in role) and "prompt" not in role


def role_text(role: str) -> str:
    """A manifest role in words: 'prompt + continuation', 'continuation only', 'prompt', 'real continuation'."""
    lowered = role.lower()
    if "reference" in lowered or "real" in lowered:
        return "real continuation"
    if continuation_only(lowered):
        return "continuation only"
    if "prompt" in lowered and ("continuation" in lowered or "generated" in lowered):
        return "prompt + continuation"
    return "prompt" if "prompt" in lowered else role


def generation_entries(manifest: dict, base: Path) -> dict[Path, dict]:
    """{wav path: fields} from the manifest `study generate` writes: each prompt and its real
    continuation, and per continuation the prompt + continuation file (with the prompt's length in
    seconds, where the boundary is drawn) and the continuation alone."""
    settings = manifest.get("settings") or {}
    short = {key: settings[key] for key in SETTING_NAMES if key in settings}
    prompts = [prompt for prompt in manifest.get("prompts") or [] if isinstance(prompt, dict)]
    continuations = [item for item in manifest.get("continuations") or [] if isinstance(item, dict)]
    found: dict[Path, dict] = {}
    for prompt in prompts:
        name = str(prompt.get("name", "prompt"))
        if _is_wav(prompt.get("file")):
            found[(base / prompt["file"]).resolve()] = {"label": name, "role": "prompt"}
        if _is_wav(prompt.get("reference_file")):
            found[(base / prompt["reference_file"]).resolve()] = {"label": name, "role": "real continuation"}
    for item in continuations:
        files = item.get("files") or {}
        index = item.get("prompt")
        prompt = prompts[index] if isinstance(index, int) and 0 <= index < len(prompts) else {}
        length = prompt.get("seconds") if prompt.get("file") else None  # no prompt audio: unconditional
        fields = {"label": str(item.get("id", "continuation")), **short, "rank": item.get("rank"),
                  "ranked": len(continuations)}
        if _is_wav(files.get("audio")):
            found[(base / files["audio"]).resolve()] = {**fields, "role": "prompt + continuation",
                                                         **({"prompt_seconds": length} if length else {})}
        if _is_wav(files.get("continuation")):
            found[(base / files["continuation"]).resolve()] = {**fields, "role": "continuation only"}
    return found


def _is_wav(value) -> bool:
    return isinstance(value, str) and value.lower().endswith(".wav")


def manifest_entries(manifest, base: Path) -> dict[Path, dict]:
    """{wav path: fields} from a manifest: every string ending in .wav names a file, its siblings label it.

    The key naming a file is its role ('continuation', 'prompt_continuation'), except generic keys
    such as 'file' or 'path'; scalars of enclosing objects are inherited (e.g. a shared prompt_seconds).
    """
    found: dict[Path, dict] = {}

    def scalars_of(node: dict, inherited: dict) -> dict:
        own = {key: value for key, value in node.items() if not isinstance(value, (dict, list)) and not _is_wav(value)}
        return {**inherited, **own}

    def visit(node, inherited: dict, role: str) -> None:
        if isinstance(node, list):
            for item in node:
                if _is_wav(item):
                    found[(base / item).resolve()] = {**inherited, "role": role}
                else:
                    visit(item, inherited, role)
            return
        if not isinstance(node, dict):
            return
        scalars = scalars_of(node, inherited)
        for key, value in node.items():
            key_role = "" if key.lower() in GENERIC_FILE_KEYS else key
            if _is_wav(value):
                found[(base / value).resolve()] = {**scalars, "role": key_role or role}
            elif _is_wav(key) and isinstance(value, dict):
                found[(base / key).resolve()] = {**scalars_of(value, scalars), "role": value.get("role", role)}
            elif isinstance(value, (dict, list)):
                visit(value, scalars, key_role if isinstance(value, list) and key_role else role)

    visit(manifest, {}, "")
    return found


def read_manifests(folder: Path, notes: list[str]) -> dict[Path, dict]:
    """Entries of every manifest.json under `folder`, deeper manifests overriding shallower ones."""
    entries: dict[Path, dict] = {}
    for path in sorted(Path(folder).rglob(MANIFEST_FILE), key=lambda p: len(p.parts)):
        try:
            manifest = json.loads(path.read_text())
            generated = isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(GENERATION_FORMAT)
            entries.update((generation_entries if generated else manifest_entries)(manifest, path.parent))
        except (OSError, json.JSONDecodeError) as error:
            notes.append(f"manifest {path} ignored: {error}")
    return entries


def _prompt_seconds(fields: dict, sample_rate: int) -> float | None:
    if continuation_only(str(fields.get("role", ""))):
        return None
    for key in PROMPT_KEYS:
        if isinstance(fields.get(key), (int, float)):
            return float(fields[key])
    if isinstance(fields.get("prompt_samples"), int) and sample_rate:
        return fields["prompt_samples"] / sample_rate
    return None


def find_examples(folder: Path) -> tuple[list[Example], list[str]]:
    """Every *.wav under `folder` (sorted by path) and notes on files or manifests that could not be read."""
    folder, notes = Path(folder), []
    entries = read_manifests(folder, notes)
    examples = []
    listed = {path: index for index, path in enumerate(entries)}  # the manifest's order first, then by path
    paths = sorted(folder.rglob("*.wav")) + sorted(folder.rglob("*.WAV"))
    for path in sorted(paths, key=lambda path: listed.get(path.resolve(), len(listed))):
        try:
            info = soundfile.info(str(path))
        except (RuntimeError, soundfile.LibsndfileError) as error:
            notes.append(f"{path} is not a readable WAV file ({error}); regenerate it")
            continue
        fields = entries.get(path.resolve(), {})
        if continuation_only(path.stem) and "role" not in fields:
            fields = {**fields, "role": path.stem}
        name = next((str(fields[key]) for key in LABEL_KEYS if fields.get(key)), str(path.relative_to(folder)))
        role = role_text(str(fields["role"])) if fields.get("role") else ""
        label = f"{name} ({role})" if role else name
        details = {key: value for key, value in fields.items() if key not in (*LABEL_KEYS, "role")}
        examples.append(Example(path=path, label=label, sample_rate=int(info.samplerate),
                                seconds=float(info.duration), channels=int(info.channels),
                                prompt_seconds=_prompt_seconds({**fields, "role": fields.get("role", path.stem)},
                                                               int(info.samplerate)),
                                details=details))
    return examples, notes


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """The file's samples as float32 mono in [-1, 1] and its sample rate."""
    samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(sample_rate)


def spectrogram(samples: np.ndarray, sample_rate: int, frame_samples: int = 512, hop_samples: int = 128) -> Spectrogram:
    """Short-time Fourier magnitude with a Hann window, in dB re. the maximum, floored at -80 dB."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) < frame_samples:
        samples = np.pad(samples, (0, frame_samples - len(samples)))
    frames = np.lib.stride_tricks.sliding_window_view(samples, frame_samples)[::hop_samples]  # (frames, frame)
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(frame_samples), axis=1)).T  # (bins, frames)
    decibels = 20 * np.log10(np.maximum(magnitude, 1e-10))
    decibels = np.maximum(decibels - decibels.max(), -80.0)
    times = (np.arange(frames.shape[0]) * hop_samples + frame_samples / 2) / sample_rate
    return Spectrogram(times_seconds=times, frequencies_hz=np.fft.rfftfreq(frame_samples, 1 / sample_rate),
                       decibels=decibels)
