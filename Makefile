# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
# Each creates .venv if missing and (re)installs the project when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run sweep test test-all gradcheck ui repro params plots clean

# the flagship study (vanishing gradients against depth), then the one-page report of every study run so far
run: $(STAMP)
	$(PY) -m pipeline.study study=depth
	$(PY) -m pipeline.report

# a small ad-hoc sweep: 3 activations x 2 inits at depth 8, in parallel, one MLflow parent run
sweep: $(STAMP)
	$(PY) -m pipeline.train -m hydra/launcher=joblib model.activation=sigmoid,tanh,relu \
		init=xavier_uniform,he_normal model.depth=8 train.epochs=10

# DVC runs `python`: the venv's, first on PATH
repro: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH dvc repro

# params.yaml = conf/ composed (what plain `dvc repro` reads; dvc exp run -S recomposes it itself)
params: $(STAMP)
	$(PY) -m pipeline.params

# DVC's plots as one HTML page that works offline (vega inlined: .dvc/plots/offline.html)
plots: $(STAMP)
	$(VENV)/bin/dvc plots show -o dvc_plots

# the MLflow UI on the project's store (UI_STORE: the folder with mlflow.db and artifacts/), http://127.0.0.1:5000.
# One worker and no job runner (MLflow's GenAI jobs, unused here): ready in ~5 s instead of ~20 s and 15 processes.
# Experiments created from the UI keep their artifacts in $(UI_STORE)/artifacts, like the pipeline's.
UI_STORE ?= $(CURDIR)/mlruns
UI_PORT  ?= 5000
ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(UI_STORE)/mlflow.db \
		--default-artifact-root $(UI_STORE)/artifacts --host 127.0.0.1 --port $(UI_PORT) --workers 1

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## including the slow studies and benchmarks
	$(PY) -m pytest -q -m ""

gradcheck: $(STAMP)
	$(PY) -m pipeline.gradcheck

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("gradlab needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,dist]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis outputs multirun
