"""`study bench <what>`: speed and memory benchmarks, printed as tables; no test asserts timings.

Each benchmark lives beside the code it measures; this module only dispatches.
"""

import importlib
import sys

# name -> the module whose main(argv) runs it (imported only when that benchmark runs)
BENCHMARKS = {"model": "study.bench.model", "data": "study.bench.data", "train": "study.bench.train",
              "generate": "study.bench.generate", "kernel": "study.bench.kernel", "gpu": "study.bench.gpu",
              "serve": "study.serve.bench"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: study bench {{{'|'.join(BENCHMARKS)}}} key=value ...", file=sys.stderr)
        return 2
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:]) or 0
