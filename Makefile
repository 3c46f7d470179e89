# The two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ssot serve

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check ledger projections api ops client tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy ledger projections api ops client

bench: $(STAMP)
	$(PY) -m nexus_ssot.ops.bench --out bench/results

clean:
	rm -rf $(VENV) .ssot .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
