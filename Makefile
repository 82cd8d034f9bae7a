# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the demo and the tests start for real.
DEB_PACKAGES := docker-registry prometheus prometheus-pushgateway prometheus-blackbox-exporter \
	mtail skopeo umoci apache2-utils openssl ca-certificates

.PHONY: demo test deps venv bench generate clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -m venv --help >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/regwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# The Helm library for the chart tests; its wheel declares Python 3.12 but runs on 3.11.
	$(BIN)/pip install -q --ignore-requires-python 'helm-sdkpy>=0.1.32,<0.2'
	touch $@

venv: deps $(BIN)/regwatch

demo: venv
	$(BIN)/regwatch demo

test: venv
	$(BIN)/python -m pytest -q

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
