"""What this machine computes natively, and the compute dtype that follows from it.

bfloat16 on a CPU is fast only where the hardware has bf16 instructions (AVX512-BF16 or AMX);
elsewhere torch emulates it. Measured on a 2-core AVX2 machine (AMD EPYC, no AVX-512): one LoRA
training step of gemma-3-270m under bf16 autocast took 103 s against 1.7 s in float32, while on an
AVX512-BF16 machine bf16 decoding ran 2.7x faster than float32; on the AVX2 machine a square bf16
matmul (2048^3) ran at 0.3 GFLOP/s against 105 in float32 (benchmarks/roofline.py). ``dtype =
"auto"`` picks bfloat16 only where it is native.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX) that torch uses."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def resolve_dtype(dtype: str, *, what: str) -> str:
    """The compute dtype to use for ``dtype`` (``auto``: bfloat16 where native, else float32).
    An explicit bfloat16 on a CPU that only emulates it is kept, with a warning naming ``what``."""
    if dtype == "auto":
        return "bfloat16" if native_bf16() else "float32"
    if dtype == "bfloat16" and not native_bf16():
        log.warning("%s: bfloat16 on this CPU is emulated (no AVX512-BF16 or AMX): on such a machine a "
                    "square bf16 matmul ran at 0.3 GFLOP/s against 105 in float32, and LoRA training "
                    "~60x slower; set dtype = \"auto\" or \"float32\"", what)
    return dtype
