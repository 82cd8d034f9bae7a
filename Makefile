# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_ARGS ?=

# Debian packages `make demo` starts for real: docker-registry, and htpasswd (apache2-utils) for its users.
DEMO_DEBS := docker-registry apache2-utils ca-certificates
# ... and those the tests and benchmarks start or call as well (each tool a subprocess runs):
#   prometheus: prometheus, promtool          prometheus-pushgateway, prometheus-blackbox-exporter, mtail
#   skopeo, umoci: image copies and layouts    openssl: `openssl dgst` (bench)   mount: mount/umount (e2e tmpfs)
# (df, script and the rest come with every Debian: coreutils, bsdutils; process checks use psutil, not ps.)
TEST_DEBS := $(DEMO_DEBS) prometheus prometheus-pushgateway prometheus-blackbox-exporter mtail skopeo umoci \
	openssl mount

.PHONY: demo test test-fast lint deps demo-deps venv bench generate clean

# $(call debs,PACKAGES): apt-get install whichever of PACKAGES (and python3-venv) is missing.
define debs
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

demo-deps:
	$(call debs,$(DEMO_DEBS))

deps:
	$(call debs,$(TEST_DEBS))

# regwatch and its runtime dependencies: all the demo needs.
$(VENV)/.runtime: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# ... plus the test extras and the Helm library for the chart tests (its wheel declares Python 3.12 but
# runs on 3.11).
$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --ignore-requires-python 'helm-sdkpy>=0.1.32,<0.2'
	touch $@

venv: deps $(VENV)/.test

demo: demo-deps $(VENV)/.runtime
	$(BIN)/regwatch demo $(DEMO_ARGS)

# ruff's config is in pyproject.toml ([tool.ruff]); both test targets lint first.
lint: venv
	$(BIN)/ruff check regwatch tests bench

# Every test on four workers (pytest-xdist; each test's servers take free loopback ports and temp dirs).
# Most of a test's time is spent waiting on the servers it starts, so four workers keep two cores busy.
test: lint
	$(BIN)/python -m pytest -q -n 4 --dist worksteal

# The tests that start no server and are not slow (the `servers` and `slow` markers, tests/conftest.py).
test-fast: lint
	$(BIN)/python -m pytest -q -m "not servers and not slow"

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

generate: venv
	$(BIN)/regwatch generate alerts --out alerts
	$(BIN)/regwatch generate dashboards --out dashboards
	$(BIN)/python -m regwatch.generate.helm_schema helm/regwatch/values.schema.json
	# Helm reads only files inside the chart: copy the generated rules and dashboards into it.
	mkdir -p helm/regwatch/files/dashboards
	rm -f helm/regwatch/files/dashboards/*.json
	cp alerts/regwatch.rules.yml helm/regwatch/files/regwatch.rules.yml
	cp dashboards/provisioning/*.json helm/regwatch/files/dashboards/

clean:
	rm -rf $(VENV) .pytest_cache
