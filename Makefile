# splitc: `make run` compiles the bundled example, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := examples/splitdemo

.PHONY: install run test test-arm arm-setup bench bench-e2e clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,tvm]'
	touch $@

# The demo: a 64x64 CNN whose heavy layers follow a cheap stem (examples/splitdemo/build.py writes it), compiled
# for a Raspberry Pi 4 over a link from 300 KB/s to 50 Mbit/s; then its halves run through `splitc serve`.
run: install
	$(BIN)/python $(DEMO)/build.py
	$(BIN)/splitc $(DEMO)/demo_cnn.onnx --target raspberry-pi-4 --cloud t4 --bw 300KBps..50Mbps --rtt 5ms \
		--calib $(DEMO)/calib.npz --metric rel-l2 --max-drop 5% -o out/
	bash $(DEMO)/serve_and_run.sh $(BIN) out

test: install arm-setup
	$(BIN)/python -m pytest -q -n 2 --timeout 900 -m 'not serial'
	$(BIN)/python -m pytest -q --timeout 900 -m serial

# aarch64 TVM builds run under qemu-user: tests/arm/setup.sh installs the tools (apt, as root), builds an
# arm64 sysroot and fetches the aarch64 TVM wheels, cached in ~/.cache/splitc-arm; tests skip with the reason
# when that is impossible. `make test` runs these tests too.
arm-setup: install
	PYTHON=$(BIN)/python bash tests/arm/setup.sh >/dev/null

test-arm: arm-setup
	$(BIN)/python -m pytest -q -rs --timeout 900 tests/test_tvm_arm.py tests/test_tvm_backend.py

bench: install
	$(BIN)/python bench/partition.py
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/latency_model.py
	$(BIN)/python bench/tvm.py

bench-e2e: install
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/load.py

clean:
	rm -rf out/ .pytest_cache .hypothesis
