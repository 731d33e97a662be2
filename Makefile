# The two commands: `make demo` (the TFX pipeline on MovieLens-100K) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/movielens.yaml
PYTEST_ARGS ?=

.PHONY: demo compare test env clean

$(STAMP): setup.py requirements/constraints.txt scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)

env: $(STAMP)

# The main job: ingest, validate, embed (Beam + frozen LLM), transform, train, evaluate and push
# a blessed model version to the TF Serving model base; prints the lineage and the evaluation table.
demo: $(STAMP)
	$(VENV)/bin/learn pipeline run --config $(CONFIG)

# The per-step commands (the same functions the pipeline's components call): LEARN (a), LEARN (c) and
# SASRec trained and evaluated with content-kNN and Popularity under <output_dir>/results.
compare: $(STAMP)
	$(VENV)/bin/learn ingest --config $(CONFIG)
	$(VENV)/bin/learn embed --config $(CONFIG)
	$(VENV)/bin/learn train --config $(CONFIG)
	$(VENV)/bin/learn evaluate --config $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
