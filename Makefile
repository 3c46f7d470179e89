# The two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck bench chaos clean install

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

# A longer schemathesis run than make test's (more examples per operation, longer
# stateful workflows); SSOT_FUZZ_SEED picks another deterministic run.
fuzz: $(STAMP)
	SSOT_FUZZ_EXAMPLES=$${SSOT_FUZZ_EXAMPLES:-300} SSOT_FUZZ_STEPS=$${SSOT_FUZZ_STEPS:-10} \
		$(PY) -m pytest tests/test_openapi_fuzz.py -p no:cacheprovider --timeout=3600

lint: $(STAMP)
	$(VENV)/bin/ruff check ledger integrity projections api ops client tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy ledger integrity projections api ops client

bench: $(STAMP)
	$(PY) -m nexus_ssot.ops.bench --out bench/results

# The correctness harness (README "Correctness harness"): `make chaos DURATION=3600 SEED=42`.
DURATION ?= 600
CLIENTS  ?= 16
ifeq ($(SEED),)
SEED := $(shell $(PYTHON) -c 'import random; print(random.randrange(1000000))')
endif
chaos: $(STAMP)
	@echo "chaos seed $(SEED) (reproduce: make chaos SEED=$(SEED) DURATION=$(DURATION))"
	$(VENV)/bin/ssot chaos --duration $(DURATION) --clients $(CLIENTS) --seed $(SEED)

clean:
	rm -rf $(VENV) .ssot .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
