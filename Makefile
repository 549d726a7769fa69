# Quick start:  make demo  (train a GAT on Tox21, print test ROC-AUC)   |   make test  (the test suite)
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV ?= .venv
# The CPU build keeps the environment small (1.5 GB instead of ~6 GB for CUDA);
# on a GPU machine run `make TORCH=torch ...` to get pip's default (CUDA) build.
TORCH ?= torch==2.13.0
# The offline data mirror next to the checkout, when there is one; otherwise data is downloaded.
GRAPHMEM_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export GRAPHMEM_DATA

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/graphmem fit --config recipes/tox21_gat.yaml --trainer.enable_progress_bar false

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# the documentation site, into site/ (strict: a broken link or page fails the build); the test
# extra that the venv installs holds the docs packages (pip install -e '.[docs]' elsewhere)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs lightning_logs site
