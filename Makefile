# meterline: every target sets itself up; a fresh clone needs only `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 12111
DATABASE_URL ?= sqlite:///./meterline.db
TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: install run test test-sqlite test-postgres test-long bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The key in .meterline-key is made once, so that every `make run` prints the same working key.
KEY_FILE := .meterline-key

run: install
	@test -s $(KEY_FILE) || $(BIN)/python -c "from meterline.services.accounts import generate_key; print(generate_key())" > $(KEY_FILE)
	$(BIN)/meterline migrate --database-url $(DATABASE_URL)
	$(BIN)/meterline serve --host $(HOST) --port $(PORT) --database-url $(DATABASE_URL) --api-key "$$(cat $(KEY_FILE))"

# The suite runs twice: on SQLite and on PostgreSQL (required: a run that cannot reach it fails).
test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --db=sqlite
	METERLINE_TEST_POSTGRES_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -q -p no:cacheprovider --db=postgresql

test-sqlite: install
	$(BIN)/python -m pytest -q --db=sqlite

test-postgres: install
	METERLINE_TEST_POSTGRES_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -q --db=postgresql

test-long: install
	METERLINE_LONG=1 $(BIN)/python -m pytest -q --db=sqlite
	METERLINE_LONG=1 METERLINE_TEST_POSTGRES_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -q --db=postgresql

# HTTP benchmarks (about 6 minutes), then analytics on a generated 10M-event store (about 13),
# then meter event ingest over HTTP (v2 stream, v1) against the raw insert rate (about 5), then
# the invoice run of 10,000 subscriptions and the ledger reads (about 6): about 30 in all.
bench: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python bench/run.py
	$(BIN)/python bench/metering.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/billing.py

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) meterline.db meterline.db-wal meterline.db-shm
