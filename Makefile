# The README's commands. Each target sets up everything it needs on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stemkit-installed
# pytest-xdist workers of `make test` (0 = one process)
WORKERS ?= 2

.PHONY: demo test test-shuffled lint lock bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt scripts/setup-system.sh
	PYTHON=$(PYTHON) bash scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Exactly the versions that passed here, each verified by hash (scripts/lock.sh writes the
	# lock). --no-deps: the lock is the whole environment, including the parity references
	# openunmix and asteroid, whose declared dependencies (torchaudio, pytorch-lightning, an
	# unpinned torch) are not needed by the code the tests use. torch is the CPU build.
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stemkit demo --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	# One torch thread per worker: two workers with two threads each on two cores thrash.
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -p no:randomly -n $(WORKERS) tests

# The suite in a random order (a new seed each run; pytest-randomly prints it), one process.
test-shuffled: lint
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -p randomly -n 0 tests

# Rewrites requirements/lock.txt from the current environment after a dependency change.
lock: $(STAMP)
	bash scripts/lock.sh $(VENV)

# Every benchmark against its reference, one after the other (about half an hour on 2 cores);
# each writes bench/results/<name>.md and .json.
bench: $(STAMP)
	$(BIN)/python bench/separation.py
	$(BIN)/python bench/streaming.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/onnx_engine.py
	$(BIN)/python bench/long_song.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
