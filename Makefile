# Every target sets itself up: .venv is created and the package installed when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo
DAYS ?= 7
ACCOUNTS ?= 200
SEED ?= 7

.PHONY: demo test bench lint schemas clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/defi-risk demo --out $(OUT) --days $(DAYS) --accounts $(ACCOUNTS) --seed $(SEED)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

schemas: $(STAMP)
	$(BIN)/defi-risk schemas generate

clean:
	rm -rf out .pytest_cache .ruff_cache
