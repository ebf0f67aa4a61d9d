# Set-up and entry points. `make run` and `make test` create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
CORES ?= all

.PHONY: run test test-fast venv clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-test.txt requirements.lock pyproject.toml
	$(BIN)/python -m pip install --quiet -c requirements.lock -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# The main job: the embedded demo (phantoms + LiTS volume 117) end to end into results/demo/.
run: venv
	$(BIN)/snakemake --cores $(CORES)

# The full test suite, including the end-to-end snakemake, dvc and mlflow tests.
test: venv
	$(BIN)/python -m pytest

# Unit tests only (skips the end-to-end runs marked slow).
test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

clean-results:
	rm -rf results/ logs/ mlflow.db mlartifacts/ .mlflow.lock
