# The two commands: `make demo` (main job on MovieLens-100K) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test env clean

$(STAMP): setup.py requirements/constraints.txt scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/learn demo --config configs/movielens.yaml

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
