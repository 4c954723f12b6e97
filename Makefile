# One-command set-up: every target installs what it needs first (system library, venv, package).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@ldconfig -p | grep -q libusb-1.0 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libusb-1.0-0; }
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench]"
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/unic-lift-eval --scene assets/demo

test: $(STAMP)
	$(PY) -m pytest -q tests
