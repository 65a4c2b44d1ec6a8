# Two entry points for a fresh machine (see README.md): `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The "current" stack (requirements-latest.txt: newest MONAI, ignite, torch) in a venv of its own.
VENV_LATEST ?= .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python

.PHONY: install test install-latest test-latest quickstart real-ct-model gpu-prepare gpu-check gpu-check-dry

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -ra --durations=15

# PIP_CONSTRAINT=/dev/null: the pins are the whole constraint here (a machine-wide pip constraint capping torch
# below the pinned release would make the install fail).
$(VENV_LATEST)/.installed: requirements-latest.txt pyproject.toml
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
