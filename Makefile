# Two commands on a fresh machine: `make run` (set up everything, start the app) and `make test`.
# `make run READER=llm` starts the app with the generative reader as the default.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LLM_STAMP := $(VENV)/.llm-installed-stamp
READER ?= span
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install install-llm models models-llm index run browser test test-fast bench bench-quality bench-reader train-reader clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

models: install
	$(BIN)/assistant models fetch

# The generative reader's extra. llama-cpp-python has no wheels: it is built here once (about 4 min
# on an idle machine) into a wheel kept outside the repository, named after its version and flags.
# GGML_NATIVE=OFF: the native build (-march=native, AMX) segfaults on this CPU; --no-cache-dir: pip's
# wheel cache ignores CMAKE_ARGS and would silently reuse a native build.
LLAMA_VERSION := 0.3.36
LLAMA_WHEELS  := $(HOME)/.cache/assistant/wheels/llama-cpp-python-$(LLAMA_VERSION)-ggml-native-off
install-llm: $(LLM_STAMP)

$(LLM_STAMP): $(STAMP)
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip wheel --quiet --disable-pip-version-check \
		--no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		$(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl -e '.[test,llm]'
	touch $(LLM_STAMP)

models-llm: install
	$(BIN)/assistant models fetch --llm

index: models
	$(BIN)/assistant index build

run: index $(if $(filter llm,$(READER)),install-llm models-llm)
	ASSISTANT_READER=$(READER) $(BIN)/python app.py

test: models browser install-llm models-llm
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,milvus,milvus-server,langchain]'
	$(BIN)/python -m pytest -q

browser:
	sh scripts/install-browser.sh

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

bench: models browser
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench,milvus,milvus-server,runtimes]'
	$(BIN)/python -m bench.speed
	$(BIN)/python -m bench.stores
	$(BIN)/python -m bench.hybrid
	$(BIN)/python -m bench.add_document
	$(BIN)/python -m bench.runtimes --only torch-fp32,onnx-fp32,onnx-int8,openvino-f32
	$(BIN)/python -m bench.encoders
	$(BIN)/python -m bench.app_start

bench-quality: models
	$(BIN)/python -m bench.cmrc

# The reader model on CMRC 2018 dev (span EM/F1, answerability AUC, English): about 15 min here.
bench-reader: models
	$(BIN)/python -m bench.reader

# Reproduces assistant/weights/reader.safetensors from ../shared/train (about 30 min on 2 idle cores).
train-reader: models
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,train]'
	$(BIN)/python scripts/train_reader.py

clean:
	rm -rf $(VENV) index
