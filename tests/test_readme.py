"""Every command the README shows is exercised: here in a short version (tiny sizes, temporary
folders), or by the named test that runs it. A new README command without a test fails here."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
TINY = ["model.d_model=8", "model.d_state=8", "data.sample_len=2048", "data.clip_seconds=1",
        "data.toy_clips=24", "data.toy_clip_seconds=1", "train.max_epochs=1", "train.max_steps_per_epoch=2",
        "train.max_eval_windows=1", "tracking.wandb=disabled"]


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        commands += [line.split("  #")[0].strip() for line in block.splitlines()]
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    commands += re.findall(r"`([^`\n]+)`", prose)
    return list(dict.fromkeys(c for c in commands if c.startswith(("study ", "make "))))


# Commands run elsewhere, at a size that fits the suite: command -> the test that runs it.
COVERED_BY = {
    "make demo": "tests/test_demo.py::test_make_demo_runs_the_whole_study_and_reuses_it",
    "study run replicate ray.address=auto paths.runs=/shared/runs":
        "tests/test_harness.py::test_study_runs_on_a_multi_node_cluster",
    "study run STUDY [overrides]": "tests/test_harness.py::test_replicate_and_ablation_smoke_studies_end_to_end",
    "make replicate SCALE=smoke": "tests/test_harness.py::test_replicate_and_ablation_smoke_studies_end_to_end",
    "study train": "tests/training/test_loop.py::test_loss_falls_on_toy_music",
    "study bench kernel": "tests/bench/test_kernel_bench.py",
    "study import checkpoint=sashimi_youtubemix.pt":
        "tests/training/test_import_evaluate.py::test_import_then_evaluate_gives_the_workshop_table",
    "study evaluate checkpoint=runs/imported/sashimi_youtubemix-SHA/checkpoints/best.pt data=youtubemix":
        "tests/training/test_import_evaluate.py::test_import_then_evaluate_gives_the_workshop_table",
    "study evaluate checkpoint=runs/imported/sashimi_youtubemix-SHA/checkpoints/best.pt data=youtubemix "
    "data.quantizer=torchaudio": "tests/training/test_import_evaluate.py::test_import_then_evaluate_gives_the_workshop_table",
    "study migrate-runs runs=runs":
        "tests/test_signature.py::test_migrate_runs_renames_folders_and_updates_records_and_results",
    "study bench gpu": "tests/bench/test_gpu_check.py::test_tiny_plan_runs_end_to_end_on_cpu_and_reports_every_field",
    "study bench gpu device=cpu":
        "tests/bench/test_gpu_check.py::test_tiny_plan_runs_end_to_end_on_cpu_and_reports_every_field",
    "make gpu-wheels": "tests/bench/test_gpu_check.py::test_the_wheel_list_imports_and_is_pinned_by_the_lock",
    "study serve checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt":
        "tests/serve/test_command.py::test_serve_command_prints_its_url_and_answers",
    "study --help": "tests/test_cli.py::test_help_lists_every_command",
    "make install": "tests/test_install.py::test_installed_versions_equal_the_lock",
    "make check-install": "tests/test_install.py::test_installed_versions_equal_the_lock",
    "make lock": "tests/test_install.py::test_make_lock_runs_the_command_the_lock_records",
    "make search": "tests/test_demo.py::test_the_demos_next_commands_read_its_runs_folder",
    "study run": "tests/test_harness.py::test_replicate_and_ablation_smoke_studies_end_to_end",
    "study COMMAND --help": "tests/test_cli.py::test_every_command_and_subcommand_answers_help",
    "study bench generate --help": "tests/test_cli.py::test_every_command_and_subcommand_answers_help",
    "make help": "tests/test_cli.py::test_make_help_lists_every_target",
    "study info checkpoint=PATH": "tests/test_cli.py::test_info_prints_a_checkpoints_config_step_metrics_and_hash",
}


def test_every_readme_command_is_exercised():
    commands = readme_commands()
    assert "make demo" in commands and "make test" in commands
    unexercised = [c for c in commands if c not in SHORT_VERSIONS and c not in COVERED_BY]
    assert not unexercised, f"README commands without a test: {unexercised}"
    for command, test in COVERED_BY.items():
        assert command in commands, f"{command!r} is no longer in the README: drop it here"
        path, _, function = test.partition("::")
        assert (REPO / path).is_file(), test
        if function:
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            assert hasattr(module, function), test


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    # as after `source .venv/bin/activate`: `study` on the PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO), "STUDY_RUNS": str(root / "runs"),
           "STUDY_DATA_CACHE": str(root / "cache"), "STUDY_DOWNLOADS": str(root / "downloads")}
    env.pop("HF_TOKEN", None)
    music = root / "music"
    music.mkdir()
    from study.data.toy import generate_clip
    for index in range(20):
        soundfile.write(music / f"song-{index}.flac", generate_clip("piano", 7, index, 1.0), 44100)
    return {"root": root, "env": env, "music": music}


def run(command: str, workspace: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, shell=True, cwd=REPO, env=workspace["env"], capture_output=True, text=True,
                            timeout=timeout)
    return result


def succeed(command: str, workspace: dict) -> str:
    result = run(command, workspace)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def tiny_checkpoint(workspace: dict) -> Path:
    if "checkpoint" not in workspace:
        succeed("study run replicate scale=smoke ray.max_failures=0 " + " ".join(TINY), workspace)
        found = sorted((workspace["root"] / "runs" / "replicate").glob("*/checkpoints/best.pt"))
        workspace["checkpoint"] = found[0]
    return workspace["checkpoint"]


def fails_fast_without_gpu(command):
    def check(workspace):
        result = run(command, workspace, timeout=180)
        assert result.returncode != 0
        assert "asks for 1 GPU but the Ray cluster has 0" in result.stderr + result.stdout
    return check


def make_test(workspace):
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI runs it on every submission


def music_folder(command, expected):
    def check(workspace):
        output = succeed(command.replace("/music/mine", str(workspace["music"])) + " " + " ".join(TINY), workspace)
        assert expected in output
    return check


def generate(workspace):
    checkpoint = tiny_checkpoint(workspace)
    prompt = workspace["root"] / "song.mp3"
    from study.data.toy import generate_clip
    soundfile.write(prompt, generate_clip("trio", 3, 0, 1.0).reshape(-1, 1).repeat(2, axis=1), 44100, format="MP3")
    output = workspace["root"] / "samples"
    command = (f"study generate checkpoint={checkpoint} prompt={prompt} seconds=0.2 n=4 "
               f"output={output}")
    succeed(command, workspace)
    assert len(list(output.glob("*-continuation.wav"))) == 4 and (output / "manifest.json").is_file()


def search(workspace):
    checkpoint = tiny_checkpoint(workspace)
    out = workspace["root"] / "search"
    succeed(f'make search ARGS="checkpoint={checkpoint} trials=2 n_prompts=1 prompt_seconds=0.03 seconds=0.09 '
            f'out={out}"', workspace)
    assert (out / "results.csv").is_file() and (out / "heatmap.png").is_file()


def report(arguments):
    def check(workspace):
        tiny_checkpoint(workspace)
        out = workspace["root"] / "reports"
        extra = f"runs={workspace['root'] / 'runs'} out={out}"
        command = f'make report ARGS="{arguments} {extra}"'.replace("  ", " ")
        succeed(command, workspace)
        assert list(out.glob("*/report.html"))
    return check


def smoke_study(command):
    def check(workspace):
        succeed(f'{command} SCALE=smoke ARGS="{" ".join(TINY)}"', workspace)
    return check


def bench(command, expected="tokens/s"):
    def check(workspace):
        assert expected in succeed(command, workspace)
    return check


def info(workspace):
    assert "4,751,072" in succeed("study info model=sashimi-8", workspace)


def gpu_check(workspace):
    result = run("make gpu-check", workspace, timeout=300)
    assert result.returncode != 0 and "GPU" in result.stdout + result.stderr


SHORT_VERSIONS = {
    "make test": make_test,
    "make replicate": fails_fast_without_gpu("make replicate"),
    "make grids": fails_fast_without_gpu("make grids"),
    "make ablation": smoke_study("make ablation"),
    "study data prepare data=folder data.path=/music/mine": music_folder(
        "study data prepare data=folder data.path=/music/mine", "windows"),
    "study data info data=folder data.path=/music/mine": music_folder(
        "study data info data=folder data.path=/music/mine", "fingerprint"),
    "study train data=folder data.path=/music/mine model=sashimi-2 name=mine-sashimi-2": music_folder(
        "study train data=folder data.path=/music/mine model=sashimi-2 name=mine-sashimi-2",
        "finished: mine-sashimi-2"),
    "study generate checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt prompt=song.mp3 seconds=10 n=4":
        generate,
    'make search ARGS="checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt"': search,
    "make report": report(""),
    "study report": report(""),
    'make report ARGS="studies=replicate,ablation name=paper print_table=true"':
        report("studies=replicate name=paper print_table=true"),
    "study info model=sashimi-8": info,
    "study bench model": bench("study bench model 'presets=[sashimi-2]' 'lengths=[1024]'"),
    "study bench train": bench("study bench train 'scales=[smoke]' 'presets=[sashimi-2]' steps=1"),
    "study bench generate": bench("study bench generate 'presets=[sashimi-2]' 'batches=[1]' seconds=0.3 "
                                  "step_seconds=0.3", expected="samples/s"),
    "make gpu-check": gpu_check,
    "study bench serve": bench("study bench serve clients=1 seconds=0.3 prompt_seconds=0.2",
                               expected="faster than real time"),
    "make bench": bench('make bench BENCH=data ARGS="data.toy_clips=24 data.toy_clip_seconds=1 data.clip_seconds=1 '
                        'data.sample_len=4096"', expected="windows/s"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(SHORT_VERSIONS))
def test_readme_command_short_version(command, workspace):
    SHORT_VERSIONS[command](workspace)
