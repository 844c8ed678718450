# The two commands a user needs:  make repro   and   make test
# Both set up .venv first when needed (scripts/setup.sh; a fast no-op when up to date).
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
RUN := PATH="$(VENV)/bin:$$PATH"

.PHONY: setup repro repro-parallel repro-slurm test test-fast bench kd-terms study mlflow-ui docs doctor

setup:
	@bash scripts/setup.sh

# one line per stage; each run's full log in runs/<group>/<run>.log (V=1: everything);
# two stages at a time without a GPU (AT_ONCE=1: one after the other)
repro: setup
	$(RUN) dipkd repro $(if $(V),-v) $(if $(AT_ONCE),--at-once $(AT_ONCE))

# N runs at a time through DVC's queue, one GPU (compute.gpus GPUs) each (dipkd/parallel_repro.py)
JOBS ?= 2
repro-parallel: setup
	$(RUN) dipkd repro --jobs $(JOBS)

# One SLURM job per run, dependencies in the scheduler (dipkd/slurm/, docs/gpus.md): resources
# from params.yaml's slurm: block; SLURM="partition=gpu time=12:00:00" overrides keys,
# MAX_JOBS=N keeps at most N jobs in the queue (default: all at once)
repro-slurm: setup
	$(RUN) dipkd repro --executor slurm $(if $(MAX_JOBS),--jobs $(MAX_JOBS)) \
		$(foreach kv,$(SLURM),--slurm $(kv)) $(if $(V),-v)

test: setup
	$(RUN) python -m pytest -v --durations=15

test-fast: setup
	$(RUN) python -m pytest -m "not slow"

# Everything a training run touches, on this machine's device, in a few minutes
# (dipkd/doctor/, reports/doctor.md); default cuda:0 + paper profile, cpu + smoke without CUDA
doctor: setup
	$(RUN) dipkd doctor $(if $(DEVICE),--device $(DEVICE)) $(if $(PROFILE),--profile $(PROFILE))

kd-terms: setup
	$(RUN) python benchmarks/kd_terms.py --out reports/kd_terms.md

# A committed study (studies/$(STUDY).yaml) through DVC in a worktree; report in
# reports/studies/$(STUDY)/ (pipeline/study.py).
STUDY ?= cpu
study: setup
	$(RUN) python -m pipeline.study --name $(STUDY) $(if $(AT_ONCE),--at-once $(AT_ONCE))

# MLflow 3.17 opens experiments on its GenAI page unless the URL asks for model training.
mlflow-ui: setup
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

# The documentation site (docs/, mkdocs.yml) at http://127.0.0.1:8000, rebuilt on every edit;
# tests/test_docs.py builds it with --strict.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs serve
