"""The HF backend on tiny random models (Qwen2 and Gemma 3 families) built in code."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import numpy as np
import torch

from pretty_align.backends.base import GenerationRequest
from pretty_align.boundary import answer_ids, cut_prior, encode_prompt
from pretty_align.decoding import Decoding
from pretty_align.errors import InputError
from pretty_align.experiment.answerer import Answerer
from pretty_align.languages import get_language
from pretty_align.tasks.base import Example
from pretty_align.tasks.translation import TranslationTask

from conftest import CORPUS, require_module

NO_STOP = Decoding(max_new_tokens=10, stop=(), loop_guard=False)


def requests(tok):
    reqs = []
    for i, text in enumerate(CORPUS[:7]):
        p = encode_prompt(tok, f"English: {text}\nGerman:")
        prior = cut_prior(answer_ids(tok, p, "Der Katze sitzt"), i % 3)  # k = 0, 1, 2
        reqs.append(GenerationRequest(p.ids, tuple(prior), max_new_tokens=4 + i))
    return reqs


def test_batched_equals_one_at_a_time(tiny_backend, monkeypatch):
    from pretty_align.backends import hf

    merges = []
    real_merge = hf._Batch.merge
    monkeypatch.setattr(hf._Batch, "merge", lambda self, other: merges.append(1) or real_merge(self, other))
    reqs = requests(tiny_backend.tokenizer)
    single = [tiny_backend.generate([r], replace(NO_STOP, batch_size=1))[0] for r in reqs]
    batched = tiny_backend.generate(reqs, replace(NO_STOP, batch_size=4))
    sliding = tiny_backend.model.config.model_type.startswith("gemma3")  # window 6: merging is unsafe
    assert (len(merges) == 0) if sliding else (len(merges) >= 2)  # freed slots were refilled
    assert [g.new_ids for g in batched] == [g.new_ids for g in single]
    assert [len(g.new_ids) for g in single] == [4 + i for i in range(7)]  # per-row budgets
    assert {g.stop_reason for g in single} == {"length"}


def test_batched_equals_single_with_stops_and_loop_guard(tiny_backend):
    dec = Decoding(max_new_tokens=16, stop=("e", "."), loop_guard=True, loop_min_repeats=2)
    reqs = requests(tiny_backend.tokenizer)
    single = [tiny_backend.generate([r], replace(dec, batch_size=1))[0] for r in reqs]
    batched = tiny_backend.generate(reqs, replace(dec, batch_size=7))
    assert [(g.new_ids, g.stop_reason) for g in batched] == [(g.new_ids, g.stop_reason) for g in single]


def test_prior_ids_are_appended_to_the_prompt_ids(tiny_backend, monkeypatch):
    seen = []
    real = tiny_backend.model.forward

    def spy(*args, **kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_backend.model, "forward", spy)
    reqs = requests(tiny_backend.tokenizer)
    tiny_backend.generate(reqs[:3], replace(NO_STOP, batch_size=3))
    ids, mask = seen[0]  # the prefill
    rows = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    assert all(x.shape[1] == 1 for x, _ in seen[1:])  # then one token per step, from the cache
    expected = [list(r.prompt_ids) + list(r.prior_ids) for r in reqs[:3]]
    assert sorted(rows) == sorted(expected)  # left padding only, nothing re-tokenized


def test_output_starts_with_the_prior_once(tiny_backend, tmp_path):
    tok = tiny_backend.tokenizer
    task = TranslationTask(src_file=str(tmp_path / "unused"), n=None)
    answerer = Answerer(tiny_backend, task, Decoding(max_new_tokens=8, stop=()))
    ex = Example("x/0", "The cat sits on the mat.", None, get_language("eng_Latn"), get_language("deu_Latn"))
    prompt = answerer.prompt(ex)[0]
    prior = cut_prior(answer_ids(tok, prompt, "Der Katze"), 2)  # "Der Kat": ends mid-word
    ans = answerer.answer([ex], [prior])[0]
    assert ans.prior_ids == prior
    assert ans.text.startswith("Der Kat")
    assert ans.text == tok.decode(prior + ans.new_ids, skip_special_tokens=True).strip()


def test_over_long_source_is_truncated_with_a_warning(tiny_backend, tmp_path, caplog):
    task = TranslationTask(src_file=str(tmp_path / "unused"))
    answerer = Answerer(tiny_backend, task, Decoding(max_new_tokens=3), max_prompt_tokens=30)
    long = " ".join(["The cat sits on the mat."] * 20)
    ex = Example("x/1", long, None, get_language("eng_Latn"), get_language("deu_Latn"))
    with caplog.at_level(logging.WARNING):
        ans = answerer.answer([ex])[0]
    assert ans.truncated and answerer.truncated_count == 1
    assert len(ans.prompt.ids) <= 30
    assert "truncated" in caplog.text and "x/1" in caplog.text


def test_score_matches_a_per_position_loop(tiny_backend):
    tok = tiny_backend.tokenizer
    p = encode_prompt(tok, "English: The cat.\nGerman:")
    ans = answer_ids(tok, p, "Der Katze sitzt auf der Matte.")
    res = tiny_backend.score(p.ids, ans, top_k=5)
    for i, tgt in enumerate(ans):
        with torch.no_grad():
            logits = tiny_backend.model(input_ids=torch.tensor([list(p.ids) + ans[:i]])).logits[0, -1]
        logp = torch.log_softmax(logits.float(), -1)
        assert res.logprobs[i] == pytest.approx(logp[tgt].item(), abs=1e-5)
        assert res.ranks[i] == int((logp > logp[tgt]).sum()) + 1
        assert res.top_ids[i] == logp.topk(5).indices.tolist()


def test_signature_names_the_model_files(tiny_backend):
    sig = tiny_backend.signature()
    assert sig["backend"] == "hf" and sig["kind"] == "dir" and len(sig["sha256"]) == 64


def test_lora_adapter_round_trips_through_the_backend(tiny_model_dir, tmp_path):
    """A LoRA adapter saved by peft loads by path and changes outputs exactly as peft does."""
    peft = require_module("peft", "-e '.[peft]'")
    from transformers import AutoModelForCausalLM

    from pretty_align.backends import load_backend

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    plain = load_backend("hf", str(tiny_model_dir))
    adapted = load_backend("hf", str(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    assert adapted.signature()["adapter_sha256"] and plain.signature()["adapter_sha256"] is None
    p = encode_prompt(plain.tokenizer, "English: The cat.\nGerman:")
    with torch.no_grad():
        expected = lora(input_ids=torch.tensor([p.ids])).logits[0, -1].argmax().item()
    [gen] = adapted.generate([GenerationRequest(p.ids)], Decoding(max_new_tokens=1, stop=()))
    assert gen.new_ids == [expected]
    assert adapted.score(p.ids, [expected]).ranks == [1]


# -- prefix reuse: one prefill per shared prompt, the cache forked per prior -----------------------

def shared_prompt_requests(tok):
    """3 prompts x priors of 0..3 tokens, interleaved: the backend has to regroup them."""
    reqs = []
    for k in (0, 1, 2, 3):
        for text in CORPUS[:3]:
            p = encode_prompt(tok, f"English: {text}\nGerman:")
            reqs.append(GenerationRequest(p.ids, tuple(cut_prior(answer_ids(tok, p, "Der Katze sitzt auf"), k)),
                                          max_new_tokens=6))
    return reqs


@pytest.fixture
def wide_window_backend(tiny_backend, tiny_tokenizer, tmp_path):
    """The tiny backend; for Gemma 3 a copy whose sliding window (64) fits the rows, since forking
    is refused when a row could outgrow a window (the shared tiny Gemma's window is 6)."""
    from conftest import build_model
    from pretty_align.backends import load_backend

    if not tiny_backend.model.config.model_type.startswith("gemma3"):
        return tiny_backend
    build_model("gemma3", len(tiny_tokenizer), sliding_window=64).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    return load_backend("hf", str(tmp_path))


def _prefill_tokens(backend, monkeypatch):
    """Counts the real (unmasked) tokens of every multi-token forward pass: prefills and prior feeds."""
    counted = []
    real = backend.model.forward

    def spy(*args, **kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1 or kwargs.get("logits_to_keep") == 1:
            counted.append(int(kwargs["attention_mask"][:, -ids.shape[1]:].sum()))
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", spy)
    return counted


@pytest.mark.parametrize("batch_size", [4, 12])
def test_prefix_reuse_gives_exactly_the_outputs_without_it(wide_window_backend, monkeypatch, batch_size):
    backend = wide_window_backend
    dec = replace(Decoding(max_new_tokens=6, stop=("e",), loop_guard=False), batch_size=batch_size)
    reqs = shared_prompt_requests(backend.tokenizer)
    counted = _prefill_tokens(backend, monkeypatch)
    reused = backend.generate(reqs, dec)
    reused_tokens, counted[:] = sum(counted), []
    monkeypatch.setattr(backend, "prefix_reuse", False)
    plain = backend.generate(reqs, dec)
    assert [(g.new_ids, g.stop_reason) for g in reused] == [(g.new_ids, g.stop_reason) for g in plain]
    # 12 rows, 3 prompts: each prompt was prefilled once per batch it appears in, not once per row
    assert reused_tokens < 0.6 * sum(counted)
    single = [backend.generate([r], replace(dec, batch_size=1))[0].new_ids for r in reqs]
    assert [g.new_ids for g in reused] == single


@pytest.mark.parametrize("tiny_model_dir", ["gemma3"], indirect=True)   # Qwen2 has no sliding-window layers
def test_prefix_reuse_is_refused_where_a_sliding_window_could_be_outgrown(tiny_backend, monkeypatch):
    from transformers.cache_utils import DynamicSlidingWindowLayer

    from pretty_align.backends import hf

    windows = [layer.sliding_window for layer in tiny_backend._new_cache().layers
               if isinstance(layer, DynamicSlidingWindowLayer)]
    assert windows == [6]   # the tiny Gemma 3: one sliding-window layer (window 6), one global layer
    feeds = []
    monkeypatch.setattr(hf._Batch, "feed", lambda *a, **k: feeds.append(1))
    reqs = shared_prompt_requests(tiny_backend.tokenizer)
    out = tiny_backend.generate(reqs, replace(NO_STOP, max_new_tokens=6, batch_size=12))
    assert not feeds   # window 6 < prompt + prior + budget: plain prefill of every row
    assert [g.new_ids for g in out] == [tiny_backend.generate([r], replace(NO_STOP, max_new_tokens=6, batch_size=1))[0]
                                        .new_ids for r in reqs]


def test_prefix_reuse_is_recorded_in_low_precision_signatures(tiny_model_dir):
    from pretty_align.backends import load_backend

    assert "prefix_reuse" not in load_backend("hf", str(tiny_model_dir)).signature()  # float32: outputs unchanged
    assert load_backend("hf", str(tiny_model_dir), dtype="bfloat16").signature()["prefix_reuse"] is True
    assert "prefix_reuse" not in load_backend("hf", str(tiny_model_dir), dtype="bfloat16",
                                              prefix_reuse=False).signature()


def test_the_output_layer_input_folds_into_one_matmul_when_weights_need_no_grad(tiny_backend):
    """A merged LoRA adapter leaves every weight with requires_grad=False. torch.matmul then folds
    the last-position slice (batch stride = the whole sequence) into one mm only if its strides are
    canonical; otherwise it broadcasts the 262k-row output weight into a bmm and copies it (1.2 s per
    row on gemma-3). The backend hands the output layer a canonical copy of the slice."""
    model = tiny_backend.model
    seen = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda _m, args: seen.append((tuple(args[0].shape), args[0].stride())))
    grads = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        tok = tiny_backend.tokenizer
        ids = encode_prompt(tok, "English: The cat sits on the mat.\nGerman:").ids
        session = tiny_backend.session()
        session.logits(ids)
        session.logits([*ids, *ids[:3]])   # a helper catching up three tokens at once
        tiny_backend.generate(requests(tok)[:3], replace(NO_STOP, batch_size=3, max_new_tokens=2))
    finally:
        hook.remove()
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    multi = [(shape, stride) for shape, stride in seen if stride[0] != shape[1] * shape[2]]
    assert len(seen) >= 4 and not multi, f"output layer inputs that matmul cannot fold: {multi}"


def test_the_mm_output_layer_gives_the_linear_ones_logits_and_outputs(tiny_backend, tiny_model_dir):
    """``output_layer="mm"`` computes the output layer as W @ h.T (faster on some CPUs): the same
    logits to float32 rounding, the same greedy outputs, and the choice is in the signature."""
    from pretty_align.backends import load_backend

    mm = load_backend("hf", str(tiny_model_dir), output_layer="mm")
    assert mm.signature()["output_layer"] == "mm" and "output_layer" not in tiny_backend.signature()
    assert "forward" in vars(mm.model.get_output_embeddings())   # the layer's own forward is replaced
    tok = tiny_backend.tokenizer
    ids = encode_prompt(tok, "English: The cat sits on the mat.\nGerman:").ids
    a, b = tiny_backend.session().logits(ids), mm.session().logits(ids)
    assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-5) and not np.allclose(np.asarray(a), 0)
    reqs = requests(tok)
    dec = replace(NO_STOP, batch_size=4)
    assert [g.new_ids for g in mm.generate(reqs, dec)] == [g.new_ids for g in tiny_backend.generate(reqs, dec)]


def test_an_unknown_output_layer_is_refused(tiny_model_dir):
    from pretty_align.backends import load_backend

    with pytest.raises(InputError, match="options.output_layer"):
        load_backend("hf", str(tiny_model_dir), output_layer="einsum")


def test_prepacked_linears_give_the_same_outputs_batched_and_alone_and_are_signed(tiny_backend, tiny_model_dir):
    """``prepack = true`` runs every linear layer through oneDNN over weights laid out once at load:
    in float32 the logits match torch's own linear to rounding, greedy outputs are the same, batched
    equals one at a time, and the signature says so."""
    from pretty_align.backends import load_backend

    packed = load_backend("hf", str(tiny_model_dir), prepack=True)
    assert packed.signature()["prepack"] is True and "prepack" not in tiny_backend.signature()
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in packed.model.modules())
    assert n_linear > 2 and sum("forward" in vars(m) for m in packed.model.modules()) == n_linear
    tok = tiny_backend.tokenizer
    ids = encode_prompt(tok, "English: The cat sits on the mat.\nGerman:").ids
    a, b = tiny_backend.session().logits(ids), packed.session().logits(ids)
    assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-5) and not np.allclose(np.asarray(a), 0)
    reqs = requests(tok)
    single = [packed.generate([r], replace(NO_STOP, batch_size=1))[0].new_ids for r in reqs]
    batched = [g.new_ids for g in packed.generate(reqs, replace(NO_STOP, batch_size=4))]
    assert batched == single == [g.new_ids for g in tiny_backend.generate(reqs, replace(NO_STOP, batch_size=4))]


def test_prepack_in_bfloat16_is_bit_identical_where_the_cpu_has_bf16_and_refused_elsewhere(tiny_model_dir):
    """In bfloat16 torch's linear already runs oneDNN, reordering the weight on every call; packed
    once, the logits are the same bits. On a CPU without oneDNN bf16 the option is refused."""
    from pretty_align.backends import load_backend

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        with pytest.raises(InputError, match="options.prepack"):
            load_backend("hf", str(tiny_model_dir), dtype="bfloat16", prepack=True)
        return
    plain = load_backend("hf", str(tiny_model_dir), dtype="bfloat16")
    packed = load_backend("hf", str(tiny_model_dir), dtype="bfloat16", prepack=True)
    tok = plain.tokenizer
    ids = encode_prompt(tok, "English: The cat sits on the mat.\nGerman:").ids
    assert np.array_equal(np.asarray(plain.session().logits(ids)), np.asarray(packed.session().logits(ids)))
    reqs = requests(tok)
    dec = replace(NO_STOP, batch_size=4)
    assert [g.new_ids for g in packed.generate(reqs, dec)] == [g.new_ids for g in plain.generate(reqs, dec)]


@pytest.mark.parametrize("options, field", [({"prepack": True, "output_layer": "mm"}, "options.output_layer"),
                                            ({"prepack": True, "dtype": "float16"}, "options.prepack"),
                                            ({"prepack": "yes"}, "options.prepack")])
def test_prepack_nonsense_is_refused(tiny_model_dir, options, field):
    from pretty_align.backends import load_backend

    with pytest.raises(InputError, match=field):
        load_backend("hf", str(tiny_model_dir), **options)


@pytest.mark.parametrize("native, resolved", [(True, "bfloat16"), (False, "float32")])
def test_dtype_auto_is_bfloat16_only_where_the_cpu_has_it_and_the_signature_says_which(tiny_model_dir, monkeypatch,
                                                                                       native, resolved):
    import pretty_align.hardware as hardware
    from pretty_align.backends import load_backend

    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    backend = load_backend("hf", str(tiny_model_dir), dtype="auto")
    assert backend.signature()["dtype"] == resolved and backend.dtype == resolved
    assert next(backend.model.parameters()).dtype == getattr(torch, resolved)
    assert backend.capabilities.batch_invariant is (resolved == "float32")


def test_gguf_parsed_once_reads_the_same_fields_and_tensors_once_per_file(tmp_path):
    """The conversion speed-up (one reader per file, parsed over a plain ndarray) must read exactly
    what gguf-py's own reader reads, and put the original reader back afterwards."""
    import gguf

    from pretty_align.backends.hf import _gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("tiny.count", 7)
    writer.add_string("tiny.name", "ein kleines Modell")
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)] + ["▁Welt", "猫"])
    writer.add_array("tokenizer.ggml.scores", [float(i) / 3 for i in range(302)])
    weights = np.arange(48, dtype=np.float32).reshape(6, 8) / 7
    writer.add_tensor("blk.0.w", weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    original = gguf.GGUFReader
    plain = original(path)
    with _gguf_parsed_once():
        fast = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is fast          # parsed once per file
        assert type(fast.data) is np.ndarray               # not the memmap subclass
    assert gguf.GGUFReader is original
    assert list(fast.fields) == list(plain.fields)
    for name, field in plain.fields.items():
        other = fast.fields[name]
        assert other.types == field.types and other.data == field.data, name
        assert all(np.array_equal(a, b) for a, b in zip(other.parts, field.parts)), name
    assert fast.fields["tokenizer.ggml.tokens"].contents()[-2:] == ["▁Welt", "猫"]
    [t] = fast.tensors
    assert t.name == "blk.0.w" and np.array_equal(np.asarray(t.data).reshape(6, 8), weights)


def test_gguf_parsed_once_restores_the_reader_after_an_error(tmp_path):
    import gguf

    from pretty_align.backends.hf import _gguf_parsed_once

    original = gguf.GGUFReader
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="GGUF magic invalid"), _gguf_parsed_once():
        gguf.GGUFReader(bad)
    assert gguf.GGUFReader is original
