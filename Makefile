# Every target sets itself up: .venv is created and the package installed when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov (tests/infra/test_terraform.py) pins its own dependencies, so it gets its own venv, apart from Beam's.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
OUT ?= out/demo
DAYS ?= 7
ACCOUNTS ?= 200
SEED ?= 7

.PHONY: demo test bench lint schemas clean venv $(CHECKOV_VENV)

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(CHECKOV_VENV): $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PY) -m venv $(CHECKOV_VENV) || python3 -m venv $(CHECKOV_VENV)
	@echo '*' > $(CHECKOV_VENV)/.gitignore
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==3.3.30'
	@touch $(CHECKOV_STAMP)

demo: $(STAMP)
	$(BIN)/defi-risk demo --out $(OUT) --days $(DAYS) --accounts $(ACCOUNTS) --seed $(SEED)

test: $(STAMP) $(CHECKOV_STAMP)
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
