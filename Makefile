# make test: set up .venv and run every test.  make lab: set up and open the quickstart.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export BODHI_NB_TEST_THREADS ?= 2
# A portable llama.cpp build: -march=native here emits AMX/AVX-512 code that dies with
# SIGILL in this sandbox although the CPU advertises it. AVX2/FMA/F16C are enough for
# the small bundled model.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: test lab setup clean bench lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -e '.[local,dev]'
	$(PY) -m bodhi_nb.services._selfcheck
	touch $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check bodhi_nb tests benchmarks
	$(PY) -m mypy bodhi_nb

lab: $(STAMP)
	$(VENV)/bin/bodhi-nb lab $(LAB_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_store.py

clean:
	rm -rf $(VENV)
