"""Multilingual ROUGE: CJK and Thai are scored, not silently zeroed as with rouge-score's default."""

from __future__ import annotations

import pytest

from pretty_align.languages import get_language
from pretty_align.metrics import METRICS
from pretty_align.metrics.rouge import MultilingualTokenizer, Rouge

ZH, TH, TA, EN = (get_language(c) for c in ("zho_Hans", "tha_Thai", "tam_Taml", "eng_Latn"))


def test_plain_rouge_score_zeroes_chinese_and_ours_does_not():
    from rouge_score import rouge_scorer

    hyp, ref = "猫坐在垫子上。", "猫坐在地毯上。"
    assert rouge_scorer.RougeScorer(["rouge1"]).score(ref, hyp)["rouge1"].fmeasure == 0.0   # the trap
    # characters: 猫 坐 在 垫 子 上 vs 猫 坐 在 地 毯 上 -> 4 of 6 shared
    assert Rouge("rouge1").corpus_score([hyp], [ref], ZH).value == pytest.approx(100 * 4 / 6)
    # bigrams: 猫坐 坐在 在垫 垫子 子上 vs 猫坐 坐在 在地 地毯 毯上 -> 2 of 5
    assert Rouge("rouge2").corpus_score([hyp], [ref], ZH).value == pytest.approx(100 * 2 / 5)


def test_thai_is_split_into_grapheme_clusters():
    tok = MultilingualTokenizer()
    assert tok.tokenize("แมวนั่ง") == ["แ", "ม", "ว", "นั่", "ง"]   # the vowel and tone marks stay on their consonant
    hyp, ref = "แมวนั่งบนเสื่อ", "แมวนอนบนเสื่อ"
    value = Rouge("rouge1").corpus_score([hyp], [ref], TH).value
    assert 50 < value < 100
    assert Rouge("rougeL").corpus_score([ref], [ref], TH).value == pytest.approx(100)


def test_words_with_combining_marks_stay_whole_and_case_is_folded():
    tok = MultilingualTokenizer()
    assert tok.tokenize("பூனை உட்கார்ந்தது") == ["பூனை", "உட்கார்ந்தது"]
    assert tok.tokenize("The CAT, Кошка!") == ["the", "cat", "кошка"]
    assert tok.tokenize("GPT-4は2023年") == ["gpt", "4", "は", "2023", "年"]


def test_english_matches_rouge_score_on_plain_ascii():
    from rouge_score import rouge_scorer

    hyp, ref = "the cat sat on the mat", "the cat lay on the red mat"
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure
    assert Rouge("rougeL").corpus_score([hyp], [ref], EN).value == pytest.approx(100 * expected)


def test_registered_and_signed():
    score = METRICS.get("rouge2")().corpus_score(["a b"], ["a b"], EN)
    assert score.name == "ROUGE-2" and "tok:multi-v1" in score.signature and score.extra["per_example"] == [1.0]
