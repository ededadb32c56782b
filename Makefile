# The two commands of the README. Each creates .venv and installs what it needs, so a fresh
# machine with Python 3.11, gcc and make is enough.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: the local CPU wheel satisfies it; a looser pin pulls CUDA builds.
$(VENV)/.installed-all: pyproject.toml | $(PY)
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[all]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-all
	$(PIP) install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed-all
	$(VENV)/bin/codenet demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
