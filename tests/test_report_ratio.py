"""% of the reference ("% ref"): ratio of means as the headline, per-language ratios beside it,
n/a below a floor, all from unrounded scores. Values are computed by hand in the comments."""

from __future__ import annotations

import pytest

from pretty_align.experiment.report import _means, ref_ratios, to_markdown


def cells_of(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, dict]]:
    return {cond: {tgt: {"chrF++": v, "n": 10, "truncated": 0} for tgt, v in by_tgt.items()}
            for cond, by_tgt in scores.items()}


SCORES = {"reference": {"deu": 40.0, "zho": 0.5, "jpn": 20.0},
          "none": {"deu": 20.0, "zho": 2.0, "jpn": 10.0},
          "pseudo": {"deu": 10.0 / 3, "zho": 0.0, "jpn": 20.0 / 3}}


def compute(floor: float = 1.0):
    cells = cells_of(SCORES)
    means = {c: _means(list(cells[c].values())) for c in cells}
    below = ref_ratios(cells, means, ["chrF++"], floor)
    return cells, means, below


def test_ratio_of_means_is_the_headline_and_no_language_drops_out():
    cells, means, below = compute()
    # mean(none) = 32/3, mean(reference) = 60.5/3: 100 * 32 / 60.5 = 52.8925...
    assert means["none"]["% ref chrF++"] == pytest.approx(100 * 32 / 60.5)
    # pseudo: mean = 10/3 (all three languages, zho's 0 included): 100 * 10 / 60.5
    assert means["pseudo"]["% ref chrF++"] == pytest.approx(100 * 10 / 60.5)
    assert means["pseudo"]["chrF++"] == pytest.approx(10 / 3)
    assert means["reference"]["% ref chrF++"] == pytest.approx(100.0)
    assert below == {"chrF++": ["zho"]}


def test_per_language_ratios_use_unrounded_scores_and_a_floor():
    cells, _, _ = compute()
    assert cells["none"]["deu"]["% ref chrF++"] == pytest.approx(50.0)
    # 10/3 of 40 is 8.3333...%; from scores rounded to 3.33 it would be 8.325
    assert cells["pseudo"]["deu"]["% ref chrF++"] == pytest.approx(100 * (10 / 3) / 40)
    assert cells["pseudo"]["jpn"]["% ref chrF++"] == pytest.approx(100 * (20 / 3) / 20)
    # the reference scores 0.5 < 1 in zho: no ratio (it would be 400% for "none")
    assert cells["none"]["zho"]["% ref chrF++"] is None
    _, _, below = compute(floor=0.1)
    assert below == {"chrF++": []}


def test_reference_mean_below_the_floor_gives_no_headline():
    cells = cells_of({"reference": {"deu": 0.2, "zho": 0.4}, "none": {"deu": 5.0, "zho": 5.0}})
    means = {c: _means(list(cells[c].values())) for c in cells}
    ref_ratios(cells, means, ["chrF++"], 1.0)
    assert means["none"]["% ref chrF++"] is None


def test_markdown_shows_na_with_the_reason_and_a_per_language_table():
    cells, means, below = compute()
    res = {"run": "t", "complete": "90/90", "metrics": ["chrF++"], "ratio_metrics": ["chrF++"],
           "conditions": list(SCORES), "targets": ["deu", "zho", "jpn"], "cells": cells, "means": means,
           "ratio_floor": 1.0, "ratio_below_floor": below, "metric_signatures": {}, "condition_signatures": {},
           "metric_packages": {}}
    md = to_markdown(res)
    assert "| none | 20.0 | 50.0 |" in md                            # deu: score, % ref
    assert "n/a (ref < 1)" in md and "the reference scores below 1 in zho" in md
    assert "| none | 52.9 | 50.0 | n/a (ref < 1) | 50.0 |" in md    # per-language table: mean, deu, zho, jpn
    assert "ratio of means" in md


def test_report_warns_about_openai_models_without_weight_identity():
    from pretty_align.experiment.report import _warnings

    def sig(**model):
        return {"none": [{"targets": ["deu"], "signature": {"model": {"backend": "openai", "model": "m",
                                                                       "served": {"id": "gemma"}, **model}}}]}

    [warning] = _warnings(sig(revision=None, sha256=None))
    assert "openai-served model 'gemma'" in warning and "cannot be tied to exact weights" in warning
    assert _warnings(sig(revision="v1.2", sha256=None)) == []
    assert _warnings(sig(revision=None, sha256="ab" * 32)) == []
    assert _warnings({"none": [{"targets": ["deu"], "signature": {"model": {"backend": "hf"}}}]}) == []


def test_paired_bootstrap_is_seeded_and_tests_against_the_baseline():
    from pretty_align.languages import get_language
    from pretty_align.metrics import ChrFpp

    refs = ["Der Hund läuft im Park.", "Die Katze sitzt auf der Matte.", "Wir gehen nach Hause.", "Es regnet."] * 5
    good = ["Der Hund läuft im Park.", "Die Katze sitzt auf Matte.", "Wir gehen heim.", "Es regnet heute."] * 5
    bad = ["Hund.", "Katze.", "Haus.", "Regen."] * 5
    systems = {"none": bad, "good": good, "perfect": refs}
    sig, first = ChrFpp().paired_bootstrap(systems, refs, get_language("deu_Latn"), "none")
    _, again = ChrFpp().paired_bootstrap(systems, refs, get_language("deu_Latn"), "none")
    assert first == again and "bs:1000" in sig and "seed:12345" in sig
    assert first["none"]["p"] is None and first["good"]["p"] < 0.05 and first["perfect"]["p"] < 0.05
    assert first["perfect"]["score"] == pytest.approx(100.0) and first["perfect"]["ci"] == pytest.approx(0.0)
    assert 0 < first["good"]["ci"] < 20 and first["none"]["score"] < first["good"]["score"]
    _, same = ChrFpp().paired_bootstrap({"none": bad, "copy": list(bad)}, refs, get_language("deu_Latn"), "none")
    assert same["copy"]["p"] == 1.0   # the same outputs never differ (sacrebleu alone would say p = 0.001)


def test_run_report_marks_significance_against_none_and_the_reference(tmp_path, shared_data):
    from pretty_align.experiment.config import load_config
    from pretty_align.experiment.report import compute
    from pretty_align.experiment.runner import Runner

    cfg = tmp_path / "s.toml"
    cfg.write_text(f"""
name = "s"
store = "{tmp_path / 's.sqlite'}"
[base]
model = "fake:echo"
backend = "fake"
[reference]
model = "fake:upper"
backend = "fake"
[task]
targets = ["deu_Latn"]
flores = "{shared_data / 'flores200'}"
n = 8
[[priors]]
strategy = "none"
[[priors]]
strategy = "gold"
k = 4
""")
    runner = Runner(load_config(cfg))
    runner.run(progress=False)
    res = compute(runner.store, "s")
    gold = res["cells"]["gold k=4"]["deu_Latn"]
    assert set(gold["ci"]) == {"BLEU", "chrF++"} and gold["ci"]["chrF++"]["ci"] > 0
    assert set(gold["p vs none"]) == {"BLEU", "chrF++"} and set(gold["p vs reference"]) == {"BLEU", "chrF++"}
    assert res["cells"]["none"]["deu_Latn"]["p vs none"]["chrF++"] is None
    assert res["significance"]["baselines"] == {"none": "none", "reference": "reference"}
    md = to_markdown(res)
    assert "chrF++ 95% CI" in md and "* differs from no prior" in md and "bs:1000" in md
