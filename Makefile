# One-command set-up: every target installs what it needs first (system library, venv, package).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test

setup: $(TEST_STAMP)

# what the package and `make demo` need: open3d's system library and the package itself
$(STAMP): pyproject.toml constraints.txt
	@ldconfig -p | grep -q libusb-1.0 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libusb-1.0-0; }
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e .
	@touch $@

# what the tests need on top: Chromium (the viewer's browser test) and the test, bench and masks extras
$(TEST_STAMP): $(STAMP)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench,masks]"
	@touch $@

# CPU demo: `ns-train unic-lift-cpu`, the paper's recipe on a 1000-step schedule (full resolution from step 400,
# densification until 500, triplet and 3D losses from 500; unic_lift_ns/cpu_recipe.py), then PQ^scene/mIoU/PSNR
# on the eval views next to the 2D baselines, with the paper's decoding of the rendered embedding and with
# per-Gaussian votes and with the nearest code a voting Gaussian holds (--pipeline.model.instance-decoding).
DEMO_RUN := $(shell date +%Y-%m-%d_%H%M%S)

demo: $(STAMP)
	$(VENV)/bin/ns-train unic-lift-cpu --data assets/demo --output-dir outputs --experiment-name demo \
		--timestamp $(DEMO_RUN) --vis tensorboard --viewer.quit-on-train-completion True
	$(VENV)/bin/unic-lift-eval --load-config outputs/demo/unic-lift-cpu/$(DEMO_RUN)/config.yml \
		--instance-decoding rendered-embedding gaussian-votes nearest-code \
		--report outputs/demo/unic-lift-cpu/$(DEMO_RUN)/report

test: $(TEST_STAMP)
	$(PY) -m pytest -q tests
