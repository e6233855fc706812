"""`study bench <what>`: speed and memory benchmarks, printed as tables; no test asserts timings.

Each benchmark lives beside the code it measures; this module only dispatches.
"""

import sys


def _model(argv):
    from study.bench.model import main
    return main(argv)


def _data(argv):
    from study.bench.data import main
    return main(argv)


def _train(argv):
    from study.bench.train import main
    return main(argv)


def _generate(argv):
    from study.bench.generate import main
    return main(argv)


def _kernel(argv):
    from study.bench.kernel import main
    return main(argv)


def _gpu(argv):
    from study.bench.gpu import main
    return main(argv)


def _serve(argv):
    from study.serve.bench import main
    return main(argv)


BENCHMARKS = {"model": _model, "data": _data, "train": _train, "generate": _generate, "kernel": _kernel, "gpu": _gpu,
              "serve": _serve}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: study bench {{{'|'.join(BENCHMARKS)}}} key=value ...", file=sys.stderr)
        return 2
    return BENCHMARKS[argv[0]](argv[1:]) or 0
