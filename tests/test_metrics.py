"""Metrics on real text: sacrebleu BLEU/chrF++/spBLEU, py3langid off-target, COMET error paths.

No network and no model downloads: spBLEU's positive path uses a tiny SentencePiece model trained
here and placed where sacrebleu looks for the FLORES one.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from pretty_align.errors import InputError, MissingDependencyError
from pretty_align.languages import get_language
from pretty_align.metrics import (BLEU, METRICS, ChrFpp, Comet, OffTarget, Score, SpBLEU,
                                  default_metrics, detect)
from pretty_align.metrics import bleu as bleu_mod

from conftest import DATA, require  # noqa: E402

FLORES = DATA / "flores200" / "dev"
EN, DE, ZH, JA = (get_language(c) for c in ("eng_Latn", "deu_Latn", "zho_Hans", "jpn_Jpan"))


def flores(code: str, n: int = 1) -> list[str]:
    path = FLORES / f"{code}.dev"
    require(path.exists(), f"FLORES-200 data not found at {path} (set PRETTY_DATA)")
    return path.read_text(encoding="utf-8").splitlines()[:n]


def test_registry_names() -> None:
    assert METRICS.names() == ["bleu", "chrf++", "comet", "off-target", "pos-accuracy", "rouge1", "rouge2", "rougeL",
                              "spbleu"]
    assert METRICS.get("bleu") is BLEU


def test_bleu_identical_is_100_with_13a() -> None:
    refs = flores("eng_Latn", 5)
    score = BLEU().corpus_score(list(refs), refs, EN)
    assert isinstance(score, Score) and score.value == pytest.approx(100.0)
    assert "tok:13a" in score.signature and "nrefs:1" in score.signature
    assert score.signature == BLEU().signature(EN)
    assert score.format().startswith("BLEU = 100.00 (nrefs:1|")


def test_bleu_chinese_uses_zh_tokenizer_and_partial_credit() -> None:
    ref = flores("zho_Hans")[0]
    hyp = ref[: len(ref) // 2] + "我们今天去公园散步了。"  # first half right, rest wrong
    score = BLEU().corpus_score([hyp], [ref], ZH)
    assert "tok:zh" in score.signature
    assert 0.0 < score.value < 100.0


def test_bleu_japanese_falls_back_to_char_without_mecab(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bleu_mod, "_mecab_available", lambda: False)  # as here, but also where installed
    monkeypatch.setattr(bleu_mod, "_warned_mecab", False)
    ref = flores("jpn_Jpan")[0]
    with caplog.at_level(logging.WARNING):
        score = BLEU().corpus_score([ref], [ref], JA)
        BLEU().corpus_score([ref], [ref], JA)
    assert "tok:char" in score.signature and score.value == pytest.approx(100.0)
    assert sum("mecab" in r.message for r in caplog.records) == 1  # warned once


def test_chrfpp_signature_has_word_order_2() -> None:
    refs = flores("deu_Latn", 3)
    score = ChrFpp().corpus_score([r.upper() for r in refs], refs, DE)
    assert "nw:2" in score.signature and score.name == "chrF++"
    assert 0.0 < score.value < 100.0


def test_spbleu_unavailable_raises_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bleu_mod.tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    assert SpBLEU.available("flores200") is False and SpBLEU.available("flores101") is False
    with pytest.raises(InputError, match="flores200sacrebleuspm"):
        SpBLEU("flores200").corpus_score(["a"], ["a"], EN)
    with pytest.raises(InputError, match="sacrebleu_tokenizer_spm.model"):
        SpBLEU("flores101")
    assert not any(isinstance(m, SpBLEU) for m in default_metrics(EN))
    assert not (tmp_path / "models").exists()  # nothing was downloaded or created


def test_spbleu_unavailable_without_the_model_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The FLORES SPM model is not obtainable here (shared/data/README.md): an empty sacrebleu dir stands for that.
    monkeypatch.setattr(bleu_mod.tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    assert SpBLEU.available() is False


def test_spbleu_uses_local_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sentencepiece as spm   # a core dependency
    lines = flores("eng_Latn", 997)
    (tmp_path / "train.txt").write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "train.txt"), vocab_size=300,
                                   model_prefix=str(tmp_path / "tiny"), minloglevel=2)
    (tmp_path / "models").mkdir()
    (tmp_path / "tiny.model").rename(tmp_path / "models" / "flores200sacrebleuspm")
    monkeypatch.setattr(bleu_mod.tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    assert SpBLEU.available("flores200")
    score = SpBLEU().corpus_score(lines[:5], lines[:5], EN)
    assert score.value == pytest.approx(100.0) and "tok:flores200" in score.signature
    assert any(isinstance(m, SpBLEU) for m in default_metrics(EN))


def test_detect_real_sentences() -> None:
    codes = ["deu_Latn", "zho_Hans", "rus_Cyrl", "jpn_Jpan", "eng_Latn"]
    texts = [flores(c)[0] for c in codes]
    assert detect(texts) == ["de", "zh", "ru", "ja", "en"]
    assert detect(["", "   \n"]) == ["", ""]


def test_off_target_percentage_and_empty_hyp() -> None:
    de, en = flores("deu_Latn", 3), flores("eng_Latn", 3)
    hyps = [de[0], en[1], ""]  # on target, wrong language, empty
    score = OffTarget().corpus_score(hyps, de, DE)
    assert score.value == pytest.approx(200 / 3)
    assert score.extra["detected"] == ["de", "en", ""]
    assert score.signature.startswith("langid:py3langid-") and score.signature.endswith("|all-langs")
    assert OffTarget().corpus_score(de, de, DE).value == 0.0


def test_off_target_restricted_languages() -> None:
    ru = flores("rus_Cyrl")
    metric = OffTarget(langs=["en", "de"])
    assert metric.signature(DE).endswith("|langs:de,en")
    assert metric.corpus_score(ru, ru, DE).extra["detected"][0] in {"de", "en"}
    assert detect(ru) == ["ru"]  # the shared identifier is not restricted by the above
    with pytest.raises(InputError, match="not among"):
        metric.corpus_score(ru, ru, get_language("rus_Cyrl"))
    with pytest.raises(InputError, match="does not know"):
        OffTarget(langs=["xx"])


@pytest.mark.parametrize("metric", [BLEU(), ChrFpp(), OffTarget()])
def test_argument_checks(metric) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="2 hypotheses but 1 references"):
        metric.corpus_score(["a", "b"], ["a"], EN)
    with pytest.raises(InputError, match="empty corpus"):
        metric.corpus_score([], [], EN)


def test_comet_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.ckpt"
    with pytest.raises(InputError, match=str(missing)):
        Comet(str(missing))


def test_comet_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "comet", None)  # import comet -> ImportError, installed or not
    with pytest.raises(MissingDependencyError, match="unbabel-comet"):
        Comet(str(ckpt))
    with pytest.raises(MissingDependencyError):
        default_metrics(EN, comet_checkpoint=str(ckpt))


def test_default_metrics() -> None:
    names = [m.name for m in default_metrics(ZH)]
    assert names[:2] == ["BLEU", "chrF++"] and names[-1] == "off-target"


def test_report_metrics_come_from_the_task_and_leave_out_what_is_not_set_up(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pretty_align.experiment.report import _metrics
    from pretty_align.tasks import TASKS

    labels = {task: [label for label, _ in _metrics(task)] for task in ("translation", "summarization", "pos")}
    assert labels["summarization"] == ["ROUGE-1", "ROUGE-2", "ROUGE-L", "off-target %"]
    assert labels["pos"] == ["accuracy"]   # tags are language-independent: no off-target rate
    # spBLEU only with its SPM model local, COMET only with a checkpoint
    monkeypatch.setattr(SpBLEU, "available", classmethod(lambda cls, variant="flores200": False))
    assert [label for label, _ in _metrics("translation")] == ["BLEU", "chrF++", "off-target %"]
    with pytest.raises(InputError, match="COMET checkpoint not found"):   # asked for: no silent skip
        _metrics("translation", comet_checkpoint=str(tmp_path / "missing.ckpt"))
    # the report follows the task's own declaration: no branch on the task's name
    monkeypatch.setattr(TASKS.get("pos"), "metrics", (("chrF++", "chrf++"), ("off-target %", "off-target")))
    got = _metrics("pos", langid_langs=["de", "en"])
    assert [(label, type(m)) for label, m in got] == [("chrF++", ChrFpp), ("off-target %", OffTarget)]
    assert got[1][1].langs == ["de", "en"]
