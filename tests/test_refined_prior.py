"""``translation-refined`` prior (strategy ``refined`` in a translation config), seq2seq provider,
on tiny random MT models built here (no downloads):

* NLLB-style: an M2M-100 architecture with an ``NllbTokenizer`` that knows a few FLORES codes;
* M2M-100: ``M2M100Tokenizer`` (ISO 639-1 codes) over a SentencePiece model trained on the fly;
* Marian: no language codes (one fixed pair), with the conftest tokenizer.

Random weights translate into nonsense, but deterministic nonsense that differs per target, which
is all the prior's plumbing needs.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CORPUS, build_tokenizer, require_module

from pretty_align.boundary import answer_ids, cut_prior, encode_prompt
from pretty_align.errors import InputError, MissingDependencyError
from pretty_align.languages import get_language
from pretty_align.priors import PRIORS, PriorItem, make_prior, refined
from pretty_align.tasks.base import Example

require_module("transformers", "transformers")
require_module("sentencepiece", "sentencepiece")

ENG, DEU, SPA, ZHO = (get_language(c) for c in ("eng_Latn", "deu_Latn", "spa_Latn", "zho_Hans"))
SOURCES = ["The cat sits on the mat.", "The dog runs in the park.", "Scientists announced a new tool."]
TASK = SimpleNamespace(registry_name="translation")
TINY = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128, init_std=0.5)


def _save(d: Path, model, tok) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def build_nllb(d: Path, seed: int = 0) -> Path:
    """NLLB-style: FLORES codes are added tokens; English, German and Spanish only."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>"]   # NLLB's ids 0..3
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False))
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = NllbTokenizer(vocab=trained["vocab"], merges=merges, src_lang="eng_Latn",
                        extra_special_tokens=["eng_Latn", "deu_Latn", "spa_Latn"])
    torch.manual_seed(seed)
    cfg = M2M100Config(vocab_size=len(tok), pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                       **TINY)
    return _save(d, M2M100ForConditionalGeneration(cfg).eval(), tok)


def build_m2m(d: Path) -> Path:
    """M2M-100: ISO 639-1 codes (``__de__`` tokens after the SentencePiece vocabulary)."""
    import sentencepiece as spm
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    raw = d.parent / f"{d.name}-spm"
    raw.mkdir(parents=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(raw / "spm"), vocab_size=120,
                                   model_type="bpe", character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(raw / "spm.model"))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    (raw / "vocab.json").write_text(json.dumps(vocab))
    tok = M2M100Tokenizer(vocab_file=str(raw / "vocab.json"), spm_file=str(raw / "spm.model"), src_lang="en")
    torch.manual_seed(0)
    cfg = M2M100Config(vocab_size=max(tok.lang_code_to_id.values()) + 1, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2, decoder_start_token_id=2, **TINY)
    return _save(d, M2M100ForConditionalGeneration(cfg).eval(), tok)


def build_marian(d: Path) -> Path:
    import torch
    from transformers import MarianConfig, MarianMTModel

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=len(tok), pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, **TINY)
    return _save(d, MarianMTModel(cfg).eval(), tok)


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory) -> Path:
    return build_nllb(tmp_path_factory.mktemp("mt") / "nllb")


@pytest.fixture(scope="module")
def m2m_dir(tmp_path_factory) -> Path:
    return build_m2m(tmp_path_factory.mktemp("mt") / "m2m")


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory) -> Path:
    return build_marian(tmp_path_factory.mktemp("mt") / "marian")


def prior(model: Path | str, k: int = 2, **params):
    return make_prior("translation-refined", k=k, task=TASK, model=str(model), **params)


def items(tok, tgts=(DEU, SPA), sources=SOURCES) -> list[PriorItem]:
    """Every source for every target, interleaved so one batch mixes targets."""
    return [PriorItem(Example(f"t/{i}", s, None, ENG, tgt), encode_prompt(tok, f"English: {s}\n{tgt.name}:"))
            for i, s in enumerate(sources) for tgt in tgts]


def reference_translation(d: Path, source: str, src_code: str, tgt_code: str, max_new_tokens: int) -> str:
    """The translation made directly with transformers, one source at a time."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    tok.src_lang = src_code
    model = AutoModelForSeq2SeqLM.from_pretrained(d).eval()
    with torch.no_grad():
        out = model.generate(**tok([source], return_tensors="pt"), max_new_tokens=max_new_tokens + 1, do_sample=False,
                             forced_bos_token_id=tok.convert_tokens_to_ids(tgt_code))
    assert out[0, 1] == tok.convert_tokens_to_ids(tgt_code)
    return tok.decode(out[0, 2:], skip_special_tokens=True).strip()


def test_registered_as_the_refined_strategy_of_translation():
    assert "translation-refined" in PRIORS
    assert PRIORS.get("translation-refined").accepted_params() == [
        "batch_size", "max_new_tokens", "model", "num_beams", "provider", "src_lang", "task", "tgt_lang"]


def test_prior_is_the_first_k_base_tokens_of_the_translation(nllb_dir, tiny_tokenizer):
    p = prior(nllb_dir, k=2, batch_size=1, max_new_tokens=12)
    batch = items(tiny_tokenizer)
    results = p.build(batch, tiny_tokenizer)
    assert len(results) == len(batch)
    for it, r in zip(batch, results):
        out = reference_translation(nllb_dir, it.example.source, "eng_Latn", it.example.tgt.code, 12)
        assert r.provenance == {"strategy": "translation-refined", "provider": "seq2seq", "output": out,
                                "src_lang": "eng_Latn", "tgt_lang": it.example.tgt.code}
        assert r.ids == cut_prior(answer_ids(tiny_tokenizer, it.prompt, out), 2)
        assert r.fell_back == (not out) and len(r.ids) <= 2
    assert any(r.ids for r in results)
    outputs = {(it.example.source, it.example.tgt.code): r.provenance["output"] for it, r in zip(batch, results)}
    assert any(outputs[(s, "deu_Latn")] != outputs[(s, "spa_Latn")] for s in SOURCES)   # the target code is used


def test_batched_translation_is_deterministic_across_calls(nllb_dir, tiny_tokenizer):
    batch = items(tiny_tokenizer)
    first = prior(nllb_dir, k=3, batch_size=8).build(batch, tiny_tokenizer)
    refined._load.cache_clear()   # load again and translate again: no memo
    second = prior(nllb_dir, k=3, batch_size=8).build(batch, tiny_tokenizer)
    assert [(r.ids, r.provenance) for r in first] == [(r.ids, r.provenance) for r in second]


def test_m2m100_uses_iso_codes(m2m_dir, tiny_tokenizer):
    p = prior(m2m_dir, k=2)
    assert p.signature(ENG, DEU)["src_lang"] == "en" and p.signature(ENG, DEU)["tgt_lang"] == "de"
    batch = items(tiny_tokenizer, tgts=(DEU,))
    for it, r in zip(batch, p.build(batch, tiny_tokenizer)):
        out = r.provenance["output"]
        assert r.provenance["tgt_lang"] == "de" and "__de__" not in out
        assert r.ids == cut_prior(answer_ids(tiny_tokenizer, it.prompt, out), 2)


def test_signature_identifies_weights_codes_and_settings(nllb_dir, tmp_path):
    sig = prior(nllb_dir, k=2).signature(ENG, DEU)
    assert sig == {"strategy": "translation-refined", "k": 2, "provider": "seq2seq",
                   "model": {"sha256": sig["model"]["sha256"]}, "src_lang": "eng_Latn", "tgt_lang": "deu_Latn",
                   "num_beams": 1, "max_new_tokens": 64}
    assert str(nllb_dir) not in json.dumps(sig)                        # hashes, not paths
    assert prior(nllb_dir, k=2).signature(ENG, SPA)["tgt_lang"] == "spa_Latn"
    assert prior(nllb_dir, k=2, num_beams=2).signature(ENG, DEU) != sig
    other = build_nllb(tmp_path / "other", seed=1)
    assert prior(other, k=2).signature(ENG, DEU)["model"] != sig["model"]


def test_marian_serves_one_pair(marian_dir, tiny_tokenizer):
    p = prior(marian_dir, k=2, max_new_tokens=8)
    p.check_languages([(ENG, DEU)])
    assert p.signature(ENG, DEU)["tgt_lang"] is None
    with pytest.raises(InputError, match="field 'priors.model'.*one fixed language pair.*2 pairs"):
        p.check_languages([(ENG, DEU), (ENG, SPA)])
    with pytest.raises(InputError, match="field 'priors.tgt_lang'.*no language codes"):
        prior(marian_dir, tgt_lang="de").check_languages([(ENG, DEU)])
    batch = items(tiny_tokenizer, tgts=(DEU,))
    results = p.build(batch, tiny_tokenizer)
    for it, r in zip(batch, results):
        assert r.provenance["src_lang"] is None and r.provenance["tgt_lang"] is None
        assert r.ids == cut_prior(answer_ids(tiny_tokenizer, it.prompt, r.provenance["output"]), 2)


def test_language_without_a_code(nllb_dir):
    with pytest.raises(InputError, match=r"field 'priors.tgt_lang'.*no language code for Chinese \(tried zho_Hans, zh"):
        prior(nllb_dir).check_languages([(ENG, ZHO)])
    with pytest.raises(InputError, match="field 'priors.tgt_lang'.*no language code for German.*tried de"):
        prior(nllb_dir, tgt_lang="de").check_languages([(ENG, DEU)])
    with pytest.raises(InputError, match="field 'priors.tgt_lang'.*one code.*2 targets"):
        prior(nllb_dir, tgt_lang="deu_Latn").check_languages([(ENG, DEU), (ENG, SPA)])
    assert prior(nllb_dir, tgt_lang="spa_Latn").signature(ENG, DEU)["tgt_lang"] == "spa_Latn"


@pytest.mark.parametrize("params, field", [
    ({"provider": "ctranslate2"}, "priors.provider"),
    ({"model": None}, "priors.model"),
    ({"model": "/no/such/mt-model"}, "priors.model"),
    ({"batch_size": 0}, "priors.batch_size"),
    ({"max_new_tokens": 0}, "priors.max_new_tokens"),
    ({"num_beams": "4"}, "priors.num_beams"),
    ({"src_lang": ""}, "priors.src_lang"),
    ({"beams": 4}, "priors.beams"),
    ({"task": SimpleNamespace(registry_name="pos")}, "priors.strategy"),
])
def test_bad_params_name_the_field(nllb_dir, params, field):
    args = {"k": 1, "task": TASK, "model": str(nllb_dir), **params}
    with pytest.raises(InputError) as e:
        make_prior("translation-refined", **args)
    assert e.value.field == field


def test_causal_lm_is_refused(tmp_path, tiny_tokenizer):
    from conftest import build_model

    d = _save(tmp_path / "causal", build_model("qwen2", len(tiny_tokenizer)), tiny_tokenizer)
    with pytest.raises(InputError, match="field 'priors.model'.*not a seq2seq model"):
        prior(d).build(items(tiny_tokenizer, tgts=(DEU,))[:1], tiny_tokenizer)


def test_missing_transformers_says_what_to_install(nllb_dir, monkeypatch):
    refined._load.cache_clear()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match="pip install transformers"):
        prior(nllb_dir).check_languages([(ENG, DEU)])
    refined._load.cache_clear()


# ---- through the runner (fake base backend) ------------------------------------------------------

RUN_CONFIG = """
name = "refined"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = ["deu_Latn", "spa_Latn"]
flores = "{flores}"
n = 2
[decoding]
batch_size = 2
max_new_tokens = 60
[[priors]]
strategy = "refined"
k = 2
params = {{ model = "{model}", max_new_tokens = 16 }}
"""


def test_runner_resolves_refined_to_the_mt_prior(tmp_path, shared_data, nllb_dir):
    from pretty_align.experiment.config import load_config
    from pretty_align.experiment.runner import Runner

    path = tmp_path / "refined.toml"
    path.write_text(RUN_CONFIG.format(store=tmp_path / "r.sqlite", flores=shared_data / "flores200", model=nllb_dir))
    Runner(load_config(path)).run(progress=False)
    rows = sqlite3.connect(tmp_path / "r.sqlite").execute(
        "SELECT tgt, condition, prior_text, prior_fell_back, provenance, signature FROM results").fetchall()
    assert len(rows) == 4 and any(row[2] for row in rows)
    for tgt, condition, prior_text, fell_back, prov, sig in rows:
        prov, sig = json.loads(prov), json.loads(sig)["prior"]
        assert condition == "refined k=2"
        assert prov["provider"] == "seq2seq" and prov["tgt_lang"] == tgt and prov["src_lang"] == "eng_Latn"
        assert sig["strategy"] == "translation-refined" and sig["tgt_lang"] == tgt and sig["max_new_tokens"] == 16
        # fake backend: one token per character, and the separator " " is the first of the k = 2
        assert prior_text.strip() == prov["output"][:1] and bool(fell_back) == (not prov["output"])
