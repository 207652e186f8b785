# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# the data folder: DATA= on the command line, else PRETTY_DATA from the environment, else ../shared/data
DATA   ?= $(or $(PRETTY_DATA),$(abspath ../shared/data))
export PRETTY_DATA := $(DATA)
# Byte code, cached once. Where PYTHONDONTWRITEBYTECODE is set (this machine sets it) nothing was
# cached, and `make venv` installs with --no-compile, so every Python process (two pytest workers,
# dozens of CLI subprocesses in the suite) compiled torch's, transformers' and matplotlib's sources
# again on import: ~3 s of CPU each. The cache lives in the venv (gone with it), never beside the
# sources; a source edit invalidates its entry as usual (mtime and size).
export PYTHONDONTWRITEBYTECODE :=
export PYTHONPYCACHEPREFIX ?= $(abspath $(VENV))/pycache

.PHONY: venv tools setup demo test bench paper quick clean

# llama-cpp-python is built from its sdist once, then pip's wheel cache serves every later venv.
# Build only what the Python package loads: no multimodal (mtmd/llava) library, no tests, tools,
# examples or server binaries, no llama.cpp `common` library (see scripts/llama-cpp-no-common.cmake);
# ggml for this CPU (-march=native); all cores; ccache when present.
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
               -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON \
               -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(abspath scripts/llama-cpp-no-common.cmake)
ifneq ($(shell command -v ccache 2>/dev/null),)
LLAMA_CMAKE += -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
endif
export CMAKE_ARGS ?= $(LLAMA_CMAKE)
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

EXTRAS := test peft gemma llamacpp serve lexicon
empty :=
comma := ,
# "a b" -> "a,b"
extras = $(subst $(empty) $(empty),$(comma),$(strip $(1)))
# llama-cpp-python's requirement as pyproject.toml's llamacpp extra states it, without pip extras
LLAMA_REQ = $(shell sed -n 's/^llamacpp = \["\([^"[]*\)\(\[[a-z,]*\]\)\{0,1\}\([^"]*\)".*/\1\3/p' pyproject.toml)

# torch first, pinned: its CPU wheel is local here, and anything that pulls torch later must find
# it installed (otherwise pip fetches a multi-GB CUDA build). Two cores, two jobs: llama-cpp-python's
# wheel compiles from its sdist (~2.5 min, both cores; from pip's wheel cache in seconds) while torch
# and every other package download and unpack; the last install then takes that wheel. --no-compile:
# pip would byte-compile every module of every package (a large share of these installs' CPU, which
# the compile beside them needs); Python compiles what is imported, on first import, into the cache
# above.
PIP_INSTALL = $(BIN)/pip install -q --no-compile
$(BIN)/.installed: pyproject.toml
	@test -n "$(LLAMA_REQ)" || { echo "Makefile: no llamacpp extra found in pyproject.toml"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	rm -rf $(VENV)/wheels; \
	$(BIN)/pip wheel -q --no-deps -w $(VENV)/wheels "$(LLAMA_REQ)" > $(VENV)/llama-wheel.log 2>&1 & llama=$$!; \
	$(PIP_INSTALL) torch==2.13.0 && $(PIP_INSTALL) -e ".[$(call extras,$(filter-out llamacpp,$(EXTRAS)))]"; rest=$$?; \
	wait $$llama || { cat $(VENV)/llama-wheel.log; echo "building $(LLAMA_REQ) failed (log above)"; exit 1; }; \
	exit $$rest
	$(PIP_INSTALL) --find-links $(VENV)/wheels -e ".[$(call extras,$(EXTRAS))]"
	touch $@

venv: $(BIN)/.installed

# The venv and Debian's tools at the same time (apt works while llama-cpp-python compiles). Only
# here, not as a global --jobs: `make clean test` must still clean before it builds.
setup:
	@$(MAKE) --no-print-directory --jobs=2 venv tools

# Apertium (Debian) is the real program behind the command prior's test, and Chromium renders the
# HTML report's example browser in its tests; installed once, as root.
tools:
	@command -v apertium >/dev/null && test -d /usr/share/apertium/apertium-eng-spa || \
	  { apt-get install -y -q apertium apertium-eng-spa >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q apertium apertium-eng-spa >/dev/null 2>&1; } || \
	    echo "warning: could not install apertium (needs root and Debian's apt): its test fails under CI=true"; }
	@command -v chromium >/dev/null || \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "warning: could not install chromium (needs root and Debian's apt): the report browser tests fail under CI=true"; }

# The main job: the quick preset of `reproduce` (a small SFT counterpart, then base vs base + prior vs
# SFT on translation, summarization and POS, and the decision-space analysis; ~15 min on 2 cores).
demo: setup
	@test -d "$(DATA)/flores200" || { echo "FLORES not found under $(DATA). Run: make demo DATA=/path/to/data" \
	  "(a folder with flores200/ and dictionaries/muse/, see README 'Set-up')"; exit 2; }
	time $(BIN)/pretty-align reproduce --preset quick

# Two pytest workers (pytest-xdist): the suite is mostly single-threaded Python and tiny models, so
# two processes use both cores (tests never depend on order or on what another test left behind).
PYTEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -rs -n $(PYTEST_WORKERS)

# The paper's evidence in one resumable command (results/<preset>/); kill and rerun to continue.
paper: setup
	$(BIN)/pretty-align reproduce --preset paper
	$(BIN)/python scripts/readme_tables.py      # README blocks marked results: paper/README.md#...

quick: setup
	$(BIN)/pretty-align reproduce --preset quick
	$(BIN)/python scripts/readme_tables.py      # the README's result tables, copied from results/quick

bench: venv
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs configs/runs
