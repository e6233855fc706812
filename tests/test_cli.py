"""The `study` command: --help for every command, --version, did-you-mean, one-line errors with exit 2,
--debug, --cfg, key=value arguments, and checkpoints opened by `study info` and `study.load_checkpoint`."""

import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import study
from study.cli import COMMANDS, Command, main
from study.errors import DataError

REPO = Path(__file__).resolve().parent.parent


def test_info_prints_the_architecture_and_exact_parameter_count(capsys):
    assert main(["info", "model=sashimi-8"]) == 0
    output = capsys.readouterr().out
    assert re.search(r"total parameters +4,751,072\n", output)
    assert "centre stage (H=256, L=8192)" in output


def test_info_with_paper_era_output_layer(capsys):
    assert main(["info", "model=sashimi-2", "model.final_act=id"]) == 0
    assert "1,287,192" in capsys.readouterr().out


def test_unknown_command_and_unknown_key_are_clear_errors(capsys):
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err
    assert main(["info", "model.bogus=1"]) == 2
    assert "Key 'bogus' not in 'ModelConfig'" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    output = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert name in output and command.example in output
    assert main([]) == 0 and "usage: study" in capsys.readouterr().out


def every_help_request() -> list[list[str]]:
    requests = []
    for name, command in COMMANDS.items():
        requests.append([name, "--help"])
        requests += [[name, sub, "-h"] for sub in (command.subcommands() if command.subcommands else {})]
    return requests


@pytest.mark.parametrize("argv", every_help_request(), ids=" ".join)
def test_every_command_and_subcommand_answers_help(argv, capsys):
    assert main(argv) == 0
    captured = capsys.readouterr()
    name, command = argv[0], COMMANDS[argv[0]]
    words = " ".join(argv[:-1])
    assert captured.out.startswith(f"usage: study {words}") and captured.err == ""
    assert "\nexample:\n  study " in captured.out
    if len(argv) == 2:
        assert command.summary[1:] in captured.out and command.example in captured.out
        if command.subcommands:
            assert all(f"\n  {sub} " in captured.out for sub in command.subcommands())
    else:
        assert command.subcommands()[argv[1]].summary.split(",")[0][1:] in " ".join(captured.out.split())
    if command.overrides:
        assert "model=sashimi-2|sashimi-8" in captured.out and "KEY=VALUE" in captured.out
    if command.config is not None:
        assert "--cfg" in captured.out


@pytest.mark.parametrize("name,settings", [("generate", "study.generation.command:GenerateConfig"),
                                           ("search-sampling", "analysis.sampling_search:SearchSettings"),
                                           ("report", "analysis.report:ReportSettings"),
                                           ("demo", "study.demo:DemoSettings")])
def test_help_of_a_settings_command_lists_every_key_with_its_default(name, settings, capsys):
    from study.cli import resolve
    assert main([name, "--help"]) == 0
    output = capsys.readouterr().out
    for field in dataclasses.fields(resolve(settings)):
        assert re.search(rf"\n  {field.name}=\S", output), field.name


def test_help_anywhere_among_the_arguments_wins_before_any_parsing(capsys):
    assert main(["train", "model=sashimi-2", "not an override", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: study train")
    assert main(["search-sampling", "trials=3", "--help"]) == 0
    assert "trials=12" in capsys.readouterr().out


def test_the_console_command_answers_help_without_loading_torch():
    study_command = Path(sys.executable).parent / "study"
    result = subprocess.run([str(study_command), "run", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: study run STUDY" in result.stdout and "replicate" in result.stdout
    probe = ("import sys; from study.cli import main; "
             "codes = [main(['--help']), main(['train', '--help']), main(['bench', 'model', '--help'])]; "
             "assert codes == [0, 0, 0], codes; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]


def test_bench_without_a_benchmark_name_prints_usage(capsys):
    assert main(["bench"]) == 2
    assert "model|data|train|generate|kernel" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"study {study.__version__}"


def test_unknown_commands_get_a_suggestion(capsys):
    assert main(["tarin", "model=sashimi-2"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'tarin'; did you mean 'train'?" in error
    assert main(["serach-sampling"]) == 2
    assert "did you mean 'search-sampling'?" in capsys.readouterr().err
    assert main(["zzzz"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'zzzz'" in error and "did you mean" not in error and "search-sampling" in error


def test_a_study_error_is_one_line_exit_2_and_no_traceback(capsys):
    assert main(["info", "model.bogus=1"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("study info: ")
    assert "Key 'bogus' not in 'ModelConfig'" in captured.err and "Traceback" not in captured.err
    assert main(["data", "prepare", "data=nope"]) == 2  # Hydra's message spans lines: still one
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("study data prepare: ") and "data='nope' is not one of the data configs" in error


def test_options_other_than_help_and_cfg_are_refused_for_override_commands(capsys):
    assert main(["info", "--foo"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("study info: unknown option '--foo' is not a key=value override; e.g. study info ")
    assert main(["train", "--cfg", "job"]) == 2
    assert "study train: argument 'job' is not a key=value override" in capsys.readouterr().err
    assert main(["data", "prepare", "toy-piano"]) == 2
    assert "study data prepare: argument 'toy-piano' is not a key=value override" in capsys.readouterr().err
    assert main(["report", "--studies", "replicate"]) == 2
    assert "argument '--studies' is not key=value" in capsys.readouterr().err
    assert main(["demo", "--runs", "x"]) == 2
    assert "argument '--runs' is not key=value" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["before", "after", "environment"])
def test_debug_shows_the_traceback(how, capsys, monkeypatch):
    argv = {"before": ["--debug", "info", "model.bogus=1"], "after": ["info", "model.bogus=1", "--debug"],
            "environment": ["info", "model.bogus=1"]}[how]
    if how == "environment":
        monkeypatch.setenv("STUDY_DEBUG", "1")
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback (most recent call last)" in error and "compose_config" in error
    assert error.rstrip().splitlines()[-1].startswith("study info: cannot compose")


def failing_command(argv: list[str]) -> int:
    if argv == ["bug"]:
        raise RuntimeError("a bug keeps its traceback")
    raise DataError("no audio in /music/mine:\nadd wav files or set data.path=...")


def test_a_new_command_is_one_entry_and_only_study_errors_are_caught(capsys, monkeypatch):
    entry = Command("tests.test_cli:failing_command", "fails on purpose", "study failing x=1",
                    arguments=lambda: "arguments: none")
    monkeypatch.setitem(COMMANDS, "failing", entry)
    assert main(["failing", "--help"]) == 0 and "Fails on purpose." in capsys.readouterr().out
    assert main(["failing"]) == 2
    assert capsys.readouterr().err == "study failing: no audio in /music/mine: add wav files or set data.path=...\n"
    with pytest.raises(RuntimeError, match="a bug keeps its traceback"):
        main(["failing", "bug"])


def test_cfg_prints_the_resolved_train_config_and_trains_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "model=sashimi-2", "scale=smoke", "train.lr=0.002", f"paths.runs={runs}", "--cfg"]) == 0
    output = capsys.readouterr().out
    config = yaml.safe_load(output)
    assert config["model"]["name"] == "sashimi-2" and config["train"]["lr"] == 0.002
    assert config["paths"]["runs"] == str(runs)
    assert re.search(rf"# signature [0-9a-f]{{12}}, run folder {re.escape(str(runs))}/train/[0-9a-f]{{12}}", output)
    assert not runs.exists()


def test_cfg_prints_a_study_base_config_and_its_trials(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "grid-dropout", "scale=smoke", f"paths.runs={runs}", "--cfg"]) == 0
    output = capsys.readouterr().out
    assert yaml.safe_load(output)["model"]["name"] == "sashimi-2"
    definition = yaml.safe_load((REPO / "experiments" / "study" / "grid-dropout.yaml").read_text())
    expected = [",".join([*variation, f"seed={seed}"]) for variation in definition["variations"]
                for seed in definition["seeds"]]
    assert re.findall(r"# trial (\S+): signature [0-9a-f]{12}, run folder ", output) == expected
    assert not runs.exists()
    assert main(["run", "--cfg"]) == 2 and "needs the study first" in capsys.readouterr().err


def test_report_and_demo_take_key_value_settings():
    from analysis.report import ReportSettings
    from study.command_args import parse_key_values
    from study.demo import parse_arguments
    settings = parse_key_values(ReportSettings, ["studies=replicate,ablation", "name=paper", "print_table=true"],
                                "report")
    assert (settings.studies, settings.name, settings.print_table) == ("replicate,ablation", "paper", True)
    demo, overrides = parse_arguments(["search_trials=2", "runs=/tmp/demo", "model.d_model=8", "seconds=0.2"])
    assert (demo.search_trials, demo.runs, demo.seconds) == (2, "/tmp/demo", 0.2)
    assert overrides == ["model.d_model=8"]


def test_report_and_demo_range_checks_are_one_line_errors(capsys):
    assert main(["report", "cell_timeout=0"]) == 2
    assert capsys.readouterr().err == "study report: cell_timeout=0 must be positive (seconds)\n"
    assert main(["demo", "search_trials=0"]) == 2
    assert capsys.readouterr().err == "study demo: search_trials=0 must be positive\n"


def test_make_help_lists_every_target():
    targets = re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M)
    assert {"install", "bench", "help", "demo", "test"} <= set(targets)
    result = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    listed = re.findall(r"^make ([a-z-]+)", result.stdout, re.M)
    assert result.returncode == 0 and sorted(listed) == sorted(targets)


# -- checkpoints ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """best.pt of a real (tiny) `study train` run."""
    root = tmp_path_factory.mktemp("train")
    argv = ["train", "name=tiny", "data=toy-piano", "scale=smoke", "model=sashimi-2", "model.n_layers=1",
            "model.d_model=8", "model.d_state=8", "data.sample_len=1024", "data.toy_clips=24",
            "data.toy_clip_seconds=1", "data.clip_seconds=1", "train.max_epochs=1", "train.max_steps_per_epoch=2",
            "train.max_eval_windows=1", "tracking.wandb=disabled", f"paths.runs={root / 'runs'}",
            f"paths.data_cache={root / 'cache'}", f"paths.downloads={root / 'downloads'}"]
    assert main(argv) == 0
    (found,) = (root / "runs").glob("train/*/checkpoints/best.pt")
    return found


def test_info_prints_a_checkpoints_config_step_metrics_and_hash(checkpoint, capsys):
    assert main(["info", f"checkpoint={checkpoint}"]) == 0
    output = capsys.readouterr().out
    assert f"sha256      {hashlib.sha256(checkpoint.read_bytes()).hexdigest()}\n" in output
    assert "step        2 (epoch 1)" in output and "metrics of epoch 1 (step 2):" in output
    assert re.search(r"\n    val/bpb +\d+\.\d+", output) and re.search(r"\n    train/loss +\d+\.\d+", output)
    config = yaml.safe_load(output.split("\nconfig:\n", 1)[1])
    assert config["model"]["d_model"] == 8 and config["data"]["sample_len"] == 1024
    assert f"signature   {checkpoint.parent.parent.name}" in output


def test_info_refuses_a_corrupt_checkpoint_in_one_line(checkpoint, tmp_path, capsys):
    damaged = tmp_path / "best.pt"
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["info", f"checkpoint={damaged}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "checksum mismatch" in error
    assert main(["info", f"checkpoint={checkpoint}", "model=sashimi-2"]) == 2
    assert "takes no other argument" in capsys.readouterr().err


def test_load_checkpoint_from_the_top_level_package(checkpoint):
    opened = study.load_checkpoint(checkpoint)
    assert opened.step == 2 and opened.epoch == 1 and opened.metrics["epoch"] == 1
    assert opened.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert opened.config["model"]["d_model"] == 8 and "val/loss" in opened.metrics
    model = opened.model()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, opened.weights[name]), name
    tokens = torch.randint(0, 256, (1, 1024))
    with torch.no_grad():
        assert model(tokens).shape == (1, 1024, 256)


def test_the_readme_snippet_opens_a_checkpoint(checkpoint):
    readme = (REPO / "README.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "load_checkpoint" in block]
    code = re.sub(r'"runs/[^"]*best\.pt"', repr(str(checkpoint)), snippet)
    namespace = {}
    exec(code, namespace)
    assert namespace["checkpoint"].step == 2

