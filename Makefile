# Two commands: `make demo` and `make test`. Each creates .venv when missing and installs the
# package with constraints.txt, so on a CPU machine pip never fetches CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,dist]"
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
		echo "error: CUDA packages were installed into $(VENV); see README (GPU users)"; exit 1; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snnbackdoor demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # one test file per core, one torch thread each

bench: $(STAMP)
	$(BIN)/python benchmarks/train_digits.py
	$(BIN)/python benchmarks/throughput.py --quick
	$(BIN)/python benchmarks/badsnn_stages.py --quick

clean-venv:
	rm -rf $(VENV)
