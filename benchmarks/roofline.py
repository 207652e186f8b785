"""How close greedy decoding gets to what this machine can do (issue 14): a roofline for the base model.

    python benchmarks/roofline.py                       # microbenchmarks, ceilings, hf and llamacpp
    python benchmarks/roofline.py --backends hf --batches 8 --profile   # + where an hf step's time goes
    python benchmarks/roofline.py --backends hf --hf-dtype float32 --output-layer mm   # other hf settings
    python benchmarks/roofline.py --backends hf --batches 1,8 --prepack   # hf with oneDNN-prepacked weights

1. Microbenchmarks (torch, ``--threads`` threads): attainable matmul throughput in bfloat16 and
   float32 (square GEMMs, and the decode-shaped GEMM of the output layer: B x 640 @ 640 x 262144),
   and memory bandwidth (a large tensor summed and copied: bytes moved / second).
2. The ceiling on greedy tokens/s of gemma-3-270m at batch B: each decoding step reads every weight
   once (the output layer included; the input embedding is a row lookup) plus each row's KV cache,
   and does 2 FLOPs per weight per row plus the attention's. The step takes at least
   max(bytes / bandwidth, FLOPs / peak), so tokens/s <= B / that. Weights are counted as the
   backend holds them: bf16 or fp32 for hf, the GGUF's quantized tensors for llamacpp (whose
   integer dot products are bounded here by the measured fp32 peak: an approximation, said so in
   the output).
3. The backends' measured throughput on the same work (FLORES devtest prompts, ``--new-tokens``
   tokens per row, no stop string, no loop guard, so every row decodes the same number of
   steps unless it emits EOS) as a percentage of the ceiling.
4. For hf, what the matmul kernels alone allow: every linear layer called through the forward the
   backend gave it, at the batch's row count, in model order (each weight read from memory, as in
   a step; also each shape alone, cache-hot, for comparison). Tokens/s at that
   step time is an upper bound for any step built from these kernels, so it says how much of the
   gap to the ceiling is the kernels and how much the rest of the step.

Target (issue 14): hf in bfloat16 at batch 8 reaches >= 50% of its ceiling. ``--profile`` prints
the top operators of hf decoding steps (torch.profiler), to say where the rest goes.
Run it on an otherwise idle machine: it times everything.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# -- 1. microbenchmarks -------------------------------------------------------------------------------
def _best(fn, repeat: int = 5) -> float:
    """Best-of-``repeat`` wall seconds of ``fn()`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(dtype, m: int, k: int, n: int) -> float:
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    return 2 * m * k * n / _best(lambda: torch.mm(a, b)) / 1e9


def output_layer_gflops(dtype, batch: int, hidden: int = 640, vocab: int = 262144) -> dict[str, float]:
    """The output layer's decode-shaped GEMM, as the hf backend computes it: ``linear(h, W)``
    (option ``output_layer = "linear"``), ``W @ h.T`` (``"mm"``) and oneDNN over a weight packed
    once (``prepack = true``, where torch has oneDNN for this dtype); W is vocab x hidden."""
    import torch
    import torch.nn.functional as F

    from pretty_align.backends.hf import check_prepack, packed_linear
    from pretty_align.errors import InputError

    w, h = torch.randn(vocab, hidden).to(dtype), torch.randn(batch, hidden).to(dtype)
    flops = 2 * batch * hidden * vocab
    out = {"linear": flops / _best(lambda: F.linear(h, w), 3) / 1e9,
           "mm": flops / _best(lambda: torch.mm(w, h.t()), 3) / 1e9}
    try:
        check_prepack(str(dtype).removeprefix("torch."))
    except InputError:
        return out   # no oneDNN (or no oneDNN bf16) here: the backend would refuse prepack too
    packed = packed_linear(w)
    out["prepacked"] = flops / _best(lambda: packed(h), 3) / 1e9
    return out


def bandwidth_gbs() -> float:
    """Read bandwidth (a 512 MiB fp32 tensor summed) and copy bandwidth (read + write); the larger.
    Best of 10 each: on a shared VM single readings of either varied 29-48 GB/s between runs, and
    the ceiling is what the machine can attain, not what one reading saw."""
    import torch

    x = torch.ones(128 * 1024 * 1024)
    y = torch.empty_like(x)
    nbytes = x.numel() * 4
    read = nbytes / _best(lambda: x.sum(), 10)
    copy = 2 * nbytes / _best(lambda: y.copy_(x), 10)
    return max(read, copy) / 1e9


# -- 2. the model's cost per step -----------------------------------------------------------------------
@dataclass
class ModelCost:
    """Per-step cost of greedy decoding for one architecture (gemma-3-270m by default)."""

    layer_params: int        # every weight read per step except the output layer
    output_params: int       # the output layer (tied to the embedding in gemma)
    kv_bytes_per_token: int  # K and V over all layers at 2 bytes (bf16/f16 cache)
    attn_flops_per_ctx: int  # attention FLOPs per generated token per context position

    def flops(self, batch: int, ctx: int) -> float:
        return batch * (2 * (self.layer_params + self.output_params) + self.attn_flops_per_ctx * ctx)

    def bytes(self, batch: int, ctx: int, weight_bytes: float) -> float:
        return weight_bytes + batch * ctx * self.kv_bytes_per_token

    def ceiling(self, batch: int, ctx: int, weight_bytes: float, gbs: float, gflops: float) -> tuple[float, str]:
        """(tokens/s upper bound, which roof binds)."""
        t_mem = self.bytes(batch, ctx, weight_bytes) / (gbs * 1e9)
        t_cmp = self.flops(batch, ctx) / (gflops * 1e9)
        return batch / max(t_mem, t_cmp), ("memory" if t_mem >= t_cmp else "compute")


def gemma_cost(hf_model) -> ModelCost:
    cfg = hf_model.config
    cfg = getattr(cfg, "text_config", cfg)
    out = hf_model.get_output_embeddings().weight.numel()
    total = sum(p.numel() for p in hf_model.parameters())
    emb = hf_model.get_input_embeddings().weight.numel()
    tied = hf_model.get_output_embeddings().weight.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()
    layers = total - emb - (0 if tied else out)   # the input embedding is a lookup, not a read of all rows
    kv = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 2
    attn = cfg.num_hidden_layers * 2 * 2 * cfg.num_attention_heads * cfg.head_dim
    return ModelCost(layers, out, kv, attn)


def gguf_weight_bytes(path: str) -> float:
    """Bytes read per step: every tensor of the GGUF file once. With a tied output layer (gemma) the
    embedding matrix is read whole as that layer, so it counts once too."""
    import gguf

    return float(sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors))


# -- 3. measured throughput -------------------------------------------------------------------------------
def requests_for(tok, n: int, new_tokens: int, data: Path):
    from pretty_align.backends.base import GenerationRequest

    lines = (data / "flores200" / "devtest" / "eng_Latn.devtest").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines[:n]:
        ids = tok.encode(f"Translate the following sentence from English to German.\nEnglish: {line}\nGerman:")
        out.append(GenerationRequest(tuple(ids), (), new_tokens))
    return out


def measure(backend, reqs, batch: int) -> tuple[float, int, float]:
    """(generated tokens/s, tokens, mean context length) of ``reqs`` in batches of ``batch``."""
    from pretty_align.decoding import Decoding

    decoding = Decoding(max_new_tokens=max(r.max_new_tokens for r in reqs), stop=(), loop_guard=False,
                        batch_size=batch)
    backend.generate(reqs[:batch], decoding)   # warm-up (allocations, thread pools)
    t = time.perf_counter()
    gens = backend.generate(reqs, decoding)
    wall = time.perf_counter() - t
    toks = sum(len(g.new_ids) for g in gens)
    ctx = sum(len(r.input_ids) + len(g.new_ids) / 2 for r, g in zip(reqs, gens)) / len(reqs)
    return toks / wall, toks, ctx


def linear_bound(model, batch: int, dtype) -> tuple[float, float, dict[tuple[int, int], tuple[int, float]]]:
    """The step time of ``batch`` rows if nothing but the linear layers ran: every ``nn.Linear`` of
    the model (the output layer included) called through the forward the backend gave it (torch's
    ``linear``, or oneDNN over the packed weight) on a ``batch x 1 x in`` input.

    Returns (seconds per step in model order, seconds per step timed layer by layer, {(in, out):
    (layers of that shape, seconds per call)}). In model order (best of 5 passes over all of them)
    each weight comes from memory as in a real step (536 MB do not fit in any cache); layer by layer
    (one layer of each shape repeated, best of 5) small weights stay cache-hot, so that figure is
    the optimistic one. Either is a lower bound on any step built from these kernels: what the rest
    of the step (norms, attention, the cache, Python) adds comes on top of it."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes: dict[tuple[int, int], list] = {}
    for module in linears:
        shapes.setdefault((module.in_features, module.out_features), []).append(module)
    out = {}
    with torch.inference_mode():
        inputs = {shape: torch.randn(batch, 1, shape[0]).to(dtype) for shape in shapes}
        for shape, mods in shapes.items():
            out[shape] = (len(mods), _best(lambda: mods[0](inputs[shape])))
        in_order = _best(lambda: [m(inputs[(m.in_features, m.out_features)]) for m in linears])
    return in_order, sum(n * t for n, t in out.values()), out


def profile_hf(backend, reqs, batch: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    from pretty_align.decoding import Decoding

    decoding = Decoding(max_new_tokens=16, stop=(), loop_guard=False, batch_size=batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        backend.generate(reqs[:batch], decoding)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"\nhf profile, batch {batch}, 16 steps ({total / 1e6:.2f} s of operator time):")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {e.key:<40} {100 * e.self_cpu_time_total / total:5.1f}%  ({e.count} calls)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--backends", default="hf,llamacpp")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2, help="requests per batch size = rounds x batch")
    ap.add_argument("--data", default=os.environ.get("PRETTY_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--prepack", action="store_true", help="the hf backend's prepack option (oneDNN, weights packed once)")
    ap.add_argument("--hf-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--output-layer", default="linear", choices=["linear", "mm"],
                    help="the hf backend's output_layer option")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from pretty_align.hardware import native_bf16

    print(f"threads: {args.threads}; torch {torch.__version__}; CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 (AVX512-BF16 or AMX): {native_bf16()}")
    # bf16 at 1024^3: where the CPU only emulates bf16 (no AVX512-BF16/AMX) it runs at well under
    # 1 GFLOP/s, and 2048^3 would take minutes to time.
    peak = {"bfloat16": max(matmul_gflops(torch.bfloat16, 1024, 1024, 1024), 1e-9),
            "float32": matmul_gflops(torch.float32, 2048, 2048, 2048)}
    dtype = getattr(torch, args.hf_dtype)
    out_layer = {b: output_layer_gflops(dtype, b) for b in (1, 8, 32)}
    gbs = bandwidth_gbs()
    print(f"matmul: bf16 (1024^3) {peak['bfloat16']:.1f} GFLOP/s, fp32 (2048^3) {peak['float32']:.1f} GFLOP/s; "
          f"memory bandwidth {gbs:.1f} GB/s")
    for form in out_layer[1]:
        print(f"output-layer GEMM (B x 640 @ 640 x 262144, {args.hf_dtype}, {form}): "
              + ", ".join(f"B={b} {g[form]:.1f} GFLOP/s" for b, g in out_layer.items()))

    from pretty_align.backends import load_backend
    from pretty_align.models import known_model_path

    batches = [int(b) for b in args.batches.split(",")]
    data = Path(args.data)
    hf = load_backend("hf", "gemma3-270m", dtype=args.hf_dtype, threads=args.threads, output_layer=args.output_layer,
                      prepack=args.prepack)
    cost = gemma_cost(hf.model)
    print(f"gemma-3-270m: {cost.layer_params / 1e6:.1f}M layer weights + {cost.output_params / 1e6:.1f}M output "
          f"layer per step; KV {cost.kv_bytes_per_token / 1024:.1f} KiB/token")
    reqs = requests_for(hf.tokenizer, args.rounds * max(batches), args.new_tokens, data)
    rows = []
    for name in args.backends.split(","):
        if name == "hf":
            width = 2.0 if args.hf_dtype == "bfloat16" else 4.0
            backend, wbytes, gflops = hf, width * (cost.layer_params + cost.output_params), peak[args.hf_dtype]
            label = f"hf {'bf16' if width == 2 else 'fp32'}"
            label += " (output layer mm)" if args.output_layer == "mm" else ""
            label += " (prepacked)" if args.prepack else ""
        elif name == "llamacpp":
            wbytes = gguf_weight_bytes(str(known_model_path("gemma3-270m")))
            gflops, label = peak["float32"], "llamacpp Q4_K_M"
            backend = None
        else:
            raise SystemExit(f"unknown backend {name!r}: hf or llamacpp")
        for b in batches:
            if name == "llamacpp":
                backend = load_backend("llamacpp", "gemma3-270m", n_threads=args.threads, parallel=b) if b > 1 \
                    else load_backend("llamacpp", "gemma3-270m", n_threads=args.threads)
            tps, toks, ctx = measure(backend, reqs[:args.rounds * b], b)
            ceil, bound = cost.ceiling(b, round(ctx), wbytes, gbs, gflops)
            rows.append((label, b, tps, ceil, bound, toks))
            print(f"  measured {label} batch {b}: {tps:.1f} tok/s ({toks} tokens), ceiling {ceil:.1f} ({bound}-bound)",
                  flush=True)
    print("\n| backend | batch | tokens/s | ceiling tokens/s | bound | % of ceiling |\n|---|---|---|---|---|---|")
    for label, b, tps, ceil, bound, _ in rows:
        print(f"| {label} | {b} | {tps:.1f} | {ceil:.1f} | {bound} | {100 * tps / ceil:.1f}% |")
    hf_rows = [r for r in rows if r[0].startswith("hf")]
    if hf_rows:
        # Between the ceiling and the measurement: what the matmul kernels alone allow. If this is
        # under a target, no reduction of the rest of the step (operators, Python) can reach it.
        print(f"\nThe linear layers alone ({hf_rows[0][0]}, through the backend's own forward, all of them in "
              "model order, each weight read from memory as in a step; in brackets: each shape timed alone, cache-hot):")
        print("| batch | linears ms/step | tokens/s if only they ran | % of ceiling | measured ms/step | linears' share |"
              "\n|---|---|---|---|---|---|")
        for label, b, tps, ceil, _, _ in hf_rows:
            step, hot, by_shape = linear_bound(hf.model, b, dtype)
            print(f"| {b} | {1e3 * step:.1f} ({1e3 * hot:.1f}) | {b / step:.1f} | {100 * b / step / ceil:.1f}% "
                  f"| {1e3 * b / tps:.1f} | {100 * step * tps / b:.0f}% |")
            if b == 8:
                worst = sorted(by_shape.items(), key=lambda kv: -kv[1][0] * kv[1][1])
                print("  batch 8 by shape, cache-hot (in x out, layers, ms per step): " + "; ".join(
                    f"{i}x{o} x{n} {1e3 * n * t:.1f}" for (i, o), (n, t) in worst))
    hf8 = [r for r in rows if r[0].startswith("hf") and r[1] == 8]
    if hf8:
        pct = 100 * hf8[0][2] / hf8[0][3]
        print(f"\n{hf8[0][0]} batch 8: {pct:.1f}% of the ceiling (target, bf16: >= 50%: "
              f"{'met' if pct >= 50 else 'not met'})")
    print("llamacpp ceilings bound the quantized integer dot products by the fp32 matmul peak: an approximation.")
    if args.profile:
        profile_hf(hf, reqs, 8)


if __name__ == "__main__":
    main()
