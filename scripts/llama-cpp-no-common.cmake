# Included by CMake right after llama.cpp's `project()` when llama-cpp-python builds from its sdist
# (the Makefile passes -DCMAKE_PROJECT_llama.cpp_INCLUDE=<this file> in CMAKE_ARGS).
#
# llama-cpp-python forces LLAMA_BUILD_COMMON=ON into the CMake cache, so llama.cpp compiles its
# `common` library (argument parsing, chat parsers, downloads) and cpp-httplib: about half of the
# build's compile time on two cores. The Python package never loads that library (it binds only
# libllama and libggml*; the multimodal library that would need it is off). A normal variable set
# here shadows the cached one in llama.cpp's directory scope, so neither is configured.
set(LLAMA_BUILD_COMMON OFF)
