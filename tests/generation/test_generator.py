"""`study generate` and the Generator API on a tiny checkpoint: prompts from audio files of any rate,
channel count and format, and from dataset windows; the outputs; and every bad input it refuses."""

import json

import numpy as np
import pytest
import soundfile
import torch

from study import cli
from study.training.checkpoint import CheckpointError, model_payload, save_checkpoint
from study.data.audio_io import load_audio
from study.data.quantize import decode, tokenize, zero_token
from study.errors import GenerationError
from study.generation.generator import Generator
from study.generation.sampling import SamplingSettings
from study.sashimi import build_model

RATE = 16000
DATA = {"name": "folder", "source": "folder", "path": None, "repo_id": None, "filename": None, "sample_rate": RATE,
        "clip_seconds": 1, "split": [0.34, 0.33, 0.33], "sample_len": 4096, "bits": 8, "quantization": "mu-law",
        "normalization": "minmax", "quantizer": "official", "seed": 0, "toy_clips": 1, "toy_clip_seconds": 1, "warnings": []}


def main(argv: list[str]) -> int:
    """`study generate ARGV` as the console runs it (the CLI prints errors and sets the exit code)."""
    return cli.main(["generate", *argv])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def music(seconds: float, rate: int, channels: int = 1, level: float = 0.5, seed: int = 0) -> np.ndarray:
    """Decaying harmonic notes, a different pitch per channel: (frames, channels) float32."""
    t = np.arange(round(seconds * rate)) / rate
    generator = np.random.default_rng(seed)
    columns = []
    for channel in range(channels):
        f0 = 220 * 2 ** (generator.integers(0, 12) / 12) * (1 + channel / 2)
        note = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 5)) * np.exp(-3 * (t % 0.25))
        columns.append(level * note / np.abs(note).max())
    return np.stack(columns, 1).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny SaShiMi checkpoint whose data config is a prepared folder of three 1 s files."""
    root = tmp_path_factory.mktemp("generate")
    torch.manual_seed(0)
    model = build_model("sashimi-2", d_model=16, n_layers=1, d_state=16, l_max=4096)
    audio_folder = root / "music"
    audio_folder.mkdir()
    for index in range(3):
        soundfile.write(audio_folder / f"piece{index}.wav", music(1.0, RATE, seed=index), RATE)
    data = dict(DATA, path=str(audio_folder))
    paths = {"data_cache": str(root / "cache"), "downloads": str(root / "downloads")}
    checkpoint = save_checkpoint(root / "run" / "checkpoints" / "best.pt",
                                 {**model_payload(model), "config": {"data": data, "paths": paths, "name": "tiny"}})
    return {"root": root, "checkpoint": checkpoint, "data": data, "paths": paths, "model": model}


@pytest.fixture(scope="module")
def generator(workspace):
    return Generator(workspace["checkpoint"], backend="numba", precision="fp32")


def read(path):
    audio, rate = soundfile.read(str(path), dtype="float32")
    return audio, rate


@pytest.mark.parametrize("name, rate, channels, format, subtype", [
    ("stereo48k.wav", 48000, 2, "WAV", "PCM_16"),
    ("mono22k.flac", 22050, 1, "FLAC", "PCM_24"),
    ("stereo44k.mp3", 44100, 2, "MP3", None),
    ("mono8k.ogg", 8000, 1, "OGG", "VORBIS"),
    ("five-channel16k.wav", 16000, 5, "WAV", "FLOAT"),
])
def test_prompts_from_audio_files_are_continued(workspace, generator, tmp_path, name, rate, channels, format, subtype):
    path = tmp_path / name
    soundfile.write(str(path), music(0.4, rate, channels), rate, format=format, subtype=subtype)
    prompt = generator.prompt_from_file(path, seconds=0.25)
    # the training path: decode, channel mean, resample, per-window minmax, mu-law
    expected = tokenize(load_audio(path, RATE)[:4000], 8, "mu-law", "minmax", quantizer="official").numpy()
    assert np.array_equal(prompt.tokens, expected)
    result = generator.generate([prompt], seconds=0.05, n=2, sampling=SamplingSettings(top_p=0.95), seed=3,
                                batch_size=2)
    output = generator.save(result, tmp_path / "out", spectrograms=False)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["prompts"][0]["source_sample_rate"] == rate
    assert manifest["prompts"][0]["source_channels"] == channels
    decoded_prompt = decode(torch.from_numpy(prompt.tokens), 8, "mu-law", quantizer="official").numpy()
    for record, item in zip(manifest["continuations"], result.continuations):
        whole, whole_rate = read(output / record["files"]["audio"])
        tail, tail_rate = read(output / record["files"]["continuation"])
        assert whole_rate == tail_rate == RATE
        assert len(whole) == 4000 + 800 and len(tail) == 800
        assert np.array_equal(whole[:4000], decoded_prompt)
        assert np.array_equal(whole[4000:], tail)
        assert np.array_equal(tail, decode(torch.from_numpy(item.tokens), 8, "mu-law", quantizer="official").numpy())
    prompt_audio, _ = read(output / "prompt00.wav")
    assert np.array_equal(prompt_audio, decoded_prompt)


def test_same_seed_same_audio_and_batching_does_not_matter(generator, tmp_path):
    path = tmp_path / "prompt.wav"
    soundfile.write(str(path), music(0.2, 32000, 2), 32000)
    prompt = generator.prompt_from_file(path)
    first = generator.generate([prompt], seconds=0.03, n=3, seed=7, batch_size=3)
    again = generator.generate([prompt], seconds=0.03, n=3, seed=7, batch_size=1)
    other = generator.generate([prompt], seconds=0.03, n=3, seed=8, batch_size=3)
    for a, b, c in zip(first.continuations, again.continuations, other.continuations):
        assert np.array_equal(a.tokens, b.tokens)
        assert np.allclose(a.logp_model, b.logp_model)
        assert not np.array_equal(a.tokens, c.tokens)
    assert not np.array_equal(first.continuations[0].tokens, first.continuations[1].tokens)


def test_fast_path_generates_what_the_plain_step_path_generates(workspace, generator, tmp_path):
    path = tmp_path / "prompt.flac"
    soundfile.write(str(path), music(0.02, 24000), 24000)
    plain = Generator(workspace["checkpoint"], backend="step")
    settings = SamplingSettings(temperature=0.9, top_k=50, top_p=0.95)
    fast_result = generator.generate([generator.prompt_from_file(path)], seconds=0.006, n=2, sampling=settings, seed=1)
    plain_result = plain.generate([plain.prompt_from_file(path)], seconds=0.006, n=2, sampling=settings, seed=1)
    for fast, reference in zip(fast_result.continuations, plain_result.continuations):
        assert np.array_equal(fast.tokens, reference.tokens)
        assert np.allclose(fast.logp_sample, reference.logp_sample, atol=1e-4)
    assert np.allclose(fast_result.prompt_logp[0], plain_result.prompt_logp[0], atol=1e-4)


def test_minmax_prompt_is_normalised_as_one_window(generator, tmp_path):
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    soundfile.write(str(loud), music(0.1, RATE, level=0.9), RATE, subtype="FLOAT")
    soundfile.write(str(quiet), music(0.1, RATE, level=0.01), RATE, subtype="FLOAT")
    difference = generator.prompt_from_file(loud).tokens - generator.prompt_from_file(quiet).tokens
    # the same window up to float rounding and the official +1e-6 in the min-max denominator (relative
    # 5e-5 of the quiet window's span): at most one level, rarely
    assert np.abs(difference).max() <= 1 and np.count_nonzero(difference) < 0.03 * len(difference)


def test_cli_writes_everything_and_ranks_by_model_likelihood(workspace, tmp_path, capsys):
    output = tmp_path / "samples"
    code = cli.main(["generate", f"checkpoint={workspace['checkpoint']}", "seconds=0.02", "n=3", "batch_size=2",
                     f"output={output}", "temperature=0.9", "progress=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(output) in printed and "ranking" in printed
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["settings"]["temperature"] == 0.9 and manifest["checkpoint"]["sha256"]
    assert manifest["precision"] == manifest["settings"]["precision"] == "w8a8"   # the default when sampling
    assert manifest["timings"]["real_time_factor_per_stream"] > 0
    order = manifest["ranking"]["order"]
    means = {c["id"]: c["log_likelihood"]["model"]["mean_nats"] for c in manifest["continuations"]}
    assert [means[i] for i in order] == sorted(means.values(), reverse=True)
    for record in manifest["continuations"]:
        assert record["id"].startswith("unconditional-sample")
        for file in record["files"].values():
            assert (output / file).is_file()
        whole, _ = read(output / record["files"]["audio"])
        assert len(whole) == 320  # no prompt: the continuation alone
    tokens = np.load(output / "tokens.npz")
    assert tokens["continuation_tokens"].shape == (3, 320)
    assert not list(tmp_path.glob(".samples.tmp-*"))


@pytest.mark.parametrize("precision, temperature, stored", [("auto", 0, "fp32"), ("fp32", 1, "fp32"),
                                                             ("bf16", 0, "bf16"), ("w8a8", 0, "w8a8")])
def test_precision_is_chosen_on_the_command_line_and_recorded(workspace, tmp_path, precision, temperature, stored):
    output = tmp_path / "samples"
    assert cli.main(["generate", f"checkpoint={workspace['checkpoint']}", "seconds=0.005", f"output={output}",
                     f"precision={precision}", f"temperature={temperature}", "progress=false"]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["precision"] == manifest["settings"]["precision"] == stored
    described = "w8a8 linear weights and compact S4 step (fp32 and folded when greedy)" if precision == "auto" else \
        f"{stored} linear weights and {'folded' if stored == 'fp32' else 'compact'} S4 step"
    assert described in manifest["backend"]


def test_reduced_precision_is_refused_off_the_numba_backend(workspace):
    with pytest.raises(GenerationError, match="precision=bf16 is only for backend=numba"):
        Generator(workspace["checkpoint"], backend="step", precision="bf16")
    assert Generator(workspace["checkpoint"], backend="step").precision_for(SamplingSettings()) == "fp32"


def test_unconditional_generation_starts_from_the_zero_token(workspace, generator):
    result = generator.generate(None, seconds=0.01, n=1, seed=0)
    engine = generator.engine
    state = engine.new_state(1)
    from study.generation.sampling import stream_keys
    out = engine.run(state, np.array([zero_token(8)]), np.full((1, 160), -1), stream_keys(0, [0]), 0,
                     SamplingSettings())
    assert np.array_equal(result.continuations[0].tokens, out.tokens[0])


def test_split_prompts_come_from_the_prepared_windows(workspace, tmp_path):
    from omegaconf import OmegaConf

    from study.data.dataset import WindowDataset
    from study.data.prepare import prepare

    prepared = prepare(workspace["data"], OmegaConf.create(workspace["paths"]))
    output = tmp_path / "split"
    assert main([f"checkpoint={workspace['checkpoint']}", "prompt=split:test", "prompt_windows=2",
                 "prompt_seconds=0.1", "seconds=0.01", f"output={output}", "spectrograms=false",
                 "progress=false"]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    windows = WindowDataset(prepared, "test")
    assert [p["window"] for p in manifest["prompts"]] == [0, len(windows) - 1]
    for record in manifest["prompts"]:
        audio, _ = read(output / record["file"])
        tokens = windows.tokens(record["window"]).astype(np.int64)
        assert np.array_equal(audio, decode(torch.from_numpy(tokens[:1600]), 8, "mu-law", quantizer="official").numpy())
        reference, _ = read(output / record["reference_file"])
        assert np.array_equal(reference, decode(torch.from_numpy(tokens[1600:1760]), 8, "mu-law", quantizer="official").numpy())
    assert main([f"checkpoint={workspace['checkpoint']}", "prompt=split:test:1", "prompt_seconds=0.1",
                 "seconds=0.01", f"output={tmp_path / 'one'}", "spectrograms=false", "progress=false"]) == 0


def test_a_failure_while_writing_leaves_no_output(workspace, tmp_path, monkeypatch):
    import study.generation.outputs as outputs

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs, "write_spectrogram", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main([f"checkpoint={workspace['checkpoint']}", "seconds=0.01", f"output={tmp_path / 'out'}", "progress=false"])
    assert list(tmp_path.iterdir()) == []


def test_a_long_prompt_request_uses_the_file_and_says_so(generator, tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(str(path), music(0.05, RATE), RATE)
    prompt = generator.prompt_from_file(path, seconds=2.0)
    assert len(prompt.tokens) == 800 and "used what there is" in prompt.info["warning"]


# -- bad inputs ---------------------------------------------------------------------------------------
def write_bad_prompt(kind: str, folder):
    path = folder / {"not-audio": "notes.wav", "corrupt": "broken.flac", "empty-file": "empty.wav",
                     "no-frames": "silence.wav", "too-short": "click.wav", "silent": "quiet.wav"}[kind]
    if kind == "not-audio":
        path.write_text("this is not audio\n" * 50)
    elif kind == "corrupt":
        soundfile.write(str(path), music(0.2, RATE), RATE, format="FLAC")
        data = bytearray(path.read_bytes())
        data[4:200] = bytes(196)  # destroy the STREAMINFO block
        path.write_bytes(bytes(data))
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "no-frames":
        soundfile.write(str(path), np.zeros((0, 1), np.float32), RATE)
    elif kind == "too-short":
        soundfile.write(str(path), music(10 / RATE, RATE), RATE)
    elif kind == "silent":
        soundfile.write(str(path), np.zeros((RATE // 10, 2), np.float32), RATE)
    return path


@pytest.mark.parametrize("kind, message", [
    ("not-audio", "cannot be used"), ("corrupt", "cannot be used"), ("empty-file", "cannot be used"),
    ("no-frames", "empty audio"), ("too-short", "shorter than one pooling stride"), ("silent", "is silent"),
])
def test_bad_prompts_are_refused_with_the_reason(workspace, tmp_path, capsys, kind, message):
    path = write_bad_prompt(kind, tmp_path)
    output = tmp_path / "out"
    assert main([f"checkpoint={workspace['checkpoint']}", f"prompt={path}", "seconds=0.01", f"output={output}",
                 "progress=false"]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not output.exists()


@pytest.mark.parametrize("arguments, message", [
    (["seconds=0"], "seconds=0.0 must be > 0"),
    (["seconds=-1"], "seconds=-1.0 must be > 0"),
    (["temperature=-0.5"], "temperature=-0.5 must be >= 0"),
    (["top_p=0"], "top_p=0.0 must be in (0, 1]"),
    (["top_p=1.5"], "top_p=1.5 must be in (0, 1]"),
    (["top_k=-2"], "top_k=-2 must be an integer >= 0"),
    (["n=abc"], "bad argument"),
    (["colour=blue"], "bad argument"),
    (["seconds"], "is not key=value"),
    (["prompt=split:nope"], "split:<train|val|test>"),
    (["prompt=/no/such/file.wav"], "is not a file"),
    (["backend=fastest"], "backend='fastest' is unknown"),
    (["prompt_seconds=-1"], "prompt_seconds=-1.0 must be > 0"),  # checked although there is no prompt
    (["prompt_start_seconds=-2"], "prompt_start_seconds=-2.0 must be >= 0"),
    (["prompt_windows=0"], "prompt_windows=0 must be >= 1"),
    (["threads=-1"], "threads=-1 must be >= 0"),
    (["precision=int4"], "precision='int4' is unknown"),
    (["n=0"], "n=0 must be >= 1"),
])
def test_bad_settings_exit_2_with_the_fix(workspace, tmp_path, capsys, arguments, message):
    assert main([f"checkpoint={workspace['checkpoint']}", f"output={tmp_path / 'out'}", "progress=false",
                 *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_checkpoint_is_required(capsys):
    assert main(["seconds=1"]) == 2
    assert "checkpoint=... is required" in capsys.readouterr().err


def test_bad_checkpoints_are_refused(workspace, tmp_path, capsys):
    other = build_model("sashimi-2", d_model=32, n_layers=1, d_state=16, l_max=4096)
    foreign = save_checkpoint(tmp_path / "foreign.pt", {"model_config": model_payload(workspace["model"])["model_config"],
                                                        "model_state": other.state_dict(),
                                                        "config": {"data": workspace["data"]}})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 not a checkpoint")
    for path, message in [(tmp_path / "missing.pt", "no checkpoint at"), (foreign, "another architecture"),
                          (junk, "not a sashimi-study checkpoint")]:
        assert main([f"checkpoint={path}", f"output={tmp_path / 'out'}", "progress=false"]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
        with pytest.raises(CheckpointError, match=message):
            Generator(path)
    no_data = save_checkpoint(tmp_path / "no-data.pt", model_payload(workspace["model"]))
    with pytest.raises(CheckpointError, match="no data settings"):
        Generator(no_data)


def test_unwritable_or_occupied_outputs_are_refused_before_generating(workspace, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    for output, message in [(blocker / "out", "cannot write output"), (occupied, "already exists")]:
        assert main([f"checkpoint={workspace['checkpoint']}", f"output={output}", "seconds=0.01",
                     "progress=false"]) == 2
        assert message in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "mine" and len(list(occupied.iterdir())) == 1


def test_api_validates_like_the_cli(generator):
    with pytest.raises(GenerationError, match="seconds"):
        generator.generate(None, seconds=0)
    with pytest.raises(GenerationError, match="n=0"):
        generator.generate(None, seconds=0.01, n=0)
    with pytest.raises(GenerationError, match="top_p"):
        generator.generate(None, seconds=0.01, sampling=SamplingSettings(top_p=2))


def test_audio_is_decoded_with_the_checkpoints_quantizer():
    from study.generation.prompts import AudioFormat
    tokens = np.arange(256)
    official = AudioFormat.from_payload({"data_config": DATA}, "x.pt")
    assert official.quantizer == "official"
    assert np.array_equal(official.decode(tokens), decode(torch.from_numpy(tokens), 8, "mu-law", quantizer="official").numpy())
    assert official.decode(np.array([128]))[0] == 0.0  # the official dequantize puts silence exactly at 0
    # a checkpoint from before data.quantizer existed was trained on torchaudio's tokens
    older = AudioFormat.from_payload({"data_config": {k: v for k, v in DATA.items() if k != "quantizer"}}, "x.pt")
    assert older.quantizer == "torchaudio" and older.decode(np.array([128]))[0] > 0
    with pytest.raises(CheckpointError, match="data.quantizer='nearest'"):
        AudioFormat.from_payload({"data_config": {**DATA, "quantizer": "nearest"}}, "x.pt")
