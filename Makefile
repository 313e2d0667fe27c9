# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
# Each creates .venv if missing and (re)installs the project from requirements.lock when it or pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help studies run sweep test test-slow test-all lint gradcheck ui repro params plots lock clean team-server team-server-stop load-test load-test-train

# the flagship study (vanishing gradients against depth), then the one-page report of every study run so far
help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

run: $(STAMP)  ## the flagship study (depth) end to end, then the one-page report of every study
	$(PY) -m pipeline.study study=depth
	$(PY) -m pipeline.report

studies: $(STAMP)  ## every study with its claim, and how to run one
	@$(PY) -m pipeline.studies

# a small ad-hoc sweep: 3 activations x 2 inits at depth 8, in parallel, one MLflow parent run
sweep: $(STAMP)  ## a small ad-hoc Hydra multirun: 3 activations x 2 inits at depth 8
	$(PY) -m pipeline.train -m hydra/launcher=joblib model.activation=sigmoid,tanh,relu \
		init=xavier_uniform,he_normal model.depth=8 train.epochs=10

# DVC runs `python`: the venv's, first on PATH
repro: $(STAMP)  ## the whole DVC pipeline (dvc repro with the venv first on PATH)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH dvc repro

# params.yaml = conf/ composed (what plain `dvc repro` reads; dvc exp run -S recomposes it itself)
params: $(STAMP)  ## rewrite params.yaml from conf/ (what plain dvc repro reads)
	$(PY) -m pipeline.params

# DVC's plots as one HTML page that works offline (vega inlined: .dvc/plots/offline.html)
plots: $(STAMP)  ## DVC's plots as one offline HTML page (dvc_plots/)
	$(VENV)/bin/dvc plots show -o dvc_plots

# the MLflow UI on the project's store (UI_STORE: the folder with mlflow.db and artifacts/), http://127.0.0.1:5000.
# One worker and no job runner (MLflow's GenAI jobs, unused here): ready in ~5 s instead of ~20 s and 15 processes.
# Experiments created from the UI keep their artifacts in $(UI_STORE)/artifacts, like the pipeline's.
UI_STORE ?= $(CURDIR)/mlruns
UI_PORT  ?= 5000
ui: $(STAMP)  ## the MLflow UI on mlruns/ at http://127.0.0.1:5000
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(UI_STORE)/mlflow.db \
		--default-artifact-root $(UI_STORE)/artifacts --host 127.0.0.1 --port $(UI_PORT) --workers 1

# the team tracking server on one host: PostgreSQL in mlruns/team/pg and `mlflow server` on it (README "Scaling out");
# TEAM_ARGS: its options (`make team-server TEAM_ARGS="--dir /srv/gradlab-team"`: a folder PostgreSQL can reach)
TEAM_ARGS ?=
team-server: $(STAMP)  ## MLflow on PostgreSQL (needs Debian's postgresql) at http://127.0.0.1:5000
	$(PY) -m pipeline.tracking.team start $(TEAM_ARGS)

team-server-stop: $(STAMP)  ## stop the team server (its data stays in mlruns/team)
	$(PY) -m pipeline.tracking.team stop $(TEAM_ARGS)

load-test: $(STAMP)  ## N = 4, 16, 32 writers against SQLite, a server on SQLite, on PostgreSQL (~4 min)
	$(PY) -m benchmarks.tracking_load

load-test-train: $(STAMP)  ## N = 4, 16 real train runs as writers against each setup and tracking=off (~12 min on 2 busy cores)
	$(PY) -m benchmarks.tracking_load --mode train

test: $(STAMP)  ## the default test suite (under 2 minutes)
	$(PY) -m pytest -q

# ruff (lint rules and formatting) and mypy, configured in pyproject.toml; .pre-commit-config.yaml runs the same
lint: $(STAMP)  ## ruff (rules and formatting) and mypy, as CI runs them
	$(VENV)/bin/ruff check pipeline tests benchmarks
	$(VENV)/bin/ruff format --check pipeline tests benchmarks
	$(VENV)/bin/mypy

# the slow tests alone: every study end to end at smoke size, the browser, servers, clusters, benchmarks
test-slow: $(STAMP)  ## the slow tests the default suite leaves out
	$(PY) -m pytest -q -m slow

# everything: the default suite and the slow tests
test-all: $(STAMP)  ## every test
	$(PY) -m pytest -q -m ""

gradcheck: $(STAMP)  ## backprop against finite differences
	$(PY) -m pipeline.gradcheck

# The set-up. requirements.lock pins every package gradlab needs with its dev, dist and postgres extras (exact versions,
# markers for other platforms): the versions the studies were measured with. One plain requirements file
# rather than uv.lock because both installers read it: uv (seconds) and, where uv cannot be had, pip (minutes,
# the same versions). The venv gets the lock (`pip install -r`, not `sync`: a torch added by hand with
# `pip install -e '.[bench]'` stays; torch is not in the lock, its PyPI build is the multi-GB CUDA one), then
# gradlab itself, editable and --no-deps, then `pip check` (a dependency of gradlab's that the lock lacks or pins
# outside pyproject's range fails there: run `make lock`).
# uv: the venv's, else one on PATH, else bootstrapped into the venv with the venv's pip: nothing written
# outside the project (no ~/.local, no PATH to fix, no PEP 668 refusal), pinned, gone with `make clean`.
# `make INSTALLER=pip` forces plain pip. uv compiles the bytecode at install, as pip does (else the first
# processes that import MLflow, the first test run's, compile it themselves: seconds each).
LOCK       := requirements.lock
INSTALLER  ?= uv
UV_VERSION ?= 0.13.9
FIND_UV     = test -x $(VENV)/bin/uv && echo $(VENV)/bin/uv || { uv --version >/dev/null 2>&1 && command -v uv; } || \
	{ $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >/dev/null 2>&1 && echo $(VENV)/bin/uv; }

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit("gradlab needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(PY)
	@if [ "$(INSTALLER)" = uv ] && uv=$$($(FIND_UV)); then \
		echo "installing $(LOCK) with $$uv"; pip="$$uv pip"; export VIRTUAL_ENV=$(abspath $(VENV)); \
		export UV_COMPILE_BYTECODE=1; \
	else \
		[ "$(INSTALLER)" = pip ] || echo "no uv on PATH, and pip could not install uv==$(UV_VERSION) into $(VENV)"; \
		echo "installing $(LOCK) with pip (a couple of minutes)"; pip="$(PY) -m pip --disable-pip-version-check"; \
	fi; \
	set -e; $$pip install --quiet -r $(LOCK); $$pip install --quiet --no-deps -e .; \
	out=$$($$pip check 2>&1) || { echo "$$out"; echo "$(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	touch $(STAMP)

# requirements.lock again from pyproject.toml (after changing its dependencies), keeping each pin that still fits;
# `make lock LOCK_FLAGS=--upgrade` takes the newest versions instead. The bench extra (torch) stays out.
lock: | $(PY)  ## regenerate requirements.lock from pyproject.toml
	@uv=$$($(FIND_UV)) || { echo "make lock needs uv: none on PATH, and pip could not install uv==$(UV_VERSION)" >&2; exit 1; }; \
	$$uv pip compile pyproject.toml --extra dev --extra dist --extra postgres --universal --quiet \
		--custom-compile-command 'make lock' $(LOCK_FLAGS) -o $(LOCK) && echo "$(LOCK) written by $$uv"

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .hypothesis outputs multirun
