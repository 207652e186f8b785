"""The llamacpp backend on the real gemma-3-270m GGUF: greedy outputs equal a plain llama-cpp-python
loop, prior ids are honoured, the prompt cache is bit-exact, stopping rules, tokenizer parity with
Hugging Face. Generations are a few tokens each: the whole file runs in well under a minute."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import LLAMA_THREADS, require_module

require_module("llama_cpp", "-e '.[llamacpp]'")

import pretty_align.backends.llamacpp  # noqa: E402,F401  (registers "llamacpp")
from pretty_align.backends import BACKENDS, load_backend  # noqa: E402
from pretty_align.backends.base import GenerationRequest  # noqa: E402
from pretty_align.backends.llamacpp import GGUFTokenizer, LlamaCppBackend  # noqa: E402
from pretty_align.boundary import (  # noqa: E402
    answer_ids, cut_prior, encode_prompt, render_output, tokenizer_fingerprint)
from pretty_align.decoding import Decoding  # noqa: E402
from pretty_align.errors import CapabilityError, InputError  # noqa: E402

NO_STOP = Decoding(max_new_tokens=4, stop=(), loop_guard=False)
N_BATCH = 8   # small evaluation chunks, so that short test prompts share whole cached chunks


@pytest.fixture(scope="module")
def gemma_path(gemma_gguf) -> str:
    return str(gemma_gguf)


@pytest.fixture(scope="module")
def backend(gemma_path) -> LlamaCppBackend:
    return load_backend("llamacpp", "gemma3-270m", n_threads=LLAMA_THREADS, n_ctx=512, n_batch=N_BATCH)


def plain_greedy(llm, ids: list[int], n: int) -> list[int]:
    """The reference: llama-cpp-python's own greedy loop from a fresh state."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    out: list[int] = []
    for tok in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(vocab, tok) or len(out) == n:
            break
        out.append(tok)
    return out


def prompt(tok, text: str):
    return encode_prompt(tok, f"Translate from English to German.\nEnglish: {text}\nGerman:")


@pytest.mark.real_model
def test_greedy_equals_a_plain_llama_cpp_loop_and_priors_are_honoured(backend, gemma_path):
    import llama_cpp

    tok = backend.tokenizer
    p1, p2 = prompt(tok, "The cat sits on the mat."), prompt(tok, "The dog runs in the park.")
    prior = cut_prior(answer_ids(tok, p1, "Die Katze sitzt"), 2)            # " Die Kat": ends mid-word
    reqs = [GenerationRequest(p1.ids), GenerationRequest(p2.ids), GenerationRequest(p1.ids, tuple(prior))]
    done: list[int] = []
    gens = backend.generate(reqs, NO_STOP, on_done=lambda i, g: done.append(i))
    assert sorted(done) == [0, 1, 2]
    ref = llama_cpp.Llama(model_path=gemma_path, n_ctx=512, n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=LLAMA_THREADS,
                          verbose=False)
    for req, gen in zip(reqs, gens):
        assert gen.new_ids == plain_greedy(ref, req.input_ids, 4) and gen.stop_reason == "length"
    text = render_output(tok, p1, prior, gens[2].new_ids)
    assert text.startswith(tok.decode(prior).strip()) and len(text) > len(tok.decode(prior).strip())


@pytest.mark.real_model
def test_prompt_cache_reuses_whole_chunks_and_is_bit_exact(backend):
    tok = backend.tokenizer
    p = prompt(tok, "Scientists announced a new diagnostic tool on Monday.")
    prior_a = answer_ids(tok, p, "Wissenschaftler")[:1]
    prior_b = answer_ids(tok, p, "Forscher haben")[:2]
    reqs = [GenerationRequest(p.ids, tuple(prior_a), 3), GenerationRequest(p.ids, tuple(prior_b), 3),
            GenerationRequest(p.ids, (), 3)]
    backend.prompt_cache = False
    try:
        alone = [backend.generate([r], NO_STOP)[0] for r in reqs]
        fresh_score = backend.score(list(p.ids) + prior_b, alone[1].new_ids)
    finally:
        backend.prompt_cache = True
    before = backend.evaluated_tokens
    together = backend.generate(reqs, NO_STOP)
    evaluated = backend.evaluated_tokens - before
    assert [(g.new_ids, g.stop_reason) for g in together] == [(g.new_ids, g.stop_reason) for g in alone]
    # Sorted (p), (p + a), (p + b): each reuses every whole 8-token chunk of p (the first one
    # finds them left in the cache by the fresh scoring pass), and evaluates only the rest.
    shared = len(p.ids) - len(p.ids) % N_BATCH
    assert shared >= 16 and evaluated == sum(len(r.input_ids) for r in reqs) - 3 * shared
    # Bit-exact, not just the same argmax: teacher-forced log-probs after a cache hit.
    cached_score = backend.score(list(p.ids) + prior_b, alone[1].new_ids)
    assert cached_score.logprobs == fresh_score.logprobs and cached_score.ranks == [1] * 3


@pytest.mark.real_model
def test_stop_strings_eos_and_budgets(backend):
    tok = backend.tokenizer
    p = prompt(tok, "The cat sits on the mat.")
    # The model goes on with a new "English:" line after its translation: with the prior as the
    # whole answer, the next token is the newline, which ends the row at once.
    [first] = backend.generate([GenerationRequest(p.ids)], replace(NO_STOP, max_new_tokens=12))
    answer = tok.decode(first.new_ids)
    assert "\n" in answer
    prior = answer_ids(tok, p, answer.split("\n")[0])
    [stopped] = backend.generate([GenerationRequest(p.ids, tuple(prior))], Decoding(max_new_tokens=12))
    assert stopped.stop_reason == "stop" and tok.decode(stopped.new_ids) == "\n"
    [short] = backend.generate([GenerationRequest(p.ids, (), 2)], Decoding(max_new_tokens=12))
    assert len(short.new_ids) == 2 and short.stop_reason == "length"
    assert 1 in backend._eos and backend.signature()["n_batch"] == N_BATCH


@pytest.mark.real_model
def test_scoring_is_exact_over_the_vocabulary(backend):
    import torch

    tok = backend.tokenizer
    p = prompt(tok, "The dog runs in the park.")
    [gen] = backend.generate([GenerationRequest(p.ids, (), 3)], NO_STOP)
    res = backend.score(p.ids, gen.new_ids, top_k=3)
    assert res.ranks == [1, 1, 1] and [t[0] for t in res.top_ids] == gen.new_ids   # greedy = rank 1
    whole = list(backend.answer_logprobs([(p.ids, gen.new_ids)]))
    pieces = list(backend.answer_logprobs([(p.ids, gen.new_ids)], chunk=2))
    assert [(i, first, lp.shape[0]) for i, first, lp in pieces] == [(0, 0, 2), (0, 2, 1)]
    assert torch.equal(torch.cat([lp for *_, lp in pieces]), whole[0][2])
    assert whole[0][2].shape[1] == len(tok) and torch.allclose(whole[0][2].exp().sum(-1), torch.ones(3), atol=1e-4)


@pytest.mark.real_model
def test_tokenizer_round_trips_and_matches_hugging_face(gemma_tokenizer, gemma_hf_checkpoint):
    tok = gemma_tokenizer
    samples = ["English: The cat sits on the mat.\nGerman:", " Der Kater",
               "猫坐在垫子上。 Japanese: 猫がマット", "  two  spaces\n\n\ttab", "<start_of_turn>user\nhi<end_of_turn>",
               "emoji 😀👍🏽 é"]
    for s in samples:
        ids = tok.encode(s)
        assert ids[0] == tok.bos_token_id == 2 and tok.encode(s, add_special_tokens=False) == ids[1:]
        assert tok.decode(ids) == "<bos>" + s
        plain = s.replace("<start_of_turn>", "").replace("<end_of_turn>", "")
        assert tok.decode(ids, skip_special_tokens=True) == plain
    cat = tok.encode("猫", add_special_tokens=False)
    assert len(cat) == 1
    vocab = tok.get_vocab()
    byte_ids = [vocab[f"<0x{b:02X}>"] for b in "猫".encode()]
    assert tok.decode(byte_ids) == "猫" and tok.decode(byte_ids[:2]).endswith("\ufffd")   # cut inside a character
    assert (tok.eos_token_id, tok.pad_token_id, len(tok)) == (1, 0, 262144) and tok.chat_template is None
    # The HF tokenizer transformers builds from this GGUF (the hf backend caches it converted).
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(gemma_hf_checkpoint)
    for s in samples:
        for special in (True, False):
            assert tok.encode(s, special) == hf.encode(s, add_special_tokens=special)
        assert tok.decode(tok.encode(s), skip_special_tokens=True) == hf.decode(hf.encode(s), skip_special_tokens=True)
    assert tok.get_vocab() == hf.get_vocab() and tokenizer_fingerprint(tok) == tokenizer_fingerprint(hf)


@pytest.mark.real_model
def test_chat_template_renders_like_transformers(smollm2_gguf, hf_checkpoint):
    """SmolLM2-135M-Instruct (fetched by ``pretty-align fetch``) ships a chat template in its GGUF."""
    tok = GGUFTokenizer.from_path(smollm2_gguf)
    text = tok.render_chat("Translate into German: The cat.")
    assert text.endswith("<|im_start|>user\nTranslate into German: The cat.<|im_end|>\n<|im_start|>assistant\n")
    assert tok.bos_token_id is not None and 2 in tok.eog_ids
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_checkpoint(smollm2_gguf))
    assert text == hf.apply_chat_template([{"role": "user", "content": "Translate into German: The cat."}],
                                          tokenize=False, add_generation_prompt=True)
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(hf)


def test_refusals_name_the_field(tmp_path, monkeypatch):
    assert BACKENDS.get("llamacpp") is LlamaCppBackend
    with pytest.raises(CapabilityError, match="LoRA.*hf backend"):
        LlamaCppBackend("gemma3-270m", adapter=str(tmp_path))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(InputError, match="field 'model'.*not a .gguf file"):
        LlamaCppBackend(str(weights))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="field 'model'.*runs GGUF files"):
        LlamaCppBackend(str(tmp_path))
    with pytest.raises(InputError, match="field 'options'.*n_gpu"):
        LlamaCppBackend("gemma3-270m", n_gpu=1)


@pytest.mark.real_model
def test_over_long_inputs_are_refused_before_any_work(backend):
    long = GenerationRequest(tuple([2] + [669] * 600))
    with pytest.raises(InputError, match="n_ctx=512"):
        backend.generate([long], NO_STOP)


def test_missing_llama_cpp_names_the_extra(monkeypatch, tmp_path):
    import sys

    from pretty_align.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "llama_cpp", None)   # as if not installed: the module still imports
    with pytest.raises(MissingDependencyError, match=r"llamacpp backend.*pip install 'pretty-align\[llamacpp\]'"):
        GGUFTokenizer.from_path(tmp_path / "x.gguf")
