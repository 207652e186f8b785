"""The same 4-condition translation run on each available backend (issue 6).

    python benchmarks/backends.py --n 100 --tgt deu_Latn [--backends hf,hf-noreuse,llamacpp,llamacpp-loop,openai]
    python benchmarks/backends.py --task pos --tgt fra_Latn --backends hf,hf-noreuse   # long shared prompts

Conditions (gemma-3-270m base, FLORES dev, en -> one language): none / pseudo k=2 (MUSE) / model
k=2 (SmolLM2-135M-Instruct's first tokens) / sft k=2 (our LoRA SFT counterpart's first tokens, when
``runs/sft/gemma3-270m-mt/adapter`` exists; otherwise the condition is left out and the output says
so). The prompts and prior ids are built once, through the experiment runner's own code, and every
backend gets exactly those token ids (priors from other models are generated before any timing and
cached in ``runs/bench-backends.sqlite``).

Each backend runs in its own process (so peak RSS is its own), the requests in chunks of
``--chunk`` examples x 4 conditions, as the runner sends them:

* ``hf``             HF backend, prefix reuse on (one prefill per example, cache forked per prior)
* ``hf-noreuse``     HF backend, prefix reuse off
  (``--prepack``: both with the hf option ``prepack = true``; ``--dtype bfloat16 --batch-size 32
  --prepack`` is the presets' base, configs/shared/gemma-hf.toml)
* ``llamacpp``       llamacpp backend (the GGUF itself; prompt-cache reuse between conditions)
* ``llamacpp-batched`` llamacpp backend with ``parallel=--parallel`` (default 8) sequences per
                     ``llama_decode`` (continuous batching, one prompt shared by its prior variants)
* ``llamacpp-loop``  a plain llama-cpp-python greedy loop over the same ids (the reference point)
* ``openai``         openai backend against ``python -m llama_cpp.server`` on 127.0.0.1 (concurrency 4)

Reported: outputs/s, sentences/s (4 outputs each), generated tokens/s, peak RSS, the greedy outputs
(new ids) identical to the reference backend's (``--reference``, default the first that ran), and one
line per pair of backends that ran: ``agreement: A vs B: S/N identical greedy outputs (P%)``.
Targets: hf >= 30% less wall time than hf-noreuse with identical outputs; llamacpp within 10% of
llamacpp-loop; openai within 25% of llamacpp; llamacpp-batched >= 2.5x the throughput of llamacpp
(issue 14).

Smallest check (a few seconds per backend): ``--n 1 --max-new-tokens 8``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "runs" / "sft" / "gemma3-270m-mt" / "adapter"
CONFIG = """
name = "bench-backends"
store = "{store}"
[base]
model = "gemma3-270m"
dtype = "{dtype}"
{reference}
[decoding]
max_new_tokens = {max_new}
batch_size = {batch_size}
[[priors]]
strategy = "none"
{task}
"""
TRANSLATION = """[task]
name = "translation"
source = "eng_Latn"
targets = ["{tgt}"]
flores = "{data}/flores200"
split = "dev"
n = {n}
[[priors]]
strategy = "pseudo"
k = 2
dictionary = "{data}/dictionaries/muse/en-{{tgt_iso1}}.txt"
[[priors]]
strategy = "model"
k = 2
model = "smollm2-135m-instruct"
dtype = "{dtype}"
{sft}"""
# --task pos: 3-shot prompts of ~300 tokens shared by four conditions, where prefill matters
POS = """[task]
name = "pos"
targets = ["{tgt}"]
data = "{data}/ud-2.5"
answer_format = "tags"
shots = 3
n = {n}
[[priors]]
strategy = "pseudo"
k = 2
[[priors]]
strategy = "refined"
k = 2
[[priors]]
strategy = "gold"
k = 2
"""
REFERENCE = f'[reference]\nmodel = "gemma3-270m"\nadapter = "{ADAPTER}"\ndtype = "{{dtype}}"\nchat = false\n'
SFT_PRIOR = '[[priors]]\nstrategy = "sft"\nk = 2\nmodel = "reference"\n'


def build_requests(args) -> dict:
    """Prompt and prior ids of every (condition, example), through the runner's own code."""
    from pretty_align.experiment.config import load_config
    from pretty_align.priors import PriorItem

    sft = ADAPTER.is_dir() and args.task == "translation"
    if not sft and args.task == "translation":
        print(f"note: no SFT adapter at {ADAPTER}: the sft condition is left out "
              "(build it with `pretty-align sft configs/sft-gemma.toml`)")
    task = (TRANSLATION if args.task == "translation" else POS).format(
        tgt=args.tgt, n=args.n, data=args.data, dtype=args.dtype, sft=SFT_PRIOR if sft else "")
    text = CONFIG.format(store=ROOT / "runs" / "bench-backends.sqlite", dtype=args.dtype, max_new=args.max_new_tokens,
                         batch_size=args.batch_size, reference=REFERENCE.format(dtype=args.dtype) if sft else "",
                         task=task)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    from pretty_align.experiment.runner import Runner

    runner = Runner(load_config(Path(f.name)))
    tgt = runner.targets[0]
    examples = runner.examples[tgt.code]
    base = [c for c in runner.conditions if c.prior is not None]
    answerer = base[0].answerer
    prompts = [answerer.prompt(ex) for ex in examples]
    rows = []
    for cond in base:
        priors = cond.prior.build([PriorItem(ex, p[0]) for ex, p in zip(examples, prompts)], answerer.tokenizer)
        for i, ((p, n_src, _), prior) in enumerate(zip(prompts, priors)):
            rows.append({"cond": cond.label, "example": i, "prompt_ids": list(p.ids), "prior_ids": list(prior.ids),
                         "max_new_tokens": runner.decoding.budget(n_src)})
    order = [c for c in runner._chunks(examples)]
    return {"decoding": dataclasses.asdict(runner.decoding), "chunks": order,
            "rows": rows, "conditions": [c.label for c in base], "signature": answerer.signature()}


# -- workers: one process per backend ---------------------------------------------------------------
def _chunked_requests(spec: dict):
    from pretty_align.backends.base import GenerationRequest

    by_example: dict[int, list[int]] = {}
    for j, r in enumerate(spec["rows"]):
        by_example.setdefault(r["example"], []).append(j)
    for chunk in spec["chunks"]:
        idx = [j for e in chunk for j in by_example[e]]
        yield idx, [GenerationRequest(tuple(spec["rows"][j]["prompt_ids"]), tuple(spec["rows"][j]["prior_ids"]),
                                      spec["rows"][j]["max_new_tokens"]) for j in idx]


def run_backend(spec: dict, decoding, backend) -> tuple[float, list]:
    out: list = [None] * len(spec["rows"])
    t = time.perf_counter()
    for idx, reqs in _chunked_requests(spec):
        for j, gen in zip(idx, backend.generate(reqs, decoding)):
            out[j] = gen.new_ids
    return time.perf_counter() - t, out


def run_llamacpp_loop(spec: dict, decoding, model_path: str, threads: int) -> tuple[float, list]:
    """What a user would write with llama-cpp-python alone: greedy, token-id prompts, stop on EOS,
    the budget or a newline after the answer's start (RowState's rule, so outputs are comparable)."""
    from llama_cpp import Llama

    from pretty_align.decoding import RowState

    llm = Llama(model_path=model_path, n_ctx=4096, n_threads=threads, verbose=False)
    tok = _LlamaTok(llm)
    eos = {llm.token_eos()}
    out: list = [None] * len(spec["rows"])
    t = time.perf_counter()
    for idx, reqs in _chunked_requests(spec):
        for j, req in zip(idx, reqs):
            row = RowState.for_request(decoding, tok, req.max_new_tokens, has_prior=bool(req.prior_ids))
            for token in llm.generate(req.input_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                                      reset=True):
                if row.push(token, eos):
                    break
            out[j] = row.new
    return time.perf_counter() - t, out


class _LlamaTok:
    def __init__(self, llm) -> None:
        self.llm, self.eos_token_id = llm, llm.token_eos()

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=add_special_tokens)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--model_alias", "gemma3-270m",
                             "--logits_all", "false",   # logits_all (its default) slows every request down
                             "--interrupt_requests", "false"],   # else streams are cut when another request waits
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not come up in 60 s")


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would report the parent's peak after exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, spec_path: str, out_path: str, args) -> None:
    from pretty_align.backends import load_backend
    from pretty_align.decoding import Decoding
    from pretty_align.models import known_model_path

    spec = json.loads(Path(spec_path).read_text())
    d = spec["decoding"]
    decoding = Decoding(**{**d, "stop": tuple(d["stop"])})
    gguf = str(known_model_path("gemma3-270m"))
    server = None
    if name in ("hf", "hf-noreuse"):
        backend = load_backend("hf", "gemma3-270m", dtype=args.dtype, prefix_reuse=name == "hf", threads=args.threads,
                               prepack=args.prepack)
    elif name == "llamacpp":
        backend = load_backend("llamacpp", "gemma3-270m", n_threads=args.threads)
    elif name == "llamacpp-batched":
        backend = load_backend("llamacpp", "gemma3-270m", n_threads=args.threads, parallel=args.parallel)
    elif name == "openai":
        server, url = start_server(gguf, args.threads)
        backend = load_backend("openai", "gemma3-270m", base_url=url, tokenizer="gemma3-270m",
                               concurrency=args.concurrency)
    try:
        if name == "llamacpp-loop":
            wall, outs = run_llamacpp_loop(spec, decoding, gguf, args.threads)
        else:
            wall, outs = run_backend(spec, decoding, backend)
            sig = backend.signature()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    rss = peak_rss_mb()
    Path(out_path).write_text(json.dumps({"wall": wall, "outputs": outs, "peak_rss_mb": rss,
                                          "signature": sig if name != "llamacpp-loop" else {"backend": "llama-cpp loop"}}))


# -- driver -----------------------------------------------------------------------------------------
def identical(outputs: list, other: list) -> int:
    """How many requests got exactly the same new ids from both backends."""
    return sum(a == b for a, b in zip(outputs, other, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="hf,hf-noreuse,llamacpp,llamacpp-loop,openai")
    ap.add_argument("--reference", help="backend the 'same outputs' column compares with (default: the first that ran)")
    ap.add_argument("--data", default=os.environ.get("PRETTY_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--task", default="translation", choices=["translation", "pos"])
    ap.add_argument("--tgt", default="deu_Latn")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--prepack", action="store_true", help="hf backends: option prepack = true (oneDNN linears)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=8, help="sequences per step of llamacpp-batched")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.spec, args.out, args)

    t0 = time.time()
    spec = build_requests(args)
    n_rows, n_ex = len(spec["rows"]), args.n
    print(f"requests: {n_rows} ({n_ex} sentences x {spec['conditions']}), built in {time.time() - t0:.0f}s; "
          f"prior ids built once, the same for every backend")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "spec.json").write_text(json.dumps(spec))
    results = {}
    for name in args.backends.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--spec", str(tmp / "spec.json"), "--out",
               str(tmp / f"{name}.json"), "--dtype", args.dtype, "--threads", str(args.threads),
               "--concurrency", str(args.concurrency), "--parallel", str(args.parallel)] + ["--prepack"] * args.prepack
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{name:>16}: unavailable ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'})")
            continue
        results[name] = json.loads((tmp / f"{name}.json").read_text())
    if not results:
        return
    reference = args.reference or next(iter(results))
    if reference not in results:
        print(f"note: reference backend {reference} did not run; comparing with {next(iter(results))}")
        reference = next(iter(results))
    ref = results[reference]["outputs"]
    print(f"\n{'backend':>16} {'wall s':>8} {'outputs/s':>10} {'sent/s':>7} {'gen tok/s':>10} {'peak RSS MB':>12}"
          f"  same outputs as {reference}")
    for name, r in results.items():
        toks = sum(len(o) for o in r["outputs"])
        same = identical(r["outputs"], ref)
        print(f"{name:>16} {r['wall']:8.1f} {n_rows / r['wall']:10.2f} {n_ex / r['wall']:7.2f} {toks / r['wall']:10.1f}"
              f" {r['peak_rss_mb']:12.0f}  {same}/{n_rows} ({100 * same / n_rows:.1f}%)")
    print()
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = identical(results[a]["outputs"], results[b]["outputs"])
            print(f"agreement: {a} vs {b}: {same}/{n_rows} identical greedy outputs ({100 * same / n_rows:.1f}%)")
    w = {k: v["wall"] for k, v in results.items()}
    if {"hf", "hf-noreuse"} <= w.keys():
        same = identical(results["hf"]["outputs"], results["hf-noreuse"]["outputs"])
        print(f"\nHF prefix reuse: {100 * (1 - w['hf'] / w['hf-noreuse']):.1f}% less wall time (target >= 30%); "
              f"identical outputs {same}/{n_rows}")
    if {"llamacpp", "llamacpp-loop"} <= w.keys():
        print(f"llamacpp backend vs plain llama-cpp-python loop: {w['llamacpp'] / w['llamacpp-loop']:.2f}x wall time "
              "(target <= 1.10)")
    if {"llamacpp-batched", "llamacpp"} <= w.keys():
        print(f"llamacpp parallel={args.parallel} vs llamacpp: {w['llamacpp'] / w['llamacpp-batched']:.2f}x the "
              "throughput (target >= 2.5)")
    if {"openai", "llamacpp"} <= w.keys():
        print(f"openai (llama_cpp.server, concurrency {args.concurrency}) vs llamacpp backend: "
              f"{w['openai'] / w['llamacpp']:.2f}x wall time (target <= 1.25)")
    print("signatures:", json.dumps({k: v["signature"] for k, v in results.items()}))


if __name__ == "__main__":
    main()
