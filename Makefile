# The two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-unit test-cluster lint lint-imports import-tree promtool chromium screenshots monitoring typecheck bench bench-instructions chaos fuzz clean install

install: $(STAMP)

# uv installs what pyproject.toml pins in seconds where pip takes ~40 s of CPU (the same
# versions); pip does it when uv cannot be had. uv itself goes beside the venv (pip's
# --target), not in it, so the venv is made without pip (ensurepip took 5 s of the 16) and
# uv puts pip in it. uv compiles every module on both cores as it installs: left to the
# first import, the compiling made make test's first collection 11 s longer, on one core.
UV_VERSION ?= 0.13.9
PIP_VERSION ?= 26.3
UV := $(VENV)/uv-$(UV_VERSION)/bin/uv
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	{ test -x $(UV) || $(PYTHON) -m pip install --quiet --target $(VENV)/uv-$(UV_VERSION) \
		uv==$(UV_VERSION); } \
		&& $(UV) pip install --quiet --python $(PY) --compile-bytecode -e '.[dev]' \
		pip==$(PIP_VERSION) \
		|| { $(PY) -m ensurepip --upgrade >/dev/null \
		&& $(PY) -m pip install --quiet -e '.[dev]'; }
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ssot serve

# Everything, both cores: ruff and the import contracts, then every lane (unit,
# integration, the slow end-to-end runs) with mypy beside them (its log in build/). What
# .ci/run calls. Four workers on two cores: most integration tests wait on a server rather
# than compute (3.6 min against 4.1 with two, 2026-12-05). Since the files start longest
# first, four beat five: 282 s against 314, then 262 against 286 the other way round
# (pytest alone, back to back, 2026-12-06); each worker also collects, and holds its own
# servers and databases.
# Bytecode is written for this run even where PYTHONDONTWRITEBYTECODE is set: pytest
# rewrites the asserts of every test module and of whole plugin distributions
# (hypothesis, schemathesis, anyio) in every worker unless one has cached them. One
# collection of the whole suite caches them first, beside mypy: a worker then collects in
# ~3.3 s of CPU instead of ~6.8 (all of them at once, racing to rewrite the same files).
# --no-loadscope-reorder: the workers take the files in the order of tests/conftest.py's
# LONGEST_FIRST; xdist's default reorders them by their number of tests, which put the
# longest files, of one to three tests each, last.
test: $(STAMP) lint promtool chromium
	mkdir -p build; $(MAKE) --no-print-directory typecheck > build/typecheck.log 2>&1 & \
	typecheck=$$!; \
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest --collect-only -q -p no:cacheprovider \
		> build/collect.log 2>&1 || tail -n 20 build/collect.log; \
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -n 4 --dist loadfile \
		--no-loadscope-reorder --durations=30; \
	tests=$$?; \
	if wait $$typecheck; then tail -n 1 build/typecheck.log; \
	else cat build/typecheck.log; echo "make typecheck failed"; exit 1; fi; \
	exit $$tests

# promtool, for the Prometheus rules of ops/monitoring (tests/integration/test_monitoring.py
# checks them and runs their unit tests: every alert fires and resolves on synthetic
# series). It comes with Debian's prometheus package, installed here when missing and run
# as root (CI is); without promtool this fails, never skips.
PROMTOOL ?= promtool
promtool:
	@command -v $(PROMTOOL) >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get \
		>/dev/null || { echo "promtool missing: installing Debian's prometheus package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends prometheus >/dev/null; }
	@command -v $(PROMTOOL) >/dev/null 2>&1 || { echo "error: promtool not found: install \
	Debian's prometheus package (apt-get install prometheus)" >&2; exit 1; }

# Debian's Chromium, which the web console's end-to-end test drives through Playwright
# (tests/integration/test_console.py; Playwright's own browser download is never used).
# Installed here when missing and run as root (CI is); without it this fails, never skips.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ echo "chromium missing: installing Debian's chromium package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "error: $(CHROMIUM) not found: install Debian's \
	chromium package (apt-get install chromium)" >&2; exit 1; }

# The console's screenshots in docs/console/ (docs/console.md, the README), taken by its
# end-to-end test against the in-test server.
screenshots: $(STAMP) chromium
	$(PY) -m pytest tests/integration/test_console.py -n 0 -p no:cacheprovider \
		--console-screenshots docs/console

# The rules' checks alone (make test runs them among the tests).
monitoring: promtool
	$(PROMTOOL) check rules ops/monitoring/*.rules.yml
	cd ops/monitoring/tests && $(PROMTOOL) test rules *.test.yml

# The cluster (docs/cluster.md): every fault under load, each in a run of its own, and what
# asynchronous replication would lose (minutes; make test runs one short cluster run).
test-cluster: $(STAMP)
	$(PY) -m pytest --cluster -n 0 tests/integration/test_cluster.py tests/integration/test_cluster_faults.py

# The fast lane: no I/O, no processes, seconds.
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -n 0

# The import contracts of pyproject.toml ([tool.importlinter]) over the installed import
# root: the layer folders are linked under nexus_ssot/ so the linter sees what Python sees.
IMPORT_TREE := build/import-graph
import-tree:
	rm -rf $(IMPORT_TREE) && mkdir -p $(IMPORT_TREE)/nexus_ssot
	touch $(IMPORT_TREE)/nexus_ssot/__init__.py
	for part in ledger integrity access projections api ops client; do \
		ln -s ../../../$$part $(IMPORT_TREE)/nexus_ssot/$$part; done

lint-imports: $(STAMP) import-tree
	cd $(IMPORT_TREE) && PYTHONPATH=. $(CURDIR)/$(VENV)/bin/lint-imports --no-cache \
		$(CURDIR)/pyproject.toml

# A longer schemathesis run than make test's (more examples per operation, longer
# stateful workflows), and ten times the examples of make test's property tests, from
# random seeds (tests/examples.py); SSOT_FUZZ_SEED picks another deterministic run.
fuzz: $(STAMP)
	SSOT_FUZZ_EXAMPLES=$${SSOT_FUZZ_EXAMPLES:-300} SSOT_FUZZ_STEPS=$${SSOT_FUZZ_STEPS:-10} \
		SSOT_HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/integration/test_openapi_fuzz.py \
		tests/unit tests/integration/test_conflicts.py tests/integration/test_hash_chain.py \
		tests/integration/test_time_travel.py tests/integration/test_batch_restore.py \
		-n auto -p no:cacheprovider --timeout=3600

lint: $(STAMP) lint-imports
	$(VENV)/bin/ruff check ledger integrity access projections api ops client tests

# mypy over the same tree, so that every `from nexus_ssot.… import` is read as the code it
# names (the editable install's import hook is Python's, not mypy's).
typecheck: $(STAMP) import-tree
	cd $(IMPORT_TREE) && MYPYPATH=. $(CURDIR)/$(VENV)/bin/mypy \
		--config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache -p nexus_ssot

# docs/performance.md "How to rerun the benchmarks": the whole bench, or a part of
# it: `make bench BENCH_ARGS="--only budget"` (etcd joins in when its binary is installed).
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m nexus_ssot.ops.bench --out bench/results $(BENCH_ARGS)

# Instructions per request of one HTTP worker under valgrind, auth off and on
# (ops/bench/instructions.py; Debian's valgrind; SSOT_DATABASE_URL and SSOT_NATS_URL set).
bench-instructions: $(STAMP)
	$(PY) -m nexus_ssot.ops.bench.instructions --out bench/results $(INSTRUCTIONS_ARGS)

# The correctness harness (docs/harness.md): `make chaos DURATION=3600 SEED=42`.
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
