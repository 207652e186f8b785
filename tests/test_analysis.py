"""Decision-space analysis: the one-pass path equals the naive per-position loop; store, resume, report."""

from __future__ import annotations

import pytest

import torch

from conftest import require_module

peft = require_module("peft", "-e '.[peft]'")

from pretty_align.analysis.decision import compare, naive_records  # noqa: E402
from pretty_align.analysis.report import write_analysis_report  # noqa: E402
from pretty_align.analysis.run import Analysis  # noqa: E402
from pretty_align.backends import load_backend  # noqa: E402
from pretty_align.boundary import encode_prompt  # noqa: E402
from pretty_align.errors import CapabilityError  # noqa: E402
from pretty_align.experiment.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory):
    """A random (non-zero) LoRA adapter: a different model with the base model's tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    d = tmp_path_factory.mktemp("adapter")
    lora.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def pair(tiny_model_dir, sft_adapter):
    return load_backend("hf", str(tiny_model_dir)), load_backend("hf", str(tiny_model_dir), adapter=str(sft_adapter))


def items_for(tok):
    texts = ["English: The cat.\nGerman:", "English: A longer sentence about houses and cats.\nGerman:",
             "Hello"]
    answers = [" Die Katze sitzt.", " Ein längerer Satz über Häuser.", " und so weiter und so fort"]
    return [(encode_prompt(tok, t).ids, tok.encode(a, add_special_tokens=False)) for t, a in zip(texts, answers)]


def test_one_pass_equals_the_naive_per_position_loop(pair):
    base, sft = pair
    items = items_for(base.tokenizer)
    # batch of 2 (padding inside a batch) and chunks of 3 positions (chunk boundaries inside answers)
    fast = dict(compare(base, sft, items, top_k=5, batch_size=2, chunk=3))
    assert sorted(fast) == [0, 1, 2]
    for i, (prompt, answer) in enumerate(items):
        slow = naive_records(base, sft, prompt, answer, top_k=5)
        assert len(fast[i]) == len(slow) == len(answer)
        for a, b in zip(fast[i], slow):
            assert (a.position, a.token_id, a.rank_base, a.rank_sft, a.overlap) == \
                (b.position, b.token_id, b.rank_base, b.rank_sft, b.overlap)
            assert a.p_base == pytest.approx(b.p_base, abs=1e-5) and a.p_sft == pytest.approx(b.p_sft, abs=1e-5)
            assert a.kl == pytest.approx(b.kl, abs=1e-5)
    assert any(r.rank_base > 1 for recs in fast.values() for r in recs)   # the two models do differ


def test_prior_k_is_the_tail_of_the_same_pass(pair):
    """Giving the first k SFT tokens as prior (prompt + prior, then score the rest) changes nothing
    at later positions: the analysis 'with k prior tokens' is positions > k of one pass."""
    base, sft = pair
    prompt, answer = items_for(base.tokenizer)[1]
    full = dict(compare(base, sft, [(prompt, answer)]))[0]
    for k in (1, 2):
        tail = dict(compare(base, sft, [(list(prompt) + answer[:k], answer[k:])]))[0]
        assert [r.rank_base for r in tail] == [r.rank_base for r in full[k:]]
        assert [r.kl for r in tail] == pytest.approx([r.kl for r in full[k:]], abs=1e-5)


def test_backends_without_full_logprobs_are_refused():
    fake = load_backend("fake", "fake:echo")
    with pytest.raises(CapabilityError, match="exact_scoring=False"):
        list(compare(fake, fake, [((1, 2), (3,))]))


def write_config(tmp_path, base, adapter, n=3):
    src = tmp_path / "src.txt"
    src.write_text("".join(f"The cat number {i} sits on the mat.\n" for i in range(n)))
    for code in ("deu_Latn", "fra_Latn"):
        (tmp_path / f"ref.{code}.txt").write_text("".join(f"Referenz {i}.\n" for i in range(n)))
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'name = "ana"\nstore = "./ana.sqlite"\nreport_dir = "./rep"\n'
                   f'[base]\nmodel = "{base}"\n[reference]\nmodel = "{base}"\nadapter = "{adapter}"\nchat = false\n'
                   f'[task]\ntargets = ["deu_Latn", "fra_Latn"]\nsrc_file = "./src.txt"\nref_file = "./ref.{{tgt}}.txt"\n'
                   f'n = {n}\n[decoding]\nmax_new_tokens = 6\nbatch_size = 2\n[analysis]\nbatch_size = 2\nchunk = 4\n')
    return cfg


class Killed(Exception):
    pass


def test_analysis_is_stored_resumable_and_reported(tiny_model_dir, sft_adapter, tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, sft_adapter))
    first = Analysis(cfg)
    real_insert = first.store.insert_analysis
    calls = []

    def dying_insert(*args, **kw):
        if len(calls) == 4:
            raise Killed
        calls.append(args[0])
        real_insert(*args, **kw)

    monkeypatch.setattr(first.store, "insert_analysis", dying_insert)
    with pytest.raises(Killed):
        first.run(progress=False)
    monkeypatch.undo()
    summary = Analysis(cfg).run(progress=False)
    assert (summary.examples, summary.skipped, summary.produced) == (6, 4, 2)
    again = Analysis(cfg)
    assert again.run(progress=False).produced == 0        # nothing recomputed, nothing duplicated
    rows = again.store.analysis_positions("ana")
    assert len({(r["example_id"], r["tgt"], r["position"]) for r in rows}) == len(rows) == summary.positions + sum(
        n for (n,) in again.store.db.execute(
            "SELECT n_positions FROM analysis_examples WHERE key IN ({})".format(",".join("?" * 4)), calls))
    md, res = write_analysis_report(again.store, "ana", tmp_path / "rep", priors=[0, 1, 2], top_k=10, max_positions=8)
    assert res["complete"] == "6/6" and set(res["targets"]) == {"deu_Latn", "fra_Latn"}
    text = md.read_text()
    assert "rank <= 10 %" in text and "paper: 90.8%" in text and "kl_by_position.png" in text
    for png in ("kl_by_position.png", "rank1_by_position.png", "silent_majority.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    assert (tmp_path / "rep" / "analysis.html").read_text().count("<table>") == 4
    # positions > k only: the k=2 row counts fewer positions than k=0
    assert res["table"]["all"][2]["positions"] < res["table"]["all"][0]["positions"]


def test_word_starts_and_token_alignment(pair):
    from pretty_align.analysis.decision import token_word_starts, word_starts

    assert word_starts("Die Katze  sitzt.") == [0, 4, 11]
    assert word_starts("猫が座る。") == [0, 1, 2, 3, 4]
    tok = pair[0].tokenizer
    ids = tok.encode(" Die Katze sitzt.", add_special_tokens=False)
    starts = token_word_starts(tok, ids)
    assert set(starts) <= {0, 4, 10} and 0 in starts
    assert all(tok.decode(ids[i:]).lstrip().startswith("Die Katze sitzt."[c:]) for c, i in starts.items())


def test_text_mode_equals_exact_at_word_starts_when_tokenizers_agree(pair):
    """Same tokenizer on both sides: the approximate text-level records must be the exact records
    at the tokens that start words (same rank, same probabilities)."""
    from pretty_align.analysis.decision import compare_text, token_word_starts

    base, sft = pair
    items = items_for(base.tokenizer)
    exact = dict(compare(base, sft, items))
    text = dict(compare_text(base, sft, [(p, a, p, a) for p, a in items], batch_size=2, chunk=3))
    checked = 0
    for i, (_, answer) in enumerate(items):
        starts = token_word_starts(base.tokenizer, answer)
        assert len(text[i]) == len(starts) > 0
        for rec, (_, tok_i) in zip(text[i], sorted(starts.items())):
            ex = exact[i][tok_i]
            assert (rec.token_id, rec.rank_base, rec.rank_sft) == (ex.token_id, ex.rank_base, ex.rank_sft)
            assert rec.p_base == pytest.approx(ex.p_base, abs=1e-6) and rec.kl != rec.kl   # KL is NaN
            checked += 1
    assert checked >= 6


def test_models_with_different_tokenizers_get_the_approximate_mode(tmp_path, tiny_model_dir, sft_adapter):
    from conftest import build_bytelevel_tokenizer, build_model, build_tokenizer

    other = tmp_path / "other"
    tok = build_tokenizer() if "qwen2" in tiny_model_dir.name else build_bytelevel_tokenizer()
    build_model("gemma3" if "qwen2" in tiny_model_dir.name else "qwen2", len(tok)).save_pretrained(other)
    tok.save_pretrained(other)
    cfg_path = write_config(tmp_path, tiny_model_dir, sft_adapter, n=2)
    text = cfg_path.read_text().replace(f'model = "{tiny_model_dir}"\nadapter = "{sft_adapter}"',
                                        f'model = "{other}"')
    cfg_path.write_text(text)
    analysis = Analysis(load_config(cfg_path))
    assert analysis.mode == "text"
    summary = analysis.run(progress=False)
    assert summary.produced == 4
    md, res = write_analysis_report(analysis.store, "ana", tmp_path / "rep", priors=[0, 1], top_k=10, max_positions=8)
    assert res["approximate"] and "APPROXIMATE" in md.read_text()
    exact_cfg = load_config(cfg_path, {"analysis.mode": "exact"})
    with pytest.raises(CapabilityError, match="mode = 'auto'"):
        Analysis(exact_cfg)


def test_scoring_generators_leave_grad_mode_alone(pair):
    """Thread-local grad mode must not leak out of (or be scrambled by) suspended generators:
    a LoRA training step after an analysis in the same process needs autograd."""
    base, sft = pair
    items = items_for(base.tokenizer)
    dict(compare(base, sft, items, batch_size=2, chunk=2))
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    partial = compare(base, sft, items, batch_size=1, chunk=1)
    next(partial)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    partial.close()
    assert torch.is_grad_enabled()


def test_analyze_cli_writes_the_report(tiny_model_dir, sft_adapter, tmp_path):
    from typer.testing import CliRunner

    from pretty_align.cli import app

    cfg = write_config(tmp_path, tiny_model_dir, sft_adapter, n=2)
    out = CliRunner().invoke(app, ["analyze", str(cfg), "--quiet", "--set", "analysis.n=1"])   # with the bar
    assert out.exit_code == 0, out.output
    assert "2 examples analysed" in out.output and "mode exact" in out.output
    assert (tmp_path / "rep" / "analysis" / "analysis.md").is_file()
    assert (tmp_path / "rep" / "analysis" / "silent_majority.png").is_file()
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 2 and "config file not found" in bad.output
