"""The engine's numba cache is cleared when any of its sources changed (numba itself only tracks the file
of each function, while the engine inlines kernels from several files)."""

import importlib.util
import sys
from pathlib import Path

from study.generation.engines.numba_cache import STAMP_NAME, cached_functions, clear_if_sources_changed
from study.generation.engines.numba_engine import ENGINE_MODULES


def _module_from(path, name, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)   # removed again after the test, even when it fails
    spec.loader.exec_module(module)
    return module


def test_cache_is_cleared_once_after_a_source_changes(tmp_path, monkeypatch):
    source = tmp_path / "kernels_under_test.py"
    source.write_text("import numba\n\n\n@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    module = _module_from(source, "kernels_under_test", monkeypatch)
    assert module.twice(3) == 6                       # compiled and written to the cache
    index = module.twice._cache._cache_file
    assert index._load_index(), "numba wrote no cache index"
    assert clear_if_sources_changed([module])         # no stamp yet: cleared
    assert index._load_index() == {}
    assert (tmp_path / "__pycache__" / STAMP_NAME).is_file()
    assert module.twice(4.0) == 8.0                   # a new signature compiles and caches again
    assert index._load_index()
    assert not clear_if_sources_changed([module])     # same sources: the cache stays
    assert index._load_index()
    source.write_text(source.read_text() + "\n# an edit\n")
    assert clear_if_sources_changed([module])         # edited: cleared again
    assert index._load_index() == {}


def test_the_engine_cache_covers_every_module_with_cached_functions():
    names = {function.py_func.__module__ for function in cached_functions(ENGINE_MODULES)}
    assert {"study.generation.engines.numba_kernels", "study.generation.engines.numba_ssm",
            "study.generation.engines.numba_network", "study.generation.engines.numba_sampler"} <= names
    folder = Path(sys.modules["study.generation.engines.numba_engine"].__file__).parent
    # every numba module but these three (no compiled functions of their own) is covered
    numba_sources = {path.stem for path in folder.glob("numba_*.py")} - {"numba_cache", "numba_engine", "numba_plan"}
    assert numba_sources == {module.__name__.rsplit(".", 1)[1] for module in ENGINE_MODULES}
