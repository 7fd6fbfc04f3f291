# Set-up and the two main commands. Everything installs into ./.venv from the
# project's own files, so a fresh machine with Python >= 3.11 needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test install install-test browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# `astrid warmup` compiles the numba kernels once, with progress, into the on-disk cache
# (about a minute on a fresh install, seconds after), so no first notebook cell stalls on it.
install: $(PY)
	$(PIP) install --quiet -e ".[all]"
	$(VENV)/bin/astrid warmup

install-test: $(PY)
	$(PIP) install --quiet -e ".[test]"
	$(VENV)/bin/astrid warmup

## the main job: simulate the survey and run every numbered notebook, figures into figures/
demo: install
	$(VENV)/bin/astrid demo

## install the test extras (and Debian's Chromium for the browser test) and run the whole test suite
test: install-test
	PYTHON=$(PY) bash scripts/install_browser.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
