# The doors in: `make run` and `make test` (see README.md). Each creates .venv when needed.
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
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var/outbox
	@# A key of this checkout's own, made once: the settings read it when the environment gives no SECRET_KEY.
	@test -s var/secret_key || (umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))' \
		> var/secret_key && echo "made a SECRET_KEY in var/secret_key")
	rm -rf var/prometheus  # counters start again with the processes
	$(BIN)/python manage.py ensure_database
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	@echo
	@echo "mailservice is starting on http://$${BIND:-127.0.0.1:8000}"
	@echo "Create an API key in another shell:  $(BIN)/python manage.py create_api_key my-app"
	@echo "Create an admin user:                $(BIN)/python manage.py createsuperuser"
	@echo
	$(BIN)/honcho start

# The browser tests drive Debian's chromium (never a browser downloaded by Playwright).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest $(PYTEST_ARGS)

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
