# lakescore — the README's commands. `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON_BASE ?= python3
# The venv lives outside the clone, keyed by the lock file's hash: a fresh clone reuses it, a new lock gets a new one.
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-12)
VENV ?= $(HOME)/.cache/lakescore/venv-$(LOCK_HASH)
PY := $(VENV)/bin/python
# Stamps name the lock's content, not its time: a second clone or a copy of the repository (whose files are all newer
# than any stamp) finds the venv installed and runs no pip; a changed lock has another hash, so it is installed.
STAMP := $(VENV)/.lock-$(LOCK_HASH)
DELTA_SPARK := $(shell sed -n 's/^delta[-_]spark==//p' requirements.lock)
PYSPARK := $(shell sed -n 's/^pyspark==//p' requirements.lock)
JARS_DIR ?= $(HOME)/.cache/lakescore/jars-delta-$(DELTA_SPARK)-spark-$(PYSPARK)
# moto's S3 server for the object-store tests, in a tool venv of its own (its Flask/Werkzeug would clash with MLflow's pins).
MOTO := $(shell sed -n 's/^moto==//p' tests/moto.lock)
MOTO_VENV ?= $(HOME)/.cache/lakescore/moto-$(MOTO)
MOTO_STAMP := $(MOTO_VENV)/.lock-$(shell sha256sum tests/moto.lock | cut -c1-12)

export PATH := $(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)
export LAKESCORE_JARS_DIR := $(JARS_DIR)
export LAKESCORE_MOTO_SERVER := $(MOTO_VENV)/bin/moto_server
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-s3a demo shell test bench lock clean-demo

# No editable install: it would point the shared venv at whichever clone ran `make` last. The venv's `lakescore`
# command (jobs/console.sh) runs the checkout on PYTHONPATH, which make and `make shell` set, or the one in the
# current directory; an older venv's editable install is removed for the same reason.
$(STAMP):
	@echo "== creating $(VENV) from requirements.lock (first time only; torch is large)"
	$(PYTHON_BASE) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip uninstall -q -y lakescore
	install -m 755 jobs/console.sh $(VENV)/bin/lakescore
	touch $@

# The jars need a venv to fetch them, not a newer one: order-only, so a new stamp does not fetch them again.
$(JARS_DIR)/jars.txt: | $(STAMP)
	@echo "== fetching the delta-spark $(DELTA_SPARK) jars for Spark $(PYSPARK) from Maven Central (once)"
	$(PY) -m engine.spark.jars --dest $(JARS_DIR)

# Hadoop's S3A connector (hadoop-aws and the AWS SDK bundle, ~640 MB) for Spark SQL on a lake on S3: analysts and the
# object-store tests need it, `make demo` does not.
$(JARS_DIR)/s3a.txt: | $(STAMP)
	@echo "== fetching Hadoop's S3A connector (hadoop-aws, AWS SDK bundle) for Spark $(PYSPARK) from Maven Central (once)"
	$(PY) -m engine.spark.jars --dest $(JARS_DIR) --s3a

$(MOTO_STAMP):
	@echo "== creating $(MOTO_VENV) (moto's S3 server for the object-store tests) from tests/moto.lock"
	$(PYTHON_BASE) -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/pip install -q --upgrade pip
	$(MOTO_VENV)/bin/pip install -q -r tests/moto.lock
	touch $@

setup: $(STAMP) $(JARS_DIR)/jars.txt $(MOTO_STAMP)

setup-s3a: setup $(JARS_DIR)/s3a.txt

demo: setup
	$(PY) -m jobs.demo --config conf/demo.yaml
	$(PY) -m jobs.validate --config conf/validate.yaml
	$(PY) -m jobs.score --config conf/score.yaml
	$(PY) -m jobs.score --config conf/score.yaml model.uri=models:/lakescore-demo-mlp/1
	$(PY) -m jobs.evaluate --config conf/evaluate.yaml
	$(PY) -m jobs.evaluate --config conf/evaluate.yaml --follow
	$(PY) -m jobs.backtest --config conf/backtest.yaml
	$(PY) -m jobs.promote --config conf/score.yaml --model lakescore-demo-xgb --to 2 --why "demo: a person promotes the candidate"
	$(PY) -m jobs.rollback --config conf/score.yaml --model lakescore-demo-xgb --why "demo: roll the candidate back"
	$(PY) -m jobs.models --config conf/score.yaml --history lakescore-demo-xgb --alias champion
	@$(PY) -m jobs.demo_info --config conf/score.yaml

# A shell with the venv active (the README's queries, `lakescore …`), or, when not at a terminal, the line that
# activates it: `eval "$$(make -s shell)"` in the current shell.
ACTIVATE := source $(VENV)/bin/activate && export PYTHONPATH=$(CURDIR) LAKESCORE_JARS_DIR=$(JARS_DIR) MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
shell: setup
	@if [ -t 0 ] && [ -t 1 ]; then \
	  echo "== $${SHELL:-/bin/bash} with $(VENV) active and PYTHONPATH=$(CURDIR); exit to leave"; \
	  VIRTUAL_ENV=$(VENV) exec $${SHELL:-/bin/bash} -i; \
	else \
	  echo '$(ACTIVATE)'; \
	fi

test: setup-s3a
	$(PY) -m pytest tests

bench: setup
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Regenerate the lock from pyproject's direct dependencies (then commit requirements.lock).
lock:
	rm -rf .make/lockenv && $(PYTHON_BASE) -m venv .make/lockenv
	.make/lockenv/bin/pip install -q --upgrade pip && .make/lockenv/bin/pip install -q ".[test]"
	.make/lockenv/bin/pip freeze --exclude lakescore > requirements.lock

clean-demo:
	rm -rf lake mlruns.db mlartifacts
