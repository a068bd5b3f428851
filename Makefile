# Two commands do all the setup on a fresh machine with Python 3.11: `make train` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test lint ui ui-check stress bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $(STAMP)

# Train the bundled mammal closure into the embedded store (sqlite:///mlflow.db + ./mlartifacts)
# with the defaults, which are the best recipe measured (hype/config.py): lr 0.6 per batch of 10,
# 100 negatives, a 30-epoch burn-in at lr x 0.1, evaluation every epoch, patience 6 epochs.
train: $(STAMP)
	$(BIN)/python cli.py train --dataset data/mammal_closure.csv

lint: $(STAMP)
	$(BIN)/ruff check .

# Two test processes (pytest-xdist): most tests wait on servers and subprocesses, so two halve
# the wall time on 2 cores; tests/conftest.py keeps each file (and the shared-memory checks) on one.
# tests/test_ui_browser.py needs Debian's chromium (apt-get install chromium; .ci/run installs it)
# and nothing from npm or pip: it drives chromium's DevTools protocol through a pipe.
test: $(STAMP) lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadscope --no-loadscope-reorder

ui: $(STAMP)
	$(BIN)/python cli.py ui

# Not part of CI: installs Debian's chromium and screenshots the MLflow UI's artifact view with
# playwright-core from npm (make test's tests/test_ui_browser.py checks the UI without npm).
ui-check: $(STAMP)
	bash scripts/ui_check.sh

# The long kill -9 stress (20 trials, about 10 minutes); a short version runs in `make test`.
stress: $(STAMP)
	$(BIN)/python -m tests.stress.kill_stress --trials 20

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
