# Runyard: `make run` opens the TUI, `make test` runs lint and the whole test suite.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/runyard

lint: $(STAMP)
	$(VENV)/bin/ruff check engine tui tests bench
	$(VENV)/bin/ruff format --check engine tui tests bench

test: lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/dispatch.py
	$(PY) bench/plan.py
	$(PY) bench/sampling.py

clean:
	rm -rf $(VENV) .pytest_cache
