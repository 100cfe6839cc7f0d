# One-command set-up: a local virtualenv in .venv with interp installed editable (CPU torch 2.13.0).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= smollm2-135m
OUT ?= interp-out/$(MODEL)

.PHONY: setup demo test bench clean

$(BIN)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/interp scan $(MODEL) --out $(OUT) --overwrite

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/attention_stats.py

clean:
	rm -rf $(VENV) interp-out .pytest_cache .hypothesis
