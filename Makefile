# pgcast — the short list of things you run. `make check` is the test command;
# `make up` runs the whole stack. Both install what they need into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install install-system install-browser install-node install-bench-tools install-observability-tools client-js lint typecheck docs test check up down bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# nginx for `make up` and the stack test (apt-get, only when missing and root).
install-system:
	sh deploy/ensure-nginx.sh

# The benchmarks' tools and their tests': valgrind (bench.instructions) and gcc (the native
# load generator) (apt-get, only when missing and root).
install-bench-tools:
	sh deploy/ensure-package.sh valgrind valgrind bench.instructions
	sh deploy/ensure-package.sh gcc gcc bench/native

# promtool (Debian's prometheus package) checks and runs the alert rules' cases
# (tests/unit/test_observability.py) (apt-get, only when missing and root).
install-observability-tools:
	sh deploy/ensure-package.sh promtool prometheus tests/unit/test_observability.py

# Debian's chromium for the browser tests (apt-get, only when missing and root).
install-browser:
	sh tests/browser/ensure-chromium.sh

# node and npm for the JS client's tests (tests/js, tests/integration/test_npm_client.py)
# (apt-get, only when missing and root).
install-node:
	sh deploy/ensure-package.sh node nodejs "the JS client's tests"
	sh deploy/ensure-package.sh npm npm tests/integration/test_npm_client.py

# The gateway's /client.js is a verbatim copy of the npm package's source (clients/js);
# tests/unit/test_npm_client_files.py fails while they differ.
client-js:
	cp clients/js/src/client.js clients/js/src/client.d.ts gateway/static/

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into .site/; --strict: a broken link, a bad
# anchor or a page missing from the nav fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

# Bounded: the suite takes 5-8 min; a hang fails the run at 30 min, not at CI's limit.
test: install install-system install-browser install-node install-bench-tools install-observability-tools
	timeout --kill-after=30 1800 $(BIN)/pytest -q

check: lint typecheck docs test

up: install install-system
	$(PY) -m deploy.stack --demo $(ARGS)

down:
	$(PY) -m deploy.stack --stop

bench: install
	$(PY) -m bench

# Churn soak of a real gateway (10 minutes, 10,000 client slots; scale with PGCAST_SOAK_*,
# e.g. PGCAST_SOAK_SECONDS=60 PGCAST_SOAK_CONNECTIONS=500). Not part of `make check`.
soak: install
	$(PY) -m tests.soak.soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
