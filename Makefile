# Two commands on a fresh machine: `make run` (set up everything, start the app) and `make test`.
# `make run READER=llm` starts the app with the generative reader as the default.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LLM_STAMP := $(VENV)/.llm-installed-stamp
READER ?= extractive
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install install-llm models models-llm index run browser test test-fast bench bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

models: install
	$(BIN)/assistant models fetch

# The generative reader's extra. llama-cpp-python has no wheels: it is built here (about 4 min).
# GGML_NATIVE=OFF: the native build (-march=native, AMX) segfaults on this CPU; --no-cache-dir: pip's
# wheel cache ignores CMAKE_ARGS and would silently reuse a native build.
install-llm: $(LLM_STAMP)

$(LLM_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--no-cache-dir -e '.[test,llm]'
	touch $(LLM_STAMP)

models-llm: install
	$(BIN)/assistant models fetch --llm

index: models
	$(BIN)/assistant index build

run: index $(if $(filter llm,$(READER)),install-llm models-llm)
	ASSISTANT_READER=$(READER) $(BIN)/python app.py

test: models browser install-llm models-llm
	$(BIN)/python -m pytest -q

browser:
	sh scripts/install-browser.sh

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

bench: models
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(BIN)/python bench/speed.py

bench-quality: models
	$(BIN)/python bench/cmrc.py

clean:
	rm -rf $(VENV) index
