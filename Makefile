# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup relink demo test lint typecheck clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/cpu.txt requirements/torchrec.txt docker/install.sh
	$(PYTHON) -m venv $(VENV)
	bash docker/install.sh cpu $(PY)
	touch $(STAMP)

# The strict editable install links files one by one: refresh it so new modules are seen.
relink: setup
	@$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict 2>/dev/null

lint: relink
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy reads the installed link tree, where the folders are laid out as `protorec.*`.
typecheck: relink
	MYPYPATH=$(wildcard build/__editable__.protorec-*) $(VENV)/bin/mypy -p protorec

test: relink lint typecheck
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q

demo: relink
	bash jobs/demo.sh $(PY)

clean:
	rm -rf $(VENV) build *.egg-info
