# make test: set up .venv and run every test.  make lab: set up and open the quickstart.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export BODHI_NB_TEST_THREADS ?= 2

.PHONY: test lab setup clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/bodhi-nb lab

bench: $(STAMP)
	$(PY) benchmarks/bench_store.py

clean:
	rm -rf $(VENV)
