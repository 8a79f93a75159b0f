# Set-up and the two everyday commands. Everything is installed into .venv from scratch.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch==2.13.0 first: the CPU build; an unpinned torch would pull a multi-GB CUDA build.
# yomix only carries the PBMC 3k file we read, so none of its own dependencies are needed.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test]"
	$(PIP) --no-deps yomix==1.7.0
	touch $@

demo: install
	$(VENV)/bin/sivae demo --out sivae_demo --force

test: install
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) sivae_demo .pytest_cache
