# Two entry points for a fresh machine (see README.md): `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test quickstart real-ct-model

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -ra --durations=15

quickstart: install
	$(PY) -m rep3d_networks.quickstart --output_dir quickstart_output

# A small Rep3D trained at 3 mm on the real CT in ../shared/data (about 45 minutes on 2 CPU cores; see docs/real_ct_model.md).
real-ct-model: install
	$(PY) -m rep3d_networks.real_ct --output_dir real_ct_output
