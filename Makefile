# `make demo` and `make test` create the virtual environment themselves.
# torch/torchvision are pinned to the releases that install from this machine's
# local disk (see DEVELOPERS.md); everything else comes from setup.py.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python tools/demo.py

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
