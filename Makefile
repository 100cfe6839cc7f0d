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
	@$(BIN)/python -c "import json, sys; m = json.load(open(sys.argv[1])); t = m['timings_s']; \
	[print(f'{name:>16} {s:6.1f} s') for name, s in t.items()]; \
	print(f'{\"all analyses\":>16} {sum(t.values()):6.1f} s on {m[\"threads\"]} threads')" $(OUT)/scan.json

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/attention_stats.py

clean:
	rm -rf $(VENV) interp-out .pytest_cache .hypothesis
