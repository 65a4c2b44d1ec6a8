# Two entry points for a fresh machine (see README.md): `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Python versions each stack is tested on (README "Installation notes"), checked before its venv is created:
# Python 3.11.0-3.11.3 (e.g. Debian 12's 3.11.2) cannot import pytorch-ignite 0.4.11 (a CPython enum bug fixed in
# 3.11.4; ignite 0.4.12+ works around it), torch 2.15 needs Python 3.11, numpy 1.26 (numpy<2) has no wheels for 3.13.
PYTHON_MIN := 3.11.4
PYTHON_MIN_LATEST := 3.11.0
PYTHON_BELOW := 3.13
check_python = @$(PYTHON) -c 'import sys; v = sys.version_info[:3]; lo, hi = (tuple(map(int, s.split("."))) for s in \
	("$(1)", "$(PYTHON_BELOW)")); sys.exit(None if lo <= v < hi else "$(PYTHON) is Python %d.%d.%d; $(2) supports Python \
	$(1) up to (not including) $(PYTHON_BELOW) (README: Installation notes)" % v)'
# The "current" stack (requirements-latest.txt: newest MONAI, ignite, torch) in a venv of its own.
VENV_LATEST ?= .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python

.PHONY: install test install-latest test-latest quickstart real-ct-model gpu-prepare gpu-check gpu-check-dry pacs-deps pacs \
	browser-deps

$(VENV)/.installed: requirements.txt pyproject.toml
	$(call check_python,$(PYTHON_MIN),requirements.txt)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

# -n 2 --dist loadfile (pytest-xdist): two workers, each test file whole in one of them (its module fixtures built
# once); the suite is CPU-bound, and one pytest process kept only ~1.7 of 2 cores busy (two workers: ~17 min here)
test: install
	$(PY) -m pytest -q -ra --durations=15 -n 2 --dist loadfile

# PIP_CONSTRAINT=/dev/null: the pins are the whole constraint here (a machine-wide pip constraint capping torch
# below the pinned release would make the install fail).
$(VENV_LATEST)/.installed: requirements-latest.txt pyproject.toml
	$(call check_python,$(PYTHON_MIN_LATEST),requirements-latest.txt)
	$(PYTHON) -m venv $(VENV_LATEST)
	PIP_CONSTRAINT=/dev/null $(PY_LATEST) -m pip install -r requirements-latest.txt
	touch $@

install-latest: $(VENV_LATEST)/.installed

# Bundle zip, bundle train/evaluate and the MONAI Label app on the newest stack (tests marked latest_stack);
# not part of CI (see README "Installation notes"): run it when requirements-latest.txt changes and record the result.
test-latest: install-latest
	REP3D_REQUIRE_SHARED_DATA=1 $(PY_LATEST) -m pytest -q -ra -m latest_stack --durations=15

quickstart: install
	$(PY) -m rep3d_networks.quickstart --output_dir quickstart_output

# GPU check (README "GPU check"): prepare here, run gpu_check.sh on the GPU machine, dry run on the CPU.
gpu-prepare:
	bash benchmarks/gpu_prepare.sh

gpu-check:
	bash benchmarks/gpu_check.sh

gpu-check-dry: install
	$(PY) benchmarks/gpu_check.py --dry-run --jobs 2

# A small Rep3D trained at 3 mm on the real CT in ../shared/data (see docs/real_ct_model.md: not yet a working model).
real-ct-model: install
	$(PY) -m rep3d_networks.real_ct --output_dir real_ct_output

# A local PACS for the app (docs/pacs.md): Orthanc with DICOMweb (Debian packages; pacs-deps needs root), its
# database in pacs_storage/, HTTP on port 8042 answering this machine only (RemoteAccessAllowed false).
# The package's own service is not started (policy-rc.d): it would listen on all interfaces; `make pacs` and the
# tests start Orthanc themselves.
pacs-deps:
	@command -v Orthanc >/dev/null && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so && command -v ip >/dev/null || \
		{ policy=/usr/sbin/policy-rc.d; own=; [ -e $$policy ] || { printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; own=1; }; \
		  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb iproute2; \
		  status=$$?; [ -z "$$own" ] || rm -f $$policy; exit $$status; }

pacs:
	mkdir -p pacs_storage
	Orthanc apps/rep3d/orthanc.json

# The browser test (tests/test_app_ohif.py: OHIF against the app and Orthanc): Debian's Chromium and ChromeDriver (root).
browser-deps:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }
