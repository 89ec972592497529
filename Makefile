# Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format install migrate demo bench clean checks-install package-test swagger-test postman fuzz crashtest tour-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/bank migrate

demo: $(STAMP)
	$(BIN)/bank demo

run: $(STAMP)
	$(BIN)/bank demo
	$(BIN)/bank serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check app tests bench checks
	$(BIN)/ruff format --check app tests bench checks

format: $(STAMP)
	$(BIN)/ruff format app tests bench checks
	$(BIN)/ruff check --fix app tests bench checks

# The money-path benchmark (issue 9): about 8 minutes; see bench/__main__.py for options.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# The checks real clients apply (issue 17); CI runs each after the unit suites.
CHECKS_STAMP := $(VENV)/.checks-installed
$(CHECKS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,checks]'
	touch $(CHECKS_STAMP)

checks-install: $(CHECKS_STAMP)

package-test: $(CHECKS_STAMP)
	$(BIN)/python -m checks.package

swagger-test: $(CHECKS_STAMP)
	$(BIN)/python -m checks.swagger

postman: $(CHECKS_STAMP)
	cd postman && npm ci --silent --no-audit --no-fund
	$(BIN)/python -m checks.postman

tour-test: $(CHECKS_STAMP)
	$(BIN)/python -m checks.tour

fuzz: $(CHECKS_STAMP)
	$(BIN)/python -m checks.fuzz $(FUZZ_ARGS)

# SQLite always; PostgreSQL too when BANK_CRASH_DATABASE_URL is set.
crashtest: $(CHECKS_STAMP)
	$(BIN)/python -m checks.crash $(CRASH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache postman/node_modules
