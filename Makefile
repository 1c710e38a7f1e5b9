# One command each: `make demo` runs the main job, `make test` runs the test suite.
PY_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
DURATION ?= 60
RATE ?= 30
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo weights bench-speed bench-energy bench-distill bench-distill-fair bench-vpr bench-vprtempo bench-node bench-map bench-accept model-card colcon-check clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: setup
	@$(PY) -m pytest test -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: FAILED, pytest collected no tests" >&2; fi; exit $$rc

demo: setup
	$(VENV)/bin/vl2spike demo

weights: setup
	$(VENV)/bin/vl2spike vpr train all
	$(VENV)/bin/vl2spike bench vpr --json bench/results/vpr_nordland.json --model-card vl2spike_ros/assets/vpr_default.md

# Rewrite the model card from the committed results (bench-vpr + energy JSON), no benchmark run.
model-card: setup
	$(VENV)/bin/vl2spike bench vpr --model-card vl2spike_ros/assets/vpr_default.md --from-json bench/results/vpr_nordland.json

bench-speed: setup
	$(VENV)/bin/vl2spike bench speed --json bench/results/speed.json

bench-energy: setup
	$(VENV)/bin/vl2spike energy --json bench/results/energy.json --plot bench/results/energy_firing_rates.png

bench-distill: setup
	$(VENV)/bin/vl2spike bench distill --config config/distill/bench_cifar10.yaml --json bench/results/distill_cifar10.json

# Fair, paired benchmark (issue 16; ~2 h on 2 cores; resumable: run it again with the same
# work dir and it skips finished runs). In the background: nohup make bench-distill-fair > log 2>&1 &
DISTILL_WORK ?= out/bench_distill_fair
bench-distill-fair: setup
	$(VENV)/bin/vl2spike bench distill --config config/distill/bench_cifar10_fair.yaml \
	  --json bench/results/distill_cifar10.json --work-dir $(DISTILL_WORK)

bench-vpr: setup
	$(VENV)/bin/vl2spike bench vpr --json bench/results/vpr_nordland.json

# VPRTempo baseline in its own venv (torch pinned like ours), results picked up by bench-vpr.
VT_VENV := .venv-vprtempo
VT_THREADS ?= 1
$(VT_VENV)/.setup-stamp: requirements.txt
	@test -x $(VT_VENV)/bin/python || $(PY_BOOT) -m venv $(VT_VENV)
	$(VT_VENV)/bin/python -m pip install -q --disable-pip-version-check vprtempo==1.1.10 \
	  $$(grep -E '^(torch|torchvision|numpy|opencv-python-headless|tqdm)==' requirements.txt)
	@touch $@

bench-vprtempo: $(VT_VENV)/.setup-stamp
	nice -n 10 $(VT_VENV)/bin/python bench/vprtempo/run_vprtempo.py --threads $(VT_THREADS) \
	  --json bench/results/vprtempo_nordland.json

bench-map: setup
	$(VENV)/bin/vl2spike bench map --json bench/results/map_search.json

# acceptance margin + calibration table of the default weights, chosen on validation places
bench-accept: setup
	$(VENV)/bin/vl2spike bench accept --json bench/results/acceptance.json

bench-node: setup
	$(PY) -m vl2spike_ros.bench.ros.load --duration $(DURATION) --rate $(RATE) --json bench/results/node_load.json

colcon-check: setup
	$(PY) -m pytest test/test_colcon_build.py -p no:cacheprovider

clean:
	rm -rf build install log .pytest_cache
