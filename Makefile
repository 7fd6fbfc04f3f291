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

install: $(PY)
	$(PIP) install --quiet -e ".[all]"

install-test: $(PY)
	$(PIP) install --quiet -e ".[test]"

## the main job: simulate the survey and run every numbered notebook, figures into figures/
demo: install
	$(VENV)/bin/astrid demo

## install the test extras (and Debian's Chromium for the browser test) and run the whole test suite
test: install-test
	PYTHON=$(PY) bash scripts/install_browser.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
