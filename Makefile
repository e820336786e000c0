# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch from the pinned release first, so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[convert,test]'
	# mhubio 0.0.2 pins typing-extensions==4.5.0 (conflicts with torch): install without deps.
	$(PY) -m pip install --quiet --no-deps mhubio==0.0.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mhub-cpu segment --input ../shared/data/ct/abdomen_3mm_dicom --output output/demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/mhub-cpu bench --output output/bench

clean:
	rm -rf $(VENV) output
