"""The vllm backend: the pure vLLM-output mappings (always run, with outputs shaped like vLLM's),
the backend class over a stub ``vllm`` module (always run), and, with vLLM and a GPU, a real model
end to end against the hf backend."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from dataclasses import replace
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from pretty_align.backends.base import GenerationRequest, token_stats
from pretty_align.backends.fake import EOS, CharTokenizer, FakeBackend
from pretty_align.backends.vllm import (VLLMBackend, dense_logprobs, lora_rank_cap, score_from_prompt_logprobs,
                                        to_generations)
from pretty_align.decoding import Decoding
from pretty_align.errors import CapabilityError, InputError, MissingDependencyError, PrettyAlignError

TOK = CharTokenizer()
PROMPTS = ["English: The cat sits on the mat.\nGerman:", "English: A dog.\nGerman:", "Text: Hello there.\nFrench:"]


def fake_requests(budgets=(None, 7, None)):
    """Three prompts with priors of k = 0, 1, 2 character tokens and mixed per-row budgets."""
    prior = TOK.encode(" Die", add_special_tokens=False)
    return [GenerationRequest(tuple(TOK.encode(p)), tuple(prior[:k]), max_new_tokens=b)
            for k, (p, b) in enumerate(zip(PROMPTS, budgets))]


def vllm_outputs(fake: FakeBackend, requests, decoding: Decoding, eos_in_ids: bool = True):
    """What vLLM returns for the fake model: greedy ids up to EOS (included, or left out when
    ``eos_in_ids`` is False) or up to the row budget, with vLLM's finish reason."""
    raw = fake.generate(requests, replace(decoding, stop=(), loop_guard=False))
    outs = []
    for req, g in zip(requests, raw):
        ids = g.new_ids + ([EOS] if g.stop_reason == "eos" and eos_in_ids else [])
        reason = "stop" if g.stop_reason == "eos" else "length"
        outs.append(SimpleNamespace(prompt_token_ids=req.input_ids,
                                    outputs=[SimpleNamespace(token_ids=ids, finish_reason=reason)]))
    return outs


CASES = [  # (fake model, decoding, request budgets): together they end rows for every reason
    ("fake:echo", Decoding(max_new_tokens=40), (None, 7, None)),                         # stop string
    ("fake:echo", Decoding(max_new_tokens=200, stop=(), loop_guard=False), (None,) * 3),  # EOS
    ("fake:echo", Decoding(max_new_tokens=5, stop=()), (None, 3, 9)),                     # budget
    ("fake:loop", Decoding(max_new_tokens=60), (None, 30, None)),                        # loop guard
    ("fake:empty", Decoding(max_new_tokens=10), (None,) * 3),  # "\n" ends a primed row only
    ("fake:echo", Decoding(max_new_tokens=40, stop=("e",)), (None, 7, None)),
]


@pytest.mark.parametrize("eos_in_ids", [True, False])
def test_outputs_map_to_the_generations_every_backend_gives(eos_in_ids):
    """Pushing vLLM's ids through RowState reproduces the fake backend's own stopping exactly."""
    reasons = set()
    for model, dec, budgets in CASES:
        fake = FakeBackend(model)
        reqs = fake_requests(budgets)
        expected = fake.generate(reqs, dec)
        got = to_generations(vllm_outputs(fake, reqs, dec, eos_in_ids), reqs, dec, TOK, {EOS})
        assert got == expected, (model, dec)
        reasons |= {g.stop_reason for g in got}
    assert reasons == {"stop", "eos", "length", "loop"}
    # the lead-whitespace rule: "\n" stops the primed rows (an empty continuation) but not the unprimed one
    empty = to_generations(vllm_outputs(FakeBackend("fake:empty"), fake_requests(), CASES[4][1]),
                           fake_requests(), CASES[4][1], TOK, {EOS})
    assert [g.stop_reason for g in empty] == ["eos", "stop", "stop"]


def test_foreign_or_aborted_outputs_are_errors():
    fake, dec = FakeBackend("fake:echo"), Decoding()
    reqs = fake_requests()
    outs = vllm_outputs(fake, reqs, dec)
    with pytest.raises(PrettyAlignError, match="outputs for"):
        to_generations(outs[:2], reqs, dec, TOK, {EOS})
    with pytest.raises(PrettyAlignError, match="prompt ids differ"):
        to_generations(outs[::-1], reqs, dec, TOK, {EOS})
    outs[0].outputs[0].finish_reason = "abort"
    with pytest.raises(PrettyAlignError, match="abort"):
        to_generations(outs, reqs, dec, TOK, {EOS})


# -- prompt_logprobs, shaped as vllm/logprobs.py builds them ----------------------------------
def vllm_prompt_logprobs(rows: torch.Tensor, tokens: list[int], k: int) -> list:
    """``rows[j - 1]`` is the distribution predicting ``tokens[j]``. As vLLM: entry 0 is None; each
    entry holds the actual token with its full-vocabulary rank (count of log-probs >= its own), then
    the top-k with ranks 1..k overwriting it when it is among them; k = -1 means the whole vocab."""
    out: list = [None]
    for j in range(1, len(tokens)):
        row, tgt = rows[j - 1], tokens[j]
        k_eff = row.numel() if k == -1 else k
        entry = {tgt: SimpleNamespace(logprob=float(row[tgt]), rank=int((row >= row[tgt]).sum()), decoded_token=None)}
        top = row.topk(k_eff)
        for r, (v, tid) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
            entry[tid] = SimpleNamespace(logprob=v, rank=r, decoded_token=None)
        out.append(entry)
    return out


def table(tokens: list[int], vocab: int) -> torch.Tensor:
    """A deterministic 'model': the log-probs predicting token j depend on tokens[:j] only."""
    rows = []
    for j in range(1, len(tokens)):
        g = torch.Generator().manual_seed(hash(tuple(tokens[:j])) % 2**31)
        rows.append(torch.log_softmax(torch.randn(vocab, generator=g) * 3, dim=-1))
    return torch.stack(rows)


def test_score_reads_ranks_logprobs_and_top_ids_at_the_answer_positions():
    vocab, prompt = 50, [1, 7, 9, 11]
    first = table(prompt + [0], vocab)[-1]
    answer = [int(first.argmax()), 5, 6, 7]
    answer[1] = int(table(prompt + answer, vocab)[len(prompt)].argmin())   # rank = vocab: outside the top-k
    rows = table(prompt + answer, vocab)
    res = score_from_prompt_logprobs(vllm_prompt_logprobs(rows, prompt + answer, 3), len(prompt), answer, 3)
    chosen, ranks, top = token_stats(rows[len(prompt) - 1:], answer, 3)
    assert res.ranks == ranks.tolist() and res.ranks[0] == 1 and res.ranks[1] == vocab
    assert res.logprobs == pytest.approx(chosen.tolist(), abs=1e-6)
    assert res.top_ids == top.tolist()


def test_dense_logprobs_rebuilds_full_rows_and_refuses_partial_ones():
    vocab, tokens = 30, [2, 4, 6, 8, 10, 12]
    rows = table(tokens, vocab)
    full = vllm_prompt_logprobs(rows, tokens, -1)
    assert torch.equal(dense_logprobs(full, 3, 2, vocab), rows[2:4])
    with pytest.raises(CapabilityError, match="full_logprobs"):
        dense_logprobs(vllm_prompt_logprobs(rows, tokens, 5), 3, 2, vocab)


def test_lora_rank_is_rounded_up_to_a_rank_vllm_accepts():
    assert [lora_rank_cap(r) for r in (1, 4, 8, 9, 300)] == [1, 8, 8, 16, 320]
    with pytest.raises(InputError, match="LoRA rank"):
        lora_rank_cap(513)


# -- without vLLM -------------------------------------------------------------------------------
def test_without_vllm_construction_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)   # `import vllm` fails even where it is installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'pretty-align\[vllm\]'"):
        VLLMBackend("./no/such/model")   # checked before the model: the dependency is the first problem


def test_module_imports_without_vllm():
    code = ("import sys; sys.modules['vllm'] = None\n"
            "from pretty_align.backends import BACKENDS\nimport pretty_align.backends.vllm as m\n"
            "assert BACKENDS.get('vllm') is m.VLLMBackend")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the backend class over a stub vllm module ------------------------------------------------
VOCAB = 40


class StubLLM:
    """Stands in for ``vllm.LLM``: records its kwargs and calls; generation follows the fake
    model's greedy continuations (``script``), prompt log-probs follow ``table``."""

    script: ClassVar[dict] = {}

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        cfg = SimpleNamespace(get_vocab_size=lambda: VOCAB, hf_config=SimpleNamespace(eos_token_id=EOS),
                              try_get_generation_config=lambda: {"eos_token_id": [EOS, 4]})
        self.llm_engine = SimpleNamespace(model_config=cfg)

    def get_tokenizer(self):
        return TOK

    def generate(self, prompts, params, *, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, params, lora_request))
        params = params if isinstance(params, list) else [params] * len(prompts)
        outs = []
        for prompt, sp in zip(prompts, params):
            ids = prompt["prompt_token_ids"]
            if sp.prompt_logprobs is not None:
                # early V1 engines returned no prompt_logprobs at all when asked for 0
                plp = vllm_prompt_logprobs(table(ids, VOCAB), ids, sp.prompt_logprobs) if sp.prompt_logprobs else None
                outs.append(SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=plp, outputs=[]))
                continue
            cont, new = self.script[tuple(ids)], []
            for tok in cont[:sp.max_tokens]:
                new.append(tok)
                if tok in sp.stop_token_ids:
                    break
            reason = "stop" if new and new[-1] in sp.stop_token_ids else "length"
            outs.append(SimpleNamespace(prompt_token_ids=ids,
                                        outputs=[SimpleNamespace(token_ids=new, finish_reason=reason)]))
        return outs


@dataclasses.dataclass
class StubEngineArgs:
    model: str = ""
    enforce_eager: bool = False
    quantization: str | None = None


@pytest.fixture
def stub_vllm(monkeypatch):
    def sampling_params(**kw):
        kw.setdefault("prompt_logprobs", None)
        return SimpleNamespace(**kw)

    vllm = types.ModuleType("vllm")
    vllm.__version__ = "0.0-stub"
    vllm.LLM, vllm.SamplingParams, vllm.EngineArgs = StubLLM, sampling_params, StubEngineArgs
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, int_id, path: ("lora", name, int_id, path)
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return vllm


def test_generate_is_one_engine_call_on_the_exact_ids(stub_vllm):
    dec = Decoding(max_new_tokens=40)
    fake, reqs = FakeBackend("fake:echo"), fake_requests()
    raw = fake.generate(reqs, replace(dec, stop=(), loop_guard=False, max_new_tokens=200))
    StubLLM.script = {tuple(r.input_ids): g.new_ids + [EOS] for r, g in zip(reqs, raw)}
    be = VLLMBackend("org/tiny", dtype="float32")
    done = []
    gens = be.generate(reqs, dec, on_done=lambda i, g: done.append((i, g)))
    assert gens == fake.generate(reqs, dec)
    assert sorted(i for i, _ in done) == [0, 1, 2] and all(gens[i] == g for i, g in done)
    [(prompts, params, lora)] = be.llm.calls
    assert prompts == [{"prompt_token_ids": r.input_ids} for r in reqs] and lora is None
    assert [p.max_tokens for p in params] == [40, 7, 40]
    assert all(p.temperature == 0 and p.detokenize is False and p.stop_token_ids == [EOS, 4] for p in params)
    assert be.eos_ids == {EOS, 4}
    kw = be.llm.kwargs
    assert (kw["model"], kw["dtype"], kw["enable_prefix_caching"], kw["max_logprobs"], kw["generation_config"]) \
        == ("org/tiny", "float32", True, 20, "vllm")
    assert "enable_lora" not in kw
    assert be.capabilities.batch_invariant is False and be.capabilities.exact_scoring is True
    assert be.generate([], dec) == [] and len(be.llm.calls) == 1


def test_score_and_answer_logprobs_align_with_the_answer_positions(stub_vllm):
    prompt, answer = [1, 7, 9, 11], [3, 5, 8, 13, 21]
    rows = table(prompt + answer, VOCAB)[len(prompt) - 1:]   # rows[i] predicts answer[i]
    be = VLLMBackend("org/tiny", full_logprobs=True)
    assert be.llm.kwargs["max_logprobs"] == -1
    res = be.score(prompt, answer, top_k=4)
    chosen, ranks, top = token_stats(rows, answer, 4)
    assert res.ranks == ranks.tolist() and res.top_ids == top.tolist()
    assert res.logprobs == pytest.approx(chosen.tolist(), abs=1e-6)
    chunks = list(be.answer_logprobs([(prompt, answer), ([2], []), (prompt, answer[:1])], chunk=2))
    assert [(i, first) for i, first, _ in chunks] == [(0, 0), (0, 2), (0, 4), (2, 0)]
    assert torch.equal(torch.cat([lp for i, _, lp in chunks if i == 0]), rows)
    assert torch.equal(chunks[-1][2], rows[:1])
    with pytest.raises(InputError, match="prompt token"):
        be.score([], answer)
    with pytest.raises(InputError, match="prompt token"):
        list(be.answer_logprobs([([], [])]))

    capped = VLLMBackend("org/tiny")
    assert capped.score(prompt, answer, top_k=0).ranks == res.ranks   # asks vLLM for >= 1 entry
    with pytest.raises(CapabilityError, match="full_logprobs = true"):
        capped.answer_logprobs([(prompt, answer)])   # refused at the call, not at first use
    with pytest.raises(InputError, match="max_logprobs = 25"):
        capped.score(prompt, answer, top_k=25)


def test_options_adapter_gguf_and_signature(stub_vllm, tmp_path):
    with pytest.raises(InputError, match="enforce_eagr"):
        VLLMBackend("org/tiny", enforce_eagr=True)
    with pytest.raises(InputError, match="enable_lora"):
        VLLMBackend("org/tiny", enable_lora=True)
    with pytest.raises(InputError, match="dtype"):
        VLLMBackend("org/tiny", dtype="int8")
    assert VLLMBackend("org/tiny", enforce_eager=True).llm.kwargs["enforce_eager"] is True

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    be = VLLMBackend(str(model), adapter=str(adapter))
    assert (be.llm.kwargs["enable_lora"], be.llm.kwargs["max_lora_rank"]) == (True, 8)
    StubLLM.script = {(1, 2): [5, EOS]}
    be.generate([GenerationRequest((1, 2))], Decoding())
    assert be.llm.calls[-1][2] == ("lora", "adapter", 1, str(adapter.resolve()))
    sig = be.signature()
    assert sig["backend"] == "vllm" and sig["kind"] == "dir" and len(sig["sha256"]) == 64
    assert len(sig["adapter_sha256"]) == 64 and sig["vllm"] == "0.0-stub" and sig["enable_prefix_caching"] is True
    (adapter / "adapter_model.safetensors").write_bytes(b"other weights")
    assert VLLMBackend(str(model), adapter=str(adapter)).signature()["adapter_sha256"] != sig["adapter_sha256"]
    assert VLLMBackend("org/tiny").signature()["sha256"] is None

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(InputError, match="tokenizer"):
        VLLMBackend(str(gguf))
    g = VLLMBackend(str(gguf), tokenizer="org/base")
    assert g.llm.kwargs["tokenizer"] == "org/base" and g.signature()["tokenizer"] == "org/base"


# -- a real model on a GPU ----------------------------------------------------------------------
def test_real_model_greedy_and_scores_match_the_hf_backend():
    """Set PRETTY_ALIGN_VLLM_MODEL to a small causal LM (hub id or directory) on a GPU machine
    with vLLM installed. float32 on both sides, so the greedy paths may not diverge.

    vLLM's float32 on a GPU is not CPU float32 to the last bits: on an H200 (vLLM 0.20.2, its
    TRITON_ATTN backend, a tiny random Qwen2 with head_dim 64) the answer's log-probabilities
    differed from the hf backend's by up to 0.027 (mean 0.005) over the 400-token vocabulary, with
    the greedy outputs identical. ``tol`` is set to that kind of error; a wrong position or token in
    the mapping is off by nats, not hundredths."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("the vllm backend needs a GPU")
    model = os.environ.get("PRETTY_ALIGN_VLLM_MODEL")
    if not model:
        pytest.skip("set PRETTY_ALIGN_VLLM_MODEL to a small model to run vLLM end to end")
    from pretty_align.backends import load_backend
    from pretty_align.boundary import answer_ids, cut_prior, encode_prompt

    hf = load_backend("hf", model, dtype="float32")
    vb = VLLMBackend(model, dtype="float32", gpu_memory_utilization=0.3, full_logprobs=True)
    tok = hf.tokenizer
    assert vb.tokenizer.encode(PROMPTS[0]) == tok.encode(PROMPTS[0])
    reqs = []
    for k, text in enumerate(["The cat sits on the mat.", "Scientists announced a new tool.", "I like tea."]):
        p = encode_prompt(tok, f"English: {text}\nGerman:")
        reqs.append(GenerationRequest(p.ids, tuple(cut_prior(answer_ids(tok, p, "Die Katze sitzt"), k))))
    dec = Decoding(max_new_tokens=24)
    want = [(g.new_ids, g.stop_reason) for g in hf.generate(reqs, dec)]
    assert [(g.new_ids, g.stop_reason) for g in vb.generate(reqs, dec)] == want
    assert [(g.new_ids, g.stop_reason) for g in vb.generate(reqs, dec)] == want   # prefix cache warm

    p, a = list(reqs[0].prompt_ids), answer_ids(tok, encode_prompt(tok, "English: The cat.\nGerman:"), "Die Katze.")
    lv = torch.cat([lp for _, _, lp in vb.answer_logprobs([(p, a)])])
    lh = torch.cat([lp for _, _, lp in hf.answer_logprobs([(p, a)])])
    tol = 0.05
    assert lv.shape == lh.shape and torch.allclose(lv, lh, atol=tol)
    sv, sh = vb.score(p, a, top_k=5), hf.score(p, a, top_k=5)
    assert sv.logprobs == pytest.approx(sh.logprobs, abs=tol)
    for i, t in enumerate(a):   # ranks agree up to tokens within float noise of the target
        close = int(((lh[i] - lh[i, t]).abs() < 2 * tol).sum())
        assert abs(sv.ranks[i] - sh.ranks[i]) < close
    assert [t[0] for t in sv.top_ids] == [t[0] for t in sh.top_ids]
