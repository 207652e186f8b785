"""End to end on the real default base model (gemma-3-270m from PyPI). Marked ``real_model``;
runs in CI (``make test`` installs the model package). ~2 min on 2 CPU cores, plus a one-time
~50 s GGUF dequantization that is cached in the user's model cache."""

from __future__ import annotations

import pytest

from pretty_align.experiment.config import load_config
from pretty_align.experiment.runner import Runner
from pretty_align.languages import get_language
from pretty_align.metrics.offtarget import detect

from conftest import LLAMA_THREADS, USER_CACHE, require_module

pytestmark = pytest.mark.real_model


def test_gemma_translates_flores_to_german_with_a_pseudo_prior(tmp_path, shared_data, gemma_hf_checkpoint,
                                                                monkeypatch):
    monkeypatch.setenv("PRETTY_ALIGN_CACHE", USER_CACHE)  # the hf backend loads the converted checkpoint
    cfg = tmp_path / "real.toml"
    cfg.write_text(f"""
name = "real"
store = "{tmp_path / 'real.sqlite'}"
[base]
model = "gemma3-270m"
[task]
targets = ["deu_Latn"]
flores = "{shared_data / 'flores200'}"
n = 3
offset = 4
[[priors]]
strategy = "pseudo"
k = 2
dictionary = "{shared_data / 'dictionaries/muse/en-de.txt'}"
""")
    runner = Runner(load_config(cfg))
    summary = runner.run(progress=False)
    assert summary.produced == 3
    rows = runner.store.rows("real")
    assert len(rows) == 3 and {r["condition"] for r in rows} == {"pseudo k=2"}
    first = rows[0]
    # FLORES dev lines 5-7; line 5: "Local media reports an airport fire vehicle rolled over ..."
    assert first["provenance"]["source_word"] == "Local"
    assert first["provenance"]["target_word"].lower().startswith("lokal")
    assert 1 <= len(first["prior_ids"]) <= 2 and first["output"].startswith("Lokal")
    for r in rows:
        assert r["prior_text"] and r["output"].startswith(r["prior_text"])
        assert len(r["output"]) > len(r["prior_text"]) + 15  # the model went on past the prior
        assert r["detected_lang"] == "de" == detect([r["output"]])[0]
        assert "\n" not in r["output"]


@pytest.mark.parametrize("tgt", ["zho_Hans", "rus_Cyrl"])
def test_pseudo_prior_brings_gemma_on_target(tmp_path, shared_data, gemma_gguf, tgt):
    """The method itself: with no prior the base model mostly answers off-target (English, or it
    runs on with the prompt); two tokens of a MUSE dictionary translation bring it to the target.
    20 FLORES dev sentences, llamacpp backend (8 sequences per step), greedy."""
    require_module("llama_cpp", "-e '.[llamacpp]'")
    iso1 = get_language(tgt).iso1
    cfg = tmp_path / "offtarget.toml"
    cfg.write_text(f"""
name = "offtarget"
store = "{tmp_path / 'offtarget.sqlite'}"
[base]
model = "gemma3-270m"
backend = "llamacpp"
options = {{n_threads = {LLAMA_THREADS}, parallel = 8}}
[task]
targets = ["{tgt}"]
flores = "{shared_data / 'flores200'}"
split = "dev"
n = 20
[[priors]]
strategy = "none"
[[priors]]
strategy = "pseudo"
k = 2
dictionary = "{shared_data / 'dictionaries' / 'muse' / f'en-{iso1}.txt'}"
""")
    runner = Runner(load_config(cfg))
    runner.run(progress=False)
    rows = runner.store.rows("offtarget")
    by_cond: dict[str, list[dict]] = {}
    for r in rows:
        by_cond.setdefault(r["condition"], []).append(r)
    assert {c: len(v) for c, v in by_cond.items()} == {"none": 20, "pseudo k=2": 20}
    rate = {c: 100 * sum(r["detected_lang"] != iso1 for r in v) / len(v) for c, v in by_cond.items()}
    measured = f"{tgt}: off-target none {rate['none']:.0f}%, pseudo k=2 {rate['pseudo k=2']:.0f}%"
    print(measured)
    assert rate["none"] >= 80, measured
    assert rate["pseudo k=2"] <= 40, measured
