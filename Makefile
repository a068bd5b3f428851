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

# Train the bundled mammal closure into the embedded store (sqlite:///mlflow.db + ./mlartifacts).
# 600 epochs = the original's 300 epochs x 2 processes (each of its processes makes a full pass).
train: $(STAMP)
	$(BIN)/python cli.py train --dataset data/mammal_closure.csv --epochs 600 --workers 2 --eval-every 20 --patience 10

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

ui: $(STAMP)
	$(BIN)/python cli.py ui

# Not part of CI: installs Debian's chromium and screenshots the MLflow UI's artifact view.
ui-check: $(STAMP)
	bash scripts/ui_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
