# sashimi-study: every user-facing command. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE ?= full
ARGS ?=
BENCH ?= model train generate data kernel

UV_VERSION := 0.13.8
LOCK := requirements.lock

.PHONY: help install lock check-install test demo replicate ablation grids search report gpu-check bench

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
	@echo "make gpu-check  CUDA tests and GPU benchmarks (needs a GPU)"

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

gpu-check: install
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine')"
	$(BIN)/python -m pytest -m cuda -v $(ARGS)
	$(BIN)/study bench kernel
	$(BIN)/study bench model
	$(BIN)/study bench generate
