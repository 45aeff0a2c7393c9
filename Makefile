# buttress developer and CI entry points (GNU make).
#
#   make test    lint + typecheck + unit tests: the one command CI runs (.ci/run)
#   make demo    run the demo (python -m buttress.demo)
#   make bench   run the benchmark table (benchmarks/bench.py)
#   make harm    run the harm matrix and print its table (python -m tests.harm; docs/harm.md)
#   make reliability  the long reliability suite and its table of figures (docs/reliability.md)
#   make clean   remove caches and build output; `make distclean` also removes .venv
#
# Every target that needs tools depends on `venv`, which creates .venv on first use and
# re-installs only when pyproject.toml changes (stamp file). pyproject.toml is the single
# source of truth for dependencies: the [dependency-groups] tables are read with tomllib
# because pip < 25.1 cannot install dependency groups itself.

PYTHON ?= python3
VENV   ?= .venv
GROUPS ?= test lint bench dashboards
EXTRAS ?= otel,dashboards

BIN   := $(VENV)/bin
STAMP := $(VENV)/.stamp
REQS  := $(VENV)/dependency-groups.txt

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

# Prints the requirements of the dependency groups named in argv, one per line, following
# PEP 735 {include-group = "..."} entries.
define READ_GROUPS
import sys, tomllib
groups = tomllib.load(open("pyproject.toml", "rb")).get("dependency-groups", {})
expand = lambda name: [req for item in groups[name] for req in (expand(item["include-group"]) if isinstance(item, dict) else [item])]
print("\n".join(req for name in sys.argv[1:] for req in expand(name)))
endef
export READ_GROUPS

.PHONY: venv test lint typecheck unit demo bench harm reliability clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "buttress needs Python >= 3.11, got " + sys.version.split()[0] + " (set PYTHON=...)")'
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "$$READ_GROUPS" $(GROUPS) > $(REQS)
	$(BIN)/python -m pip install --quiet --editable '.[$(EXTRAS)]' --requirement $(REQS)
	@touch $@

test: lint typecheck unit

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest

demo: venv
	$(BIN)/python -m buttress.demo

bench: venv
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_integration.py

harm: venv
	$(BIN)/python -m tests.harm $(HARM_ARGS)

# The long sizes of tests/reliability (CI runs the short ones inside `make test`); the table of
# figures is printed at the end and kept in reliability-table.md.
reliability: venv
	BUTTRESS_RELIABILITY=long BUTTRESS_RELIABILITY_TABLE=reliability-table.md \
		$(BIN)/pytest tests/reliability -p no:cacheprovider --timeout=1800 $(RELIABILITY_ARGS)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
