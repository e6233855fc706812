"""The `study` command: dispatches `study <command> ...` to the module that implements it.

Each command module exposes `main(argv: list[str]) -> int`; imports are lazy so `study --help` is fast.
"""

import logging
import sys
from typing import Callable


def _info(argv):
    from study.info import main
    return main(argv)


def _data(argv):
    from study.data.commands import main
    return main(argv)


def _train(argv):
    from study.training.loop import main
    return main(argv)


def _generate(argv):
    from study.generation.command import main
    return main(argv)


def _import(argv):
    from study.training.import_command import main
    return main(argv)


def _evaluate(argv):
    from study.training.evaluate_command import main
    return main(argv)


def _run(argv):
    from study.harness import main
    return main(argv)


def _search_sampling(argv):
    from analysis.sampling_search import main
    return main(argv)


def _report(argv):
    from analysis.report import main
    return main(argv)


def _demo(argv):
    from study.demo import main
    return main(argv)


def _migrate_runs(argv):
    from study.migrate import main
    return main(argv)


def _serve(argv):
    from study.serve.command import main
    return main(argv)


def _bench(argv):
    from study.bench.command import main
    return main(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "info": (_info, "model architecture and parameter count: study info model=sashimi-8"),
    "data": (_data, "prepare or inspect a dataset: study data prepare data=toy-piano"),
    "train": (_train, "train one experiment: study train experiment=youtubemix-sashimi-8 scale=smoke"),
    "generate": (_generate, "continue an audio prompt: study generate checkpoint=PATH prompt=song.mp3"),
    "import": (_import, "an official SaShiMi checkpoint as a run: study import checkpoint=sashimi_youtubemix.pt"),
    "evaluate": (_evaluate, "val/test loss, bpb, accuracy@k of a checkpoint: study evaluate checkpoint=PATH data=youtubemix"),
    "run": (_run, "run a study as Ray Tune trials: study run replicate scale=smoke"),
    "search-sampling": (_search_sampling, "Optuna search over temperature / top-p"),
    "report": (_report, "build the executed report notebook and its HTML"),
    "demo": (_demo, "the whole study at smoke scale on embedded data, ending with a report"),
    "serve": (_serve, "listen live in the browser: study serve checkpoint=PATH"),
    "bench": (_bench, "benchmarks: study bench model|data|train|generate|kernel|gpu|serve"),
    "migrate-runs": (_migrate_runs, "rename run folders named by an earlier signature: study migrate-runs runs=runs"),
}


def usage() -> str:
    lines = ["usage: study <command> [args...]", "", "commands:"]
    lines += [f"  {name:<16} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"study: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
