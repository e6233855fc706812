"""What a generation produced (`Generation`, `Continuation`) and how it is written: WAVs, spectrograms,
tokens.npz and manifest.json, into a folder that appears only complete. It never overwrites a folder.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

from study.data.cache import file_hash
from study.errors import GenerationError
from study.files import OccupiedError, StagingFolder, write_atomic
from study.generation.prompts import AudioFormat, Prompt

MANIFEST_FORMAT = "sashimi-study/generation/1"
WAV_SUBTYPE = "FLOAT"          # 32-bit float WAV: the decoded tokens exactly


@dataclass
class Continuation:
    prompt: int                  # index into Generation.prompts
    sample: int                  # 0 .. n-1 for its prompt
    stream: int                  # global stream index (its random numbers depend only on seed and this)
    tokens: np.ndarray           # (S,) int64
    logp_model: np.ndarray       # (S,) float64
    logp_sample: np.ndarray      # (S,) float64

    def likelihood(self) -> dict:
        return {"model": {"sum_nats": float(self.logp_model.sum()), "mean_nats": float(self.logp_model.mean())},
                "sampling": {"sum_nats": float(self.logp_sample.sum()), "mean_nats": float(self.logp_sample.mean())}}


@dataclass
class Generation:
    prompts: list[Prompt]
    continuations: list[Continuation]
    prompt_logp: list[np.ndarray]     # per prompt: log p_model of each prompt token given those before
    settings: dict
    timings: dict

    def ranking(self) -> list[int]:
        """Continuation indices by mean model log-likelihood per sample, highest first (ties: stream order)."""
        return sorted(range(len(self.continuations)),
                      key=lambda i: (-self.continuations[i].logp_model.mean(), self.continuations[i].stream))


@dataclass
class Provenance:
    """Where a generation came from, for its manifest."""
    checkpoint: Path
    payload: dict          # the checkpoint's payload (config, model_config, step, epoch)
    audio: AudioFormat
    backend: str           # the engine's describe() after the run (says if CUDA graph capture failed)
    device: str
    precision: str = "fp32"  # storage of the engine's linear weights (fp32 | bf16 | int8 | w8a8)


def staging_folder(output: str | Path) -> StagingFolder:
    """The staging folder for `output`, made now: an occupied or unwritable output fails before any work."""
    try:
        return StagingFolder(output)
    except OccupiedError:
        raise GenerationError(f"output={Path(output).expanduser()} already exists and is not an empty folder; "
                              "choose another output= or move it away (outputs are never overwritten)") from None
    except OSError as error:
        raise GenerationError(f"cannot write output={Path(output).expanduser()}: {error.strerror or error}; choose a "
                              "folder you can write to") from error


def write_outputs(result: Generation, folder: Path, source: Provenance, spectrograms: bool,
                  extra_settings: dict) -> None:
    """Everything of `result` into `folder` (a staging folder: the caller renames it when this returns)."""
    started = time.perf_counter()
    rate = source.audio.sample_rate
    prompts_record = []
    for index, prompt in enumerate(result.prompts):
        record = dict(prompt.info, index=index, source=prompt.source)
        if len(prompt.tokens):
            record["file"] = f"{prompt.name}.wav"
            write_wav(folder / record["file"], source.audio.decode(prompt.tokens), rate)
            logp = result.prompt_logp[index]
            record["log_likelihood"] = {"sum_nats": float(logp.sum()), "mean_nats": float(logp.mean())}
        if prompt.reference is not None and len(prompt.reference):
            record["reference_file"] = f"{prompt.name}-reference.wav"
            write_wav(folder / record["reference_file"],
                      source.audio.decode(prompt.reference[:result.settings["samples"]]), rate)
        prompts_record.append(record)
    ranking = result.ranking()
    rank_of = {index: rank + 1 for rank, index in enumerate(ranking)}
    continuations_record = []
    for index, item in enumerate(result.continuations):
        prompt = result.prompts[item.prompt]
        stem = f"{prompt.name}-sample{item.sample:02d}"
        continuation = source.audio.decode(item.tokens)
        whole = np.concatenate([source.audio.decode(prompt.tokens), continuation])
        files = {"audio": f"{stem}.wav", "continuation": f"{stem}-continuation.wav"}
        write_wav(folder / files["audio"], whole, rate)
        write_wav(folder / files["continuation"], continuation, rate)
        if spectrograms:
            files["spectrogram"] = f"{stem}.png"
            write_spectrogram(folder / files["spectrogram"], whole, rate, len(prompt.tokens) / rate,
                              f"{stem}: mean log-likelihood {item.logp_model.mean():.3f} nats/sample, rank "
                              f"{rank_of[index]} of {len(ranking)}")
        continuations_record.append({"id": stem, "prompt": item.prompt, "sample": item.sample,
                                     "stream": item.stream, "rank": rank_of[index], "files": files,
                                     "log_likelihood": item.likelihood()})
    np.savez_compressed(folder / "tokens.npz",
                        continuation_tokens=np.stack([c.tokens for c in result.continuations]),
                        logp_model=np.stack([c.logp_model for c in result.continuations]),
                        logp_sample=np.stack([c.logp_sample for c in result.continuations]),
                        **{f"{p.name}_tokens": p.tokens for p in result.prompts},
                        **{f"{p.name}_logp_model": lp for p, lp in zip(result.prompts, result.prompt_logp)})
    config = source.payload.get("config") or {}
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {**extra_settings, **result.settings},
        "checkpoint": {"path": str(source.checkpoint.resolve()), "sha256": file_hash(source.checkpoint),
                       "model": source.payload.get("model_config"),
                       **{key: source.payload[key] for key in ("step", "epoch")
                          if isinstance(source.payload.get(key), (int, float))},
                       "experiment": config.get("name")},
        "audio": {**asdict(source.audio), "wav_subtype": WAV_SUBTYPE},
        "backend": source.backend,  # after the run: says if CUDA graph capture failed
        "device": source.device,
        "precision": source.precision,
        "prompts": prompts_record,
        "continuations": continuations_record,
        "ranking": {"by": "mean model log-likelihood per sample (nats, temperature 1, no truncation), "
                          "highest first",
                    "order": [continuations_record[i]["id"] for i in ranking]},
        "timings": {**result.timings, "write_seconds": round(time.perf_counter() - started, 4)},
        "definitions": {
            "log_likelihood.model": "log softmax(logits)[token], temperature 1, all classes",
            "log_likelihood.sampling": "log probability under the distribution sampled (temperature, top-k, "
                                       "top-p)",
            "real_time_factor": "seconds of audio generated per second of wall-clock time (> 1 is faster "
                                "than real time); per stream, and summed over the streams of a batch",
        },
        "warnings": [p.info["warning"] for p in result.prompts if "warning" in p.info],
    }
    write_atomic(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    soundfile.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype=WAV_SUBTYPE)


def write_spectrogram(path: Path, audio: np.ndarray, sample_rate: int, boundary_seconds: float, title: str) -> None:
    """Log-magnitude STFT (1024-point Hann, hop 256) with the prompt/continuation boundary marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signal = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    n_fft = 1024 if len(signal) >= 1024 else max(16, 1 << (len(signal).bit_length() - 1))
    spectrum = torch.stft(signal, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft),
                          return_complex=True, center=True).abs()
    decibels = 20 * torch.log10(spectrum.clamp(min=1e-5))
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    axes.imshow(decibels.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-100, vmax=float(decibels.max()),
                extent=(0, len(signal) / sample_rate, 0, sample_rate / 2))
    if boundary_seconds > 0:
        axes.axvline(boundary_seconds, color="cyan", linewidth=1.5, linestyle="--", label="end of prompt")
        axes.legend(loc="upper right")
    axes.set_xlabel("seconds")
    axes.set_ylabel("Hz")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
