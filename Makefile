# mtrec: `make run` sets everything up and runs the pipeline; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test test-fast lint format lock clean

install: $(STAMP)

# Two steps (see README, "Why a two-step install"): the pinned stack first, then tfx and
# ml-pipelines-sdk without their dependencies, because their metadata says Python < 3.11.
$(STAMP): requirements/stack.txt requirements/constraints.txt setup.py
	@$(PYTHON) -c 'import sys; v = sys.version_info[:3]; sys.exit(0 if (3, 11, 5) <= v < (3, 12) else "mtrec needs CPython 3.11.5 or newer 3.11 (the lock pins packages that require it); $(PYTHON) is %d.%d.%d. Put one first on PATH or run: make PYTHON=/path/to/python3.11" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==24.2
	$(BIN)/pip install -r requirements/stack.txt -c requirements/constraints.txt
	$(BIN)/pip install --no-deps --ignore-requires-python tfx==1.16.0 ml-pipelines-sdk==1.16.0
	$(BIN)/pip install --no-deps -e .
	$(BIN)/python -c "import tfx, tensorflow_recommenders, tensorflow_model_analysis"
	touch $@

# Debian's Chromium, for the test that renders `mtrec report` headless (needs root/apt).
system-deps:
	command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: install
	$(BIN)/mtrec run

# Everything, as CI runs it: the linter first, then unit, integration and end-to-end tests.
test: install lint
	$(BIN)/python -m pytest -q tests

# The unit tests alone (tiny in-test data; under 2 minutes).
test-fast: install
	$(BIN)/python -m pytest -q -m unit tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin after changing requirements/stack.txt (run in a fresh .venv).
lock:
	{ echo "# Lock of the verified stack (pip freeze of a fresh .venv on Debian 12 / CPython 3.11.7)."; \
	  echo "# Used as -c for requirements/stack.txt so the install cannot drift. Regenerate with 'make lock'."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -E "^(tfx|ml-pipelines-sdk)=="; } > requirements/constraints.txt

clean:
	rm -rf mtrec_output kubeflow_pipeline.json
