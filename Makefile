# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-bodypart venv clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch from the pinned release first, so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[convert,test]'
	# mhubio 0.0.2 pins typing-extensions==4.5.0 (conflicts with torch): install without deps.
	$(PY) -m pip install --quiet --no-deps mhubio==0.0.2
	# bpreg 1.1.0 (reference for the body-part parity test and benchmark) pins torch 1.8.1: install it and
	# the parts of its import chain that work on torch 2.x without their pins (see bodypart/reference.py).
	$(PY) -m pip install --quiet --no-deps bpreg==1.1.0 albumentations==0.5.2 pytorch-lightning==2.6.6 torchmetrics==1.9.0 lightning-utilities==0.15.3
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mhub-cpu segment --input ../shared/data/ct/abdomen_3mm_dicom --output output/demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/mhub-cpu bench --output output/bench

bench-bodypart: $(STAMP)
	$(VENV)/bin/mhub-cpu bench-bodypart --output output/bench

clean:
	rm -rf $(VENV) output
