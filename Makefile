# `make demo` and `make test` work on a fresh clone: they create .venv when it is missing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed
BENCHMARKS := hypergrad exactness peers scaling distill

.PHONY: demo test bench bench-quick lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned, so the package's range (torch>=2.4) is already met and pip pulls nothing bigger.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nestopt run weight-decay

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The peers (the [bench] extra) with the venv's torch held at its installed version, so pip cannot swap
# it for another build; if the extra fails, each peer is tried alone, and the benchmarks run anyway
# (a peer that is missing gets rows saying so).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(BIN)/pip install --quiet -c $(VENV)/torch-constraint.txt -e ".[bench]" || \
	for req in $$($(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))\
			['project']['optional-dependencies']['bench'])" 2>/dev/null); do \
		$(BIN)/pip install --quiet -c $(VENV)/torch-constraint.txt "$$req" \
			|| echo "warning: $$req not installed; its benchmark rows will say so"; \
	done
	touch $(BENCH_STAMP)

# Every benchmark runs even if one fails; the summary is written from whatever results exist.
bench: $(BENCH_STAMP)
	status=0; for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py || status=1; done; \
		$(BIN)/python benchmarks/summary.py; exit $$status

bench-quick: $(BENCH_STAMP)
	status=0; for b in $(BENCHMARKS); do $(BIN)/python benchmarks/$$b.py --quick || status=1; done; \
		$(BIN)/python benchmarks/summary.py; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs benchmarks/results .pytest_cache
