"""The loop guard stops degenerate repetition and keeps legitimate repetition: runs of equal POS
tags, numbers split into digits, "ha ha ha ha". Checked on the real gemma-3-270m tokenizer and on
gold answers (benchmarks/loop_guard.py --check-gold does all of them; this is a subset)."""

from __future__ import annotations

import pytest

from pretty_align.backends.fake import CharTokenizer
from pretty_align.decoding import LOOP_AFTER, LOOP_MIN_SPAN, Decoding, RowState, find_loop, loop_start

GUARD = Decoding(stop=(), loop_guard=True)


def push_all(tokenizer, ids: list[int], budget: int | None = None) -> tuple[list[int], str | None]:
    """Feed ``ids`` through a row's stopping rule as a backend would: (kept ids, stop reason).
    The budget defaults to the ids' own length: an answer that fills its budget, the guard's worst case."""
    row = RowState(GUARD, tokenizer, budget or len(ids) or 1)
    for tok in ids:
        reason = row.push(tok, set())
        if reason in ("loop", "eos", "stop"):
            return row.new, reason
    return row.new, None


def test_find_loop_needs_both_repeats_and_span():
    assert (LOOP_MIN_SPAN, LOOP_AFTER) == (32, 0.5)
    assert find_loop([7] * 31) is None                      # 31 equal tokens: under the span
    assert find_loop([7] * 32) == (1, 32)
    assert find_loop([1, 2] * 15 + [1]) is None
    assert find_loop([1, 2] * 16) == (2, 32)
    assert find_loop(list(range(10)) * 3) is None           # period 10, 3 repeats: under min_repeats
    assert find_loop(list(range(10)) * 4) == (10, 40)       # 4 repeats of a long cycle: past the span anyway
    assert find_loop([3, 1, 2] * 11) == (3, 33)             # ceil(32 / 3) = 11 repeats
    assert find_loop([5] * 4, min_span=1) == (1, 4)         # the old rule, when asked for
    assert find_loop([]) is None and find_loop([1]) is None


def test_loop_start_finds_where_the_repetition_began():
    ids = [9, 8] + [1, 2] * 20
    assert loop_start(ids, 2, 32) == 2
    assert loop_start([1, 2] * 20, 2, 32) == 0


def test_the_guard_acts_late_and_keeps_one_copy_of_the_cycle():
    tok = CharTokenizer()
    ids = tok.encode("Der Satz. " + "ab " * 40, add_special_tokens=False)
    row = RowState(GUARD, tok, budget=200)
    pushed = 0
    while (reason := row.push(ids[pushed], set())) is None:
        pushed += 1
    # not before half of the budget (the 100th token), although the loop began long before
    assert (reason, pushed + 1) == ("loop", 100)
    assert tok.decode(row.new) == "Der Satz. ab"   # one " ab": every repetition dropped, however early it began


def test_legitimate_repetition_on_characters_survives():
    tok = CharTokenizer()
    for text in ("ha ha ha ha", "10000000 people", "NOUN NOUN NOUN NOUN NOUN VERB", "!!!!!!!!"):
        kept, reason = push_all(tok, tok.encode(text, add_special_tokens=False))
        assert reason is None and tok.decode(kept) == text


def test_fake_loop_model_is_cut(tmp_path):
    from pretty_align.backends import load_backend
    from pretty_align.backends.base import GenerationRequest

    backend = load_backend("fake", "fake:loop")
    [gen] = backend.generate([GenerationRequest(tuple(backend.tokenizer.encode("x: y\nz:")), (), 120)], GUARD)
    assert gen.stop_reason == "loop" and backend.tokenizer.decode(gen.new_ids) in (" ab", "ab ", "b a")


@pytest.mark.real_model
@pytest.mark.parametrize("text", ["10000 people", "NOUN NOUN NOUN NOUN NOUN VERB", "ha ha ha ha",
                                  "1000000000 dollars", "NOUN " * 12 + "PUNCT", "Nein, nein, nein, nein!",
                                  "PROPN PUNCT " * 8 + "VERB"])
def test_legitimate_repetition_survives_on_gemma(gemma_tokenizer, text):
    ids = gemma_tokenizer.encode(text, add_special_tokens=False)
    kept, reason = push_all(gemma_tokenizer, ids)
    assert reason is None and kept == ids


@pytest.mark.real_model
@pytest.mark.parametrize("loop", ["的", " the cat", " NOUN", "0", " ha", "。これは"])
def test_a_degenerate_loop_is_still_cut_on_gemma(gemma_tokenizer, loop):
    head = gemma_tokenizer.encode("Die Katze sitzt auf der Matte.", add_special_tokens=False)
    cycle = gemma_tokenizer.encode(loop, add_special_tokens=False)
    ids = head + cycle * 60
    kept, reason = push_all(gemma_tokenizer, ids, budget=len(ids))
    assert reason == "loop"
    assert kept == head + cycle   # one copy kept: the head and the cycle's first appearance


@pytest.mark.real_model
def test_gold_answers_survive_the_guard(gemma_tokenizer, shared_data):
    """Gold POS answers (tags, XGLUE test files) and FLORES devtest references for three
    languages, each with the budget its source gets: the guard keeps all but one (a long list of
    names, "PROPN PUNCT" repeated, is the kind of answer that remains at risk; see the benchmark)."""
    from pretty_align.boundary import answer_ids, encode_prompt
    from pretty_align.languages import get_language
    from pretty_align.tasks.pos import POSTask
    from pretty_align.tasks.translation import TranslationTask

    pos = POSTask(data=str(shared_data / "ud-2.5"), answer_format="tags", n=None)
    mt = TranslationTask(flores=str(shared_data / "flores200"), split="devtest", n=None)
    budget = Decoding(max_new_tokens=160).budget
    cut, total = [], 0
    for task, codes in ((pos, ("deu_Latn", "zho_Hans", "jpn_Jpan", "vie_Latn")),
                        (mt, ("rus_Cyrl", "zho_Hans", "jpn_Jpan"))):
        for code in codes:
            for ex in task.examples(get_language(code)):
                ids = answer_ids(gemma_tokenizer, encode_prompt(gemma_tokenizer, task.render(ex)), ex.reference)
                src = len(gemma_tokenizer.encode(ex.source, add_special_tokens=False))
                total += 1
                if push_all(gemma_tokenizer, ids, budget(src))[1] == "loop":
                    cut.append(ex.reference[:100])
    # the one answer cut: a Chinese sentence ending in a list of names (PROPN PUNCT x 9 and more)
    assert total > 5000 and [c[:40] for c in cut] == ["X AUX NOUN ADP ADV ADJ PART PROPN PART N"]
