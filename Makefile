# The README's commands. Each target sets up everything it needs on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stemkit-installed

.PHONY: demo test lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-system.sh
	PYTHON=$(PYTHON) bash scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls the CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# openunmix is the parity reference; its declared torchaudio dependency has no CPU build here.
	$(BIN)/pip install -q --no-deps openunmix==1.3.0
	# asteroid is the X-UMX parity reference; its declared dependencies (pytorch-lightning, an
	# unpinned torch, ...) are not needed by its model code.
	$(BIN)/pip install -q --no-deps asteroid==0.7.0 asteroid-filterbanks==0.4.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stemkit demo --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	# One torch thread per worker: two workers with two threads each on two cores thrash.
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 tests

# Every benchmark against its reference, one after the other (about half an hour on 2 cores);
# each writes bench/results/<name>.md and .json.
bench: $(STAMP)
	$(BIN)/python bench/separation.py
	$(BIN)/python bench/streaming.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/long_song.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
