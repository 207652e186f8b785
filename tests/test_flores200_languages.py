"""All 204 FLORES-200 languages (issue 15.1): the table comes from FLORES-200's list and langcodes,
and every code runs through task, prompt, metrics and report on the fake backend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pretty_align.experiment import report
from pretty_align.experiment.config import load_config
from pretty_align.experiment.html import render_html
from pretty_align.experiment.report import compute, to_markdown
from pretty_align.experiment.runner import Runner
from pretty_align.languages import BLEU_BY_SCRIPT, PROMPT_NAMES, all_languages, flores_codes, get_language, in_script
from pretty_align.metrics.offtarget import OffTarget, known_languages


def test_the_table_is_flores200_with_names_and_iso_codes_from_langcodes():
    table = all_languages()
    assert len(table) == len(flores_codes()) == 204
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES as NLLB

    # NLLB-200's codes are FLORES-200's, but for Santali's script; FLORES adds two romanized/Arabic variants
    assert set(NLLB) - set(table) == {"sat_Beng"}
    assert set(table) - set(NLLB) == {"sat_Olck", "arb_Latn", "min_Arab"}
    for code, lang in table.items():
        assert lang.name and "Unknown" not in lang.name and re.fullmatch(r"[a-z]{2,3}", lang.iso1), code
        assert lang.bleu_tokenizer == BLEU_BY_SCRIPT.get(lang.script, "13a")
    # the prompts' names of the languages the table held before (stored results are keyed on them)
    assert [table[c].name for c in ("zho_Hans", "zho_Hant", "arb_Arab", "swh_Latn", "zsm_Latn", "pes_Arab")] == \
        ["Chinese", "Traditional Chinese", "Arabic", "Swahili", "Malay", "Persian"]
    assert {c: table[c].name for c in PROMPT_NAMES} == PROMPT_NAMES
    assert [table[c].iso1 for c in ("tgl_Latn", "ind_Latn", "heb_Hebr", "yor_Latn", "npi_Deva", "tir_Ethi")] == \
        ["tl", "id", "he", "yo", "ne", "ti"]
    assert table["ace_Arab"].name == "Acehnese (Arabic)" and table["ace_Latn"].name == "Acehnese"
    assert not table["tha_Thai"].spaced and table["tir_Ethi"].spaced


def test_scripts_are_unicode_scripts():
    assert in_script("ሰላም", "Ethi") and in_script("ⵜⴰⵎⴰⵣⵉⵖⵜ", "Tfng") and in_script("ᱥᱟᱱᱛᱟᱲᱤ", "Olck")
    assert in_script("ネコと猫", "Jpan") and in_script("猫", "Hans") and not in_script("кот", "Latn")
    assert in_script("e-mail", "Latn") and not in_script("123", "Latn")


def test_an_unknown_code_suggests_the_right_one():
    with pytest.raises(Exception, match="near: yor_Latn"):
        get_language("yor")


CONFIG = """
name = "all"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = {targets}
flores = "{flores}"
split = "devtest"
n = 2
[[priors]]
strategy = "none"
[[priors]]
strategy = "gold"
k = 2
"""


@pytest.fixture(scope="module")
def every_language_run(tmp_path_factory):
    """A FLORES-like folder holding two lines per language (made up here: real data stays in
    ../shared), and a run of the fake backend into every non-English FLORES-200 language."""
    root = tmp_path_factory.mktemp("all")
    flores = root / "flores" / "devtest"
    flores.mkdir(parents=True)
    for code in flores_codes():
        (flores / f"{code}.devtest").write_text(f"First line {code}.\nSecond line {code}.\n", encoding="utf-8")
    targets = [c for c in flores_codes() if c != "eng_Latn"]
    cfg = root / "all.toml"
    cfg.write_text(CONFIG.format(store=root / "all.sqlite", flores=root / "flores", targets=targets))
    runner = Runner(load_config(cfg))
    summary = runner.run(progress=False)
    return runner, summary, targets


def test_every_flores200_code_runs_through_prompt_metrics_and_report(every_language_run, monkeypatch):
    runner, summary, targets = every_language_run
    # The report's paired bootstrap (1000 resamples, 406 comparisons here) took 21 of this test's
    # 23 s; what is checked here is that every code runs through, not the tests' resample count.
    monkeypatch.setattr(report, "BOOTSTRAP_SAMPLES", 50)
    assert summary.produced == 2 * 2 * len(targets) == 812
    for code in targets:   # the prompt names the language
        prompt = runner.base.prompt(runner.examples[code][0])[0].text
        assert get_language(code).name in prompt
    res = compute(runner.store, "all")
    assert set(res["targets"]) == set(targets)
    detector = OffTarget()
    for code in targets:
        cell = res["cells"]["none"][code]
        assert cell["BLEU"] is not None and cell["chrF++"] is not None
        covered = get_language(code).iso1 in known_languages()
        assert (cell["off-target %"] is not None) == covered, code   # never a number it cannot judge
        assert ("not-covered" in detector.signature(get_language(code))) != covered
    sigs = res["metric_signatures"]["off-target %"]
    uncovered = [c for c in targets if get_language(c).iso1 not in known_languages()]
    assert "bod_Tibt" in uncovered and len(uncovered) > 50   # py3langid 0.4 knows 140 of the 204
    assert all(any(s.startswith(f"langid:not-covered:{c}|") for s in sigs) for c in uncovered)
    md = to_markdown(res)
    assert "off-target %: not covered: the language identifier does not know bod_Tibt" in md
    assert all(f"## {code}" in md for code in targets)
    page = render_html(res, runner.store.rows("all"))
    assert "yor_Latn" in page and "tir_Ethi" in page
