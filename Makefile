# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MHUB_VENV := .venv-mhub
MHUB_VENDOR := vendor/mhub

.PHONY: demo test test-slow test-signals check docs test-emulated-cpu images test-images test-browser test-wheel release packaged-release bench-head bench bench-bodypart bench-seg bench-batch venv clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch from the pinned release first, so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[convert,test]'
	# MHub's production mhubio (0.0.3, GitHub head; pins pydicom 2.4) in its own environment, as in the images.
	$(PYTHON) -m venv $(MHUB_VENV)
	$(MHUB_VENV)/bin/pip install --quiet --find-links $(MHUB_VENDOR)/wheels mhubio==0.0.3
	# bpreg 1.1.0 (reference for the body-part parity test and benchmark) pins torch 1.8.1: install it and
	# the parts of its import chain that work on torch 2.x without their pins (see dev/mhub_cpu_dev/reference/bpreg.py).
	$(PY) -m pip install --quiet --no-deps bpreg==1.1.0 albumentations==0.5.2 pytorch-lightning==2.6.6 torchmetrics==1.9.0 lightning-utilities==0.15.3
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mhub-cpu segment --input data/ct/abdomen_3mm_dicom --output output/demo

# Static checks first (lint, types, the layering contracts in pyproject.toml, the docs), then the suite
# without the long end-to-end tier, which is `make test-slow`.
test: check
	$(PY) -m pytest --durations=15

# The long end-to-end tier: MHub workflows through mhub-run, batch runs on Dask, the Slicer route,
# agreement with the MONAI reference pipeline, verify.
test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The tests that send signals, started as a background job of a non-interactive shell, as CI systems and
# nohup start them: SIGINT arrives ignored (checked first), and the tests must still pass.
SIGNAL_TESTS := tests/batch/test_batch_runs.py tests/core/test_outputs_atomic.py
test-signals: $(STAMP)
	bash -c '$(PY) -c "import signal, sys; sys.exit(signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)" & wait $$!' \
		|| { echo "test-signals: a background job here does not start with SIGINT ignored"; exit 1; }
	bash -c '$(PY) -m pytest -p no:cacheprovider -q -m "slow or not slow" -k "ctrl_c or signal" $(SIGNAL_TESTS) < /dev/null & wait $$!'

check: $(STAMP)
	$(VENV)/bin/ruff check base dev tests models scripts demo
	$(VENV)/bin/mypy
	PYTHONPATH=dev $(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory docs

# The reference pages (docs/) with mkdocs in strict mode: a broken link or anchor fails the build.
# (mkdocs --quiet would hide the warnings that strict mode counts, so the log is shown on failure.)
docs: $(STAMP)
	@mkdir -p output
	@$(VENV)/bin/mkdocs build --strict > output/mkdocs.log 2>&1 || { cat output/mkdocs.log; exit 1; }
	@echo "docs: built output/site (mkdocs, strict)"

# The precision tests on an emulated AVX2-only AMD EPYC (no AVX-512, VNNI or bf16), through QEMU's
# user-mode emulator (Debian package qemu-user): OpenVINO sees that CPU's capabilities.
EMULATED_CPU ?= EPYC-Rome-v1
# The IRs are converted natively first (conversion under emulation takes far longer than the tests).
EMULATED_CACHE := output/emulated-cpu-cache
test-emulated-cpu: $(STAMP)
	MHUB_CPU_CACHE=$(EMULATED_CACHE) $(VENV)/bin/mhub-cpu convert --model demo --precision f32 > /dev/null
	MHUB_CPU_CACHE=$(EMULATED_CACHE) $(VENV)/bin/mhub-cpu convert --model demo --precision int8 > /dev/null
	MHUB_CPU_TEST_CACHE=$(EMULATED_CACHE) MHUB_CPU_EMULATED=avx2-only qemu-x86_64 -cpu $(EMULATED_CPU) \
		$(PY) -m pytest -p no:cacheprovider -m "emulated or not emulated" tests/runtime/test_precision.py

# The standalone engine image and both MHub model images, with podman (docker where a daemon runs), on
# local bases: Debian bookworm from mmdebstrap and an approximation of mhubai/base from vendor/mhub/mhub-base.
images: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.images build

# Each image run offline on mounted DICOM folders, outputs checked and compared with runs outside. One
# image at a time: built, tested, removed (the bases stay), so the disk holds one image beside the bases.
test-images: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.images test

# Pages rendered by headless Chromium (Debian package chromium), checked on their screenshots.
test-browser: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m browser

# The wheel as users install it: built, installed into a clean venv without torch, run from outside the tree.
test-wheel: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -s -m wheel tests/install

# Pre-converted IRs as release assets with a manifest (dev/mhub_cpu_dev/release.py): the demo model in
# every IR format, verified against its checkpoint. RELEASE_MODELS adds catalogue models whose weights are here.
RELEASE_MODELS ?= demo
release: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.release $(foreach m,$(RELEASE_MODELS),--model $(m)) --output output/release

# The release packaged in the wheel: the demo model's fp32 IR (regenerate after a change of the converter).
packaged-release: $(STAMP)
	rm -rf base/mhub_cpu/_data/release
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.release --model demo --formats fp32 --output base/mhub_cpu/_data/release

# Benchmarks are development tools (dev/mhub_cpu_dev), not commands of the engine.
bench: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.bench --output output/bench

bench-bodypart: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.bench.bodypart --output output/bench

# A 118-class whole-body network at Slicer's window: class head inside OpenVINO against split off.
bench-head: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.bench.class_head --output output/bench

# A W3-sized BINARY DICOM-SEG (117-label whole-body model, ~38,000 frames): highdicom's encoding against ours.
bench-seg: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.bench.seg_writing --output output/bench

# One `mhub-cpu batch segment` over six copies of the sample against six `mhub-cpu segment` runs.
bench-batch: $(STAMP)
	PYTHONPATH=dev $(PY) -m mhub_cpu_dev.bench.batch --output output/bench

clean:
	rm -rf $(VENV) $(MHUB_VENV) output
