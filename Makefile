# Runyard: `make run` opens the TUI, `make test` runs lint and the whole test suite.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build; a bare torch would pull CUDA's
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $(STAMP)

# .venv/bin first on PATH, as an activated venv would: runs launched from the TUI get its
# environment, so the example experiments' `python` is this venv's
run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/runyard

lint: $(STAMP)
	$(VENV)/bin/ruff check engine tui tests bench experiments
	$(VENV)/bin/ruff format --check engine tui tests bench experiments

test: lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/dispatch.py
	$(PY) bench/plan.py
	$(PY) bench/sampling.py
	$(PY) bench/remote.py
	$(PY) bench/tui.py
	$(PY) bench/chart.py
	$(PY) bench/results.py
	$(PY) bench/cli.py
	$(PY) bench/load.py  # issue 18's goals: exits non-zero when one is missed
	$(PY) bench/slurm.py  # a Slurm cluster and an SSH login on this machine (slurm-wlm, sshd)

clean:
	rm -rf $(VENV) .venv-peers .pytest_cache
