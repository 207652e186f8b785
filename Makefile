# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(abspath ../shared/data)
export PRETTY_DATA := $(DATA)

.PHONY: venv tools demo test bench paper quick clean

# torch first, pinned: its CPU wheel is local here, and anything that pulls torch later must find
# it installed (otherwise pip fetches a multi-GB CUDA build).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,peft,gemma,llamacpp]"   # llama-cpp-python: built from source once (~4 min)
	touch $@

venv: $(BIN)/.installed

# Apertium (Debian) is the real program behind the command prior's test; installed once, as root.
tools:
	@command -v apertium >/dev/null && test -d /usr/share/apertium/apertium-eng-spa || \
	  { apt-get install -y -q apertium apertium-eng-spa >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q apertium apertium-eng-spa >/dev/null 2>&1; } || \
	    echo "warning: could not install apertium (needs root and Debian's apt): its test fails under CI=true"; }

# The main job: the quick preset of `reproduce` (a small SFT counterpart, then base vs base + prior vs
# SFT on translation, summarization and POS, and the decision-space analysis; ~15 min on 2 cores).
demo: venv tools
	@test -d "$(DATA)/flores200" || { echo "FLORES not found under $(DATA). Run: make demo DATA=/path/to/data" \
	  "(a folder with flores200/ and dictionaries/muse/, see README 'Set-up')"; exit 2; }
	time $(BIN)/pretty-align reproduce --preset quick

test: venv tools
	$(BIN)/python -m pytest -q -rs

# The paper's evidence in one resumable command (results/<preset>/); kill and rerun to continue.
paper: venv tools
	$(BIN)/pretty-align reproduce --preset paper

quick: venv tools
	$(BIN)/pretty-align reproduce --preset quick
	$(BIN)/python scripts/readme_tables.py      # the README's result tables, copied from results/quick

bench: venv
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs configs/runs
