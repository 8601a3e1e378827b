# The two commands of a fresh checkout: `make demo` and `make test`. Both build .venv first when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: demo test lint venv break

venv: $(STAMP)

# One pip call, torch pinned in it: a second call could let another package pull a CUDA build of torch.
$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	cat requirements.txt requirements-dev.txt > $@

# Label Studio + this backend on 127.0.0.1 with a pre-annotated project, until Ctrl-C (ml_backend/demo/).
demo: $(STAMP)
	$(PY) -m ml_backend.demo

lint: $(STAMP)
	$(PY) -m ruff check .

# One BLAS/OpenMP thread per process: the suite runs several torch processes at once (pytest, gunicorn,
# CLI subprocesses) on 2 cores, where spinning OpenMP threads made segmentations 10-40x slower.
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest
	$(MAKE) break

# Every fault recorded in tests/faults/*.py, put in one at a time on a copy of the tree: each must make its
# named tests fail (docs/DEVELOPMENT.md, "Break by hand"). Two at a time, in two copies.
break: $(STAMP)
	$(PY) tests/break_by_hand.py --jobs 2
