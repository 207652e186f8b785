#!/usr/bin/env bash
# How long llama-cpp-python takes to build from its sdist (issue 14): its default CMake options
# against the Makefile's (no multimodal library, tests, tools, examples or server; -march=native;
# all cores), each with an empty pip cache. Run it on an otherwise idle machine.
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
  PIP_CACHE_DIR="$work/pip-$mode" "$py" -m pip wheel -q --no-deps -w "$work/w-$mode" "$sdist" > "$work/$mode.log" 2>&1
  rc=$?
  echo "llama-cpp-python $version, $mode CMake options: rc=$rc, $(( $(date +%s) - t0 )) s," \
       "wheel $(du -k "$work"/w-$mode/*.whl 2>/dev/null | cut -f1) KiB${CMAKE_ARGS:+ (CMAKE_ARGS=$CMAKE_ARGS)}"
done
