# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEFS := .cache/definitions/.ready

.PHONY: setup run ig test lint unit bench clean

setup: $(STAMP) $(DEFS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(DEFS): $(STAMP) fhir_server/definitions/fetch.py
	$(PY) -m fhir_server.definitions.fetch
	touch $(DEFS)

run: setup ig
	$(PY) -m fhir_server.cli run

# The implementation guide: refreshes the resource list of ig/ImplementationGuide-espace.json and
# builds the static site into ig/site/ (served at /ig/).
ig: setup
	$(PY) -m fhir_server.ig

lint: setup
	$(VENV)/bin/ruff check fhir_server tests bench

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .cache .pytest_cache
