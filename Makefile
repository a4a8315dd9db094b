# The doors in: `make run` and `make test` (see README.md). Each creates .venv when needed.
# MAIL_EMBEDDED_SERVICES=1 gives them an embedded PostgreSQL and Redis whatever the machine runs (DATABASE_URL and
# REDIS_URL still win); 0 never.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

# Every process of the Procfile (the API, a worker, beat, SMTP, the stream) until Ctrl-C, after making what they need (var/secret_key, the database,
# its tables, static files); with an embedded PostgreSQL and Redis where the machine runs none (launcher/).
run: $(STAMP)
	$(BIN)/python -m launcher run

# The browser tests drive Debian's chromium (never a browser downloaded by Playwright).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# tests/test_pgbouncer.py runs Debian's pgbouncer, a private one on a free port: the package's own service is not
# needed, so it is stopped and disabled where the package started it.
PGBOUNCER := /usr/sbin/pgbouncer

$(PGBOUNCER):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer
	-$(SUDO) systemctl disable --now pgbouncer 2>/dev/null || $(SUDO) service pgbouncer stop 2>/dev/null

# The whole suite (or PYTEST_ARGS), against embedded servers where the machine runs none.
test: $(STAMP) $(CHROMIUM) $(PGBOUNCER)
	$(BIN)/python -m launcher test $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The benchmark's own environment: the project plus its peers and load tools (see bench/run.py).
$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e . "django-post_office>=3.12,<4" "aiosmtpd>=1.4,<2"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench.run

clean:
	rm -rf $(VENV) $(BENCH_VENV) var .pytest_cache .ruff_cache
