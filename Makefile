# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
# Each creates .venv if missing and (re)installs the project when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all gradcheck clean

run: $(STAMP)
	$(PY) -m pipeline.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## including the slow studies and benchmarks
	$(PY) -m pytest -q -m ""

gradcheck: $(STAMP)
	$(PY) -m pipeline.gradcheck

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("gradlab needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis outputs multirun
