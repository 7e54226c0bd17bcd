# Everything a fresh machine needs: `make demo` and `make test` install before they run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: install demo test lint docs bench soak brokers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MSGKIT_URL=memory:// $(BIN)/python -m examples.orders

brokers: $(STAMP)
	$(BIN)/python -m msgkit.testing.brokers up

test: $(STAMP) brokers
	$(BIN)/python -m pytest -q -p no:randomly -rs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

soak: $(STAMP) brokers
	MSGKIT_CRASH_KILLS=60 $(BIN)/python -m pytest -q -m "soak or not soak" tests/test_crash.py \
		tests/outbox/test_outbox_crash.py
	MSGKIT_FAILOVER_ROUNDS=5 $(BIN)/python -m pytest -q -s -m "soak or not soak" tests/kafka/test_kafka_failover.py \
		tests/rabbitmq/test_rabbitmq_failover.py

bench: $(STAMP) brokers
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) docs/site bench/results.json bench/results.md bench/results.png
