"""The `study` command: argparse picks the command, its module parses the key=value arguments.

Every command answers `--help`; a StudyError prints as one line and exits 2 (`--debug` or
STUDY_DEBUG=1 adds the traceback). Imports stay lazy so `study --help` never loads torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import textwrap
import traceback
from dataclasses import dataclass
from typing import Callable

from study import __version__
from study.errors import ConfigError, StudyError

HELP_FLAGS = ("-h", "--help")


# -- what `study COMMAND --help` says about the arguments ----------------------------------------------
def hydra_overrides(positional: str = "", cfg: bool = False, extra: str = "") -> Callable[[], str]:
    """Arguments help for a command that composes experiments/ with Hydra overrides."""
    def describe() -> str:
        from study.config_groups import config_groups
        groups = config_groups()
        lines = [f"arguments: {positional + ', then ' if positional else ''}Hydra overrides, each key=value"]
        if positional == "STUDY":
            studies = f"one of {', '.join(groups.get('study', []))} (experiments/study/STUDY.yaml)"
            lines += textwrap.wrap(studies, 100, initial_indent="  STUDY            ", subsequent_indent=" " * 19)
        lines.append("  GROUP=OPTION     pick a config file from a group of experiments/:")
        lines += [f"                     {group}={'|'.join(options)}" for group, options in groups.items()
                  if options and group != "study"]
        lines.append("  KEY=VALUE        set any config key, e.g. train.lr=0.002 model.dropout=0.1 seed=1 "
                     "paths.runs=/shared/runs")
        if extra:
            lines.append(extra)
        if cfg:
            lines.append("  --cfg            print the resolved config and exit")
        return "\n".join(lines)
    return describe


def settings_keys(target: str, extra: str = "") -> Callable[[], str]:
    """Arguments help for a command whose settings are a dataclass ("module:Class"): every key with its
    default and the comment beside the field."""
    def describe() -> str:
        settings = resolve(target)
        comments = field_comments(settings)
        rows = []
        for field in dataclasses.fields(settings):
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            else:
                default = "???"
            shown = f"{field.name}=... (required)" if default == "???" else f"{field.name}={format_value(default)}"
            rows.append((shown, comments.get(field.name, "")))
        width = min(max(len(shown) for shown, _ in rows) + 2, 34)
        lines = ["arguments: key=value, each optional unless marked required (defaults shown)"]
        for shown, comment in rows:
            lines.append((f"  {shown:<{width}}{comment}" if len(shown) < width else f"  {shown}  {comment}").rstrip())
        if extra:
            lines.append(extra)
        return "\n".join(lines)
    return describe


def own_arguments(text: str) -> Callable[[], str]:
    return lambda: text


def format_value(value) -> str:
    if value is None:
        return "null"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    return str(value)


def field_comments(settings: type) -> dict[str, str]:
    """{field: its trailing `# comment`} from the dataclass source (the project documents fields so)."""
    try:
        source = inspect.getsource(settings)
    except (OSError, TypeError):
        return {}
    found = re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+?)\s*$", source, re.M)
    return {name: comment for name, comment in found}


def module_docstring(module: str) -> str:
    """A module's docstring read from its source, without importing it (so no torch for --help)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as file:
        return ast.get_docstring(ast.parse(file.read())) or ""


def resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# -- what --cfg prints ---------------------------------------------------------------------------------
def train_config(argv: list[str]) -> str:
    """The resolved config of `study train ARGV`, with its signature and run folder."""
    from omegaconf import OmegaConf

    from study.training.experiment import load_experiment
    experiment = load_experiment(argv)
    return (OmegaConf.to_yaml(experiment.config)
            + f"# signature {experiment.signature}, run folder {experiment.run_dir}")


def run_config(argv: list[str]) -> str:
    """The resolved base config of `study run STUDY ARGV`, then each trial's overrides and run folder."""
    from omegaconf import OmegaConf

    from study.config import compose_config
    from study.studies import load_study, plan_trials, split_overrides
    if not argv or "=" in argv[0]:
        raise ConfigError("study run --cfg needs the study first, e.g. study run replicate scale=smoke --cfg")
    definition = load_study(argv[0])
    trial_overrides, harness_overrides = split_overrides(argv[1:])
    lines = [OmegaConf.to_yaml(compose_config(definition.base + trial_overrides + harness_overrides)).rstrip()]
    for trial in plan_trials(definition, trial_overrides):
        lines.append(f"# trial {trial.label}: signature {trial.experiment.signature}, "
                     f"run folder {trial.experiment.run_dir}")
    return "\n".join(lines)


# -- subcommands ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subcommand:
    summary: str
    example: str
    details: str = ""


def data_subcommands() -> dict[str, Subcommand]:
    return {"prepare": Subcommand("prepare (or reuse) a dataset's cache and print files / hours / windows per split",
                                  "study data prepare data=folder data.path=/music/mine"),
            "info": Subcommand("print the manifest of a prepared dataset (as JSON)",
                               "study data info data=toy-piano")}


def bench_subcommands() -> dict[str, Subcommand]:
    from study.bench.command import BENCHMARKS
    found = {}
    for name, module in BENCHMARKS.items():
        text = module_docstring(module)
        first = re.sub(r"^`[^`]*`:\s*", "", text.split("\n\n")[0]).replace("\n", " ").split(". ")[0].rstrip(".")
        found[name] = Subcommand(first, f"study bench {name}", details=text)
    return found


# -- the command table: adding a command is one entry --------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One `study` command: where its `main(argv) -> int` lives and how `--help` describes it."""
    target: str                                   # "module:function", imported only when the command runs
    summary: str                                  # one line in `study --help`
    example: str
    arguments: Callable[[], str]                  # the arguments section of `study NAME --help`
    positional: str = ""                          # e.g. STUDY: what comes before the key=value arguments
    overrides: bool = False                       # Hydra overrides: every argument must be key=value
    config: Callable[[list[str]], str] | None = None    # what `--cfg` prints
    subcommands: Callable[[], dict[str, Subcommand]] | None = None


COMMANDS: dict[str, Command] = {
    "info": Command(
        "study.info:main", "model architecture and parameter count, or a checkpoint's config, step and metrics",
        "study info model=sashimi-8", overrides=True, arguments=hydra_overrides(
            extra="  checkpoint=PATH  instead: a checkpoint's config, step, metrics and sha256 "
                  "(study info checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt)")),
    "data": Command(
        "study.data.commands:main", "prepare a dataset, or print the manifest of a prepared one",
        "study data prepare data=toy-piano", overrides=True, arguments=hydra_overrides(),
        subcommands=data_subcommands),
    "train": Command(
        "study.training.loop:main", "train one experiment into runs/<run_group>/<signature>/",
        "study train experiment=youtubemix-sashimi-8 scale=smoke", overrides=True,
        arguments=hydra_overrides(cfg=True), config=train_config),
    "generate": Command(
        "study.generation.command:main", "continue an audio prompt (or sample unconditionally) from a checkpoint",
        "study generate checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt prompt=song.mp3 seconds=10 n=4",
        arguments=settings_keys("study.generation.command:GenerateConfig")),
    "import": Command(
        "study.training.import_command:main", "an official SaShiMi checkpoint (.pt or Lightning .ckpt) as a run",
        "study import checkpoint=sashimi_youtubemix.pt",
        arguments=settings_keys("study.training.import_command:ImportSettings")),
    "evaluate": Command(
        "study.training.evaluate_command:main", "val/test loss, bpb and accuracy@k of any checkpoint on a prepared split",
        "study evaluate checkpoint=runs/imported/NAME/checkpoints/best.pt data=youtubemix",
        arguments=settings_keys("study.training.evaluate_command:EvaluateSettings",
                                extra="  any other key=value is a Hydra override of the data, e.g. data=youtubemix "
                                      "data.quantizer=torchaudio")),
    "run": Command(
        "study.harness:main", "run a study (one experiments/study/ file) as Ray Tune trials, resumably",
        "study run replicate scale=smoke", positional="STUDY", overrides=True, config=run_config,
        arguments=hydra_overrides("STUDY", cfg=True, extra="  ray.KEY=VALUE    scheduling, e.g. ray.address=auto "
                                  "ray.gpus_per_trial=1 (not part of any run's signature)")),
    "search-sampling": Command(
        "analysis.sampling_search:main", "Optuna search over temperature and top-p for a trained checkpoint",
        "study search-sampling checkpoint=study:replicate trials=12",
        arguments=settings_keys("analysis.sampling_search:SearchSettings")),
    "report": Command(
        "analysis.report:main", "execute the report notebook into <out>/<name>/ and export its HTML",
        "study report studies=replicate,ablation name=paper print_table=true",
        arguments=settings_keys("analysis.report:ReportSettings")),
    "demo": Command(
        "study.demo:main", "the whole study at smoke scale on embedded data, ending with a report",
        "study demo search_trials=2 model.d_model=8",
        arguments=settings_keys("study.demo:DemoSettings", extra="  any other key=value is a config override "
                                                                 "for every study, e.g. model.d_model=8")),
    "serve": Command(
        "study.serve.command:main", "hear a continuation of your own music live in the browser",
        "study serve checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt",
        arguments=settings_keys("study.serve.settings:ServeSettings")),
    "migrate-runs": Command(
        "study.migrate:main", "rename run folders named by an earlier signature scheme",
        "study migrate-runs runs=runs dry_run=true", arguments=settings_keys("study.migrate:MigrateSettings")),
    "bench": Command(
        "study.bench.command:main", "speed and memory benchmarks, printed as tables",
        "study bench generate", subcommands=bench_subcommands,
        arguments=own_arguments("arguments: BENCHMARK, then that benchmark's key=value settings "
                                "(study bench BENCHMARK --help)")),
}


# -- help texts ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="study", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="sashimi-study: S4 / SaShiMi raw-audio music generation, reproducible studies, reports.",
        epilog="Every command takes key=value arguments and answers `study COMMAND --help`.\n"
               "examples:\n" + "\n".join(f"  {command.example}" for command in COMMANDS.values()))
    parser.add_argument("--version", action="version", version=f"study {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or STUDY_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, command in COMMANDS.items():
        # No option prefix: every token after the command reaches it unchanged and in order
        # (Hydra and parse_key_values parse them; --help, --cfg and --debug are picked out in main).
        sub = commands.add_parser(name, help=command.summary, add_help=False, prefix_chars="\0")
        sub.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def command_help(name: str, command: Command) -> str:
    lead = "".join(f" {word}" for word in ("SUBCOMMAND" if command.subcommands else "", command.positional) if word)
    lines = [f"usage: study {name}{lead} [key=value ...]"
             f"{' [--cfg]' if command.config else ''}", "", command.summary[0].upper() + command.summary[1:] + "."]
    if command.subcommands:
        lines += ["", "subcommands:"]
        for sub_name, sub in command.subcommands().items():
            lines += textwrap.wrap(sub.summary, 100, initial_indent=f"  {sub_name:<11}", subsequent_indent=" " * 13)
    lines += ["", command.arguments(), "", "example:", f"  {command.example}"]
    return "\n".join(lines)


def subcommand_help(name: str, command: Command, sub_name: str, sub: Subcommand) -> str:
    lines = [f"usage: study {name} {sub_name} [key=value ...]", ""]
    if sub.details:
        lines.append(sub.details)
    else:
        lines += [sub.summary[0].upper() + sub.summary[1:] + ".", "", command.arguments()]
    lines += ["", "example:", f"  {sub.example}"]
    return "\n".join(lines)


def unknown_command_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"study: unknown command {name!r}{hint} (`study --help` lists the commands: {', '.join(COMMANDS)})"


def one_line(label: str, error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.startswith(label) else f"{label}: {text}"


# -- dispatch ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = next((token for token in argv if not token.startswith("-")), None)
    if name is not None and name not in COMMANDS:
        print(unknown_command_message(name), file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as stop:  # --version, or a usage error argparse has printed
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 2
    if options.command is None:
        parser.print_help()
        return 0
    command = COMMANDS[options.command]
    arguments = [token for token in options.arguments if token != "--debug"]
    debug = options.debug or "--debug" in options.arguments or os.environ.get("STUDY_DEBUG", "") not in ("", "0")
    subcommands = command.subcommands() if command.subcommands else {}
    label = f"study {options.command}"
    if arguments and arguments[0] in subcommands:
        label += f" {arguments[0]}"
    try:
        if any(token in HELP_FLAGS for token in arguments):
            sub_name = arguments[0]
            print(subcommand_help(options.command, command, sub_name, subcommands[sub_name])
                  if sub_name in subcommands else command_help(options.command, command))
            return 0
        print_config = command.config is not None and "--cfg" in arguments
        if print_config:
            arguments = [token for token in arguments if token != "--cfg"]
        if command.overrides:
            check_overrides(label, command, arguments[1:] if command.positional or subcommands else arguments)
        if print_config:
            print(command.config(arguments))
            return 0
        return resolve(command.target)(arguments) or 0
    except StudyError as error:
        if debug:
            traceback.print_exc()
        print(one_line(label, error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{label}: interrupted", file=sys.stderr)
        return 130


def check_overrides(label: str, command: Command, tokens: list[str]) -> None:
    """Refuse what Hydra would answer with a parser traceback: options, and tokens that are not key=value."""
    for token in tokens:
        if token.startswith("-") or "=" not in token:
            what = "unknown option" if token.startswith("-") else "argument"
            raise ConfigError(f"{label}: {what} {token!r} is not a key=value override; e.g. {command.example} "
                              f"(`{label} --help` lists the config groups)")


if __name__ == "__main__":
    sys.exit(main())
