# Two entry points for a fresh machine (see README.md): `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test quickstart real-ct-model gpu-prepare gpu-check gpu-check-dry

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -ra --durations=15

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
