# worm-pipeline developer tasks.  `make demo` and `make test` are the README's two set-up commands.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test test-fast lint typecheck bench install clean

$(BIN)/pipeline: pyproject.toml setup.py pipeline/_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/pipeline

demo: $(BIN)/pipeline
	$(BIN)/pipeline quickstart

# everything the suite needs that pip does not install: Azurite (npm), LocalStack (own venv),
# checkov (own venv), the Go toolchain for interoperability tests
test-deps: $(BIN)/pipeline
	bash tools/install-test-deps.sh

test: test-deps
	$(BIN)/pytest -n 2 --dist loadfile

test-fast: $(BIN)/pipeline
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow and not localstack and not azurite and not tools"

lint: $(BIN)/pipeline
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/mypy

bench: $(BIN)/pipeline
	$(BIN)/python bench/bench_append.py

clean:
	rm -rf $(VENV) build dist *.egg-info
