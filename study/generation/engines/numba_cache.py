"""numba's on-disk cache of the CPU engine, cleared when any of the engine's sources changed.

numba keys each cached function by its own source file only, while the engine's compiled loop inlines
kernels from several files: an edit of one file would leave stale machine code in its callers' caches.
This never touches the caches of functions outside the modules it is given.
"""

import hashlib
import types
from pathlib import Path

from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher

STAMP_NAME = "engine-sources.sha256"


def sources_digest(modules: list[types.ModuleType]) -> str:
    """sha256 over the source files of `modules`, in order."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def cached_functions(modules: list[types.ModuleType]) -> list[CPUDispatcher]:
    """The numba functions of `modules` that keep an on-disk cache."""
    return [value for module in modules for value in vars(module).values()
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, FunctionCache)]


def clear_if_sources_changed(modules: list[types.ModuleType]) -> bool:
    """Empty the cache index of every cached function of `modules` when their sources differ from those
    the cache was built from (a stamp beside the cache); True when it cleared. A cache folder that cannot
    be written holds nothing numba wrote, so there is nothing to clear."""
    functions = cached_functions(modules)
    if not functions:
        return False
    stamp = Path(functions[0]._cache._cache_path) / STAMP_NAME
    digest = sources_digest(modules)
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return False
        for function in functions:
            function._cache.flush()
        partial = stamp.with_suffix(".partial")
        partial.write_text(digest)
        partial.replace(stamp)
    except OSError:
        return False
    return True
