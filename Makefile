# sashimi-study: every user-facing command. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE ?= full
ARGS ?=
# `make gpu-check GPU_PYTHON=python3` on a bare GPU machine: the check needs only torch, triton,
# numba, numpy and PyYAML (pytest for its test phase), not the locked environment.
GPU_PYTHON ?= $(BIN)/python
GPU_WHEELS_DIR ?= .whl
GPU_PLATFORMS := manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64
BENCH ?= model train generate data kernel

UV_VERSION := 0.13.8
LOCK := requirements.lock

.PHONY: help install lock check-install test demo replicate ablation grids search report gpu-check gpu-wheels bench

help:
	@echo "make help       this list"
	@echo "make install    create .venv with exactly the locked dependency tree ($(LOCK))"
	@echo "make lock       re-resolve $(LOCK) from pyproject.toml (after changing a pin)"
	@echo "make check-install  check that .venv matches the lock and every dependency imports"
	@echo "make demo       the whole study at smoke scale on embedded data, ending with a report (ARGS=key=value)"
	@echo "make test       the test suite (CPU; Triton kernels under TRITON_INTERPRET=1)"
	@echo "make replicate  YouTubeMix SaShiMi-8 replication   (SCALE=full|smoke, ARGS=overrides)"
	@echo "make ablation   BigBand SaShiMi-8 vs SaShiMi-2     (SCALE=full|smoke, ARGS=overrides)"
	@echo "make grids      dropout / weight-decay / lr / sample-rate grids"
	@echo "make search     Optuna search over temperature and top-p (ARGS=\"checkpoint=PATH trials=12\")"
	@echo "make report     executed report notebook + HTML     (ARGS=\"studies=replicate name=paper\")"
	@echo "make bench      speed and memory benchmarks         (BENCH=$(BENCH), ARGS=key=value settings)"
	@echo "make gpu-check  the GPU check: CUDA tests, training and generation figures, gpu-report.json/.md (needs a GPU)"
	@echo "make gpu-wheels the small wheels a bare GPU machine may lack (Python 3.12, manylinux x86_64) into $(GPU_WHEELS_DIR)/"

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --python $(BIN)/python --require-hashes $(LOCK)
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install --quiet uv==$(UV_VERSION); }
	$(BIN)/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 --generate-hashes --quiet -o $(LOCK)
	@echo "wrote $(LOCK); run 'make install' to install it"

check-install: install
	$(BIN)/uv pip check --python $(BIN)/python
	$(BIN)/python tools/check_install.py

test: install
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -m "not cuda" --durations=15 $(ARGS)

demo: install
	$(BIN)/study demo $(ARGS)

replicate: install
	$(BIN)/study run replicate scale=$(SCALE) $(ARGS)

ablation: install
	$(BIN)/study run ablation scale=$(SCALE) $(ARGS)

grids: install
	$(BIN)/study run grid-dropout scale=$(SCALE) $(ARGS)
	$(BIN)/study run grid-weight-decay scale=$(SCALE) $(ARGS)
	$(BIN)/study run grid-lr scale=$(SCALE) $(ARGS)
	$(BIN)/study run grid-sample-rate scale=$(SCALE) $(ARGS)

search: install
	$(BIN)/study search-sampling $(ARGS)

report: install
	$(BIN)/study report $(ARGS)

bench: install
	@for suite in $(BENCH); do echo "== study bench $$suite $(ARGS)"; $(BIN)/study bench $$suite $(ARGS) || exit 1; done

gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m study.cli bench gpu $(ARGS)

gpu-wheels: install
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS_DIR) \
		$$($(BIN)/python -c "from study.bench.gpu import wheel_requirements; print(*wheel_requirements())")
	@ls -1 $(GPU_WHEELS_DIR)
