# sashimi-study: every user-facing command. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE ?= full
ARGS ?=

.PHONY: help install test demo replicate ablation grids search report gpu-check bench

help:
	@echo "make demo       the whole study at smoke scale on embedded data, ending with a report"
	@echo "make test       the test suite (CPU; Triton kernels under TRITON_INTERPRET=1)"
	@echo "make replicate  YouTubeMix SaShiMi-8 replication   (SCALE=full|smoke, ARGS=overrides)"
	@echo "make ablation   BigBand SaShiMi-8 vs SaShiMi-2     (SCALE=full|smoke, ARGS=overrides)"
	@echo "make grids      dropout / weight-decay / lr / sample-rate grids"
	@echo "make search     Optuna search over temperature and top-p"
	@echo "make report     executed report notebook + HTML"
	@echo "make gpu-check  CUDA tests and GPU benchmarks (needs a GPU)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

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

gpu-check: install
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine')"
	$(BIN)/python -m pytest -m cuda -v $(ARGS)
	$(BIN)/study bench kernel
	$(BIN)/study bench model
	$(BIN)/study bench generate
