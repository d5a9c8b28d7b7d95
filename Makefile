# Two commands on a fresh machine: `make run` (set up everything, start the app) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: install models index run browser test test-fast bench bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

models: install
	$(BIN)/assistant models fetch

index: models
	$(BIN)/assistant index build

run: index
	$(BIN)/python app.py

test: models browser
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,milvus]'
	$(BIN)/python -m pytest -q

browser:
	sh scripts/install-browser.sh

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

bench: models
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench,milvus]'
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/stores.py
	$(BIN)/python bench/hybrid.py

bench-quality: models
	$(BIN)/python bench/cmrc.py

clean:
	rm -rf $(VENV) index
