#!/usr/bin/env bash
# How long llama-cpp-python takes to build from its sdist (issue 14): its default CMake options
# against the Makefile's (no multimodal library, tests, tools, examples, server or llama.cpp common library;
# -march=native; all cores), each with an empty pip cache, and the compile CPU time per library (from
# ninja's log of the kept build directory). Run it on an otherwise idle machine.
#
#   bash benchmarks/llama_build.sh [VERSION]         # default: the installed version, else 0.3.36
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
version="${1:-$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || echo 0.3.36)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version" >/dev/null 2>&1 \
  || { echo "could not download the llama-cpp-python $version sdist"; exit 1; }
sdist="$(ls "$work"/llama_cpp_python-*.tar.gz)"
makefile_args="$(make -s -C "$root" --no-print-directory -f Makefile -f - print-cmake-args <<< 'print-cmake-args: ; @echo $(LLAMA_CMAKE)')"
for mode in default makefile; do
  if [ "$mode" = makefile ]; then
    export CMAKE_ARGS="$makefile_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
  else
    unset CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL
  fi
  t0=$(date +%s)
  # build-dir: scikit-build-core keeps its CMake build there, so ninja's log says where the time went
  PIP_CACHE_DIR="$work/pip-$mode" "$py" -m pip wheel -q --no-deps -w "$work/w-$mode" \
    --config-settings=build-dir="$work/build-$mode" "$sdist" > "$work/$mode.log" 2>&1
  rc=$?
  echo "llama-cpp-python $version, $mode CMake options: rc=$rc, $(( $(date +%s) - t0 )) s," \
       "wheel $(du -k "$work"/w-$mode/*.whl 2>/dev/null | cut -f1) KiB${CMAKE_ARGS:+ (CMAKE_ARGS=$CMAKE_ARGS)}"
  "$py" - "$work/build-$mode/.ninja_log" <<'PY'
import collections, sys
from pathlib import Path

log = Path(sys.argv[1])
if not log.is_file():
    sys.exit(f"  (no {log}: the build did not use ninja, so no per-library times)")
cpu = collections.Counter()
for line in log.read_text().splitlines():
    if line.startswith("#"):
        continue
    start, end, _, out, _ = line.split("\t")
    part = ("llama.cpp common" if "/common/" in out else "cpp-httplib" if "httplib" in out
            else "libllama" if "/src/CMakeFiles/llama" in out else "ggml-cpu" if "ggml-cpu" in out
            else "ggml" if "ggml" in out else "other")
    cpu[part] += (int(end) - int(start)) / 1000
total = sum(cpu.values())
print(f"  compile+link CPU time {total:.0f} s: " + ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f}%)"
                                                      for k, v in cpu.most_common()))
PY
done
