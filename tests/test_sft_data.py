"""SFT training data: Tatoeba loading, variety filter, answer-only loss masks, deterministic splits."""

from __future__ import annotations

import pytest

from pretty_align.backends.fake import EOS, CharTokenizer
from pretty_align.errors import InputError
from pretty_align.languages import get_language
from pretty_align.sft.data import IGNORE, Pair, build_split, encode_pair, load_pairs
from pretty_align.tasks.base import Example
from pretty_align.tasks.translation import TranslationTask

ENG, DEU, ZHO = get_language("eng_Latn"), get_language("deu_Latn"), get_language("zho_Hans")
TASK = TranslationTask(texts=["unused"])


def tatoeba(tmp_path, code, pairs, labels=None):
    (tmp_path / f"eng-{code}.eng").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp_path / f"eng-{code}.{code}").write_text("".join(t + "\n" for _, t in pairs))
    if labels:
        (tmp_path / f"eng-{code}.{code}.labels").write_text("".join(x + "\n" for x in labels))
    return tmp_path


def test_prompt_is_masked_and_answer_ends_with_stop_and_eos():
    tok = CharTokenizer()
    ex = encode_pair(tok, TASK, Pair("The cat.", "Die Katze.", DEU, "f:1"), ENG)
    prompt_len = len(tok.encode(TASK.render(Example("e", "The cat.", None, ENG, DEU))))
    assert ex.labels[:prompt_len] == (IGNORE,) * prompt_len
    answer = ex.labels[prompt_len:]
    assert tok.decode(answer[:-1]) == " Die Katze.\n" and answer[-1] == EOS  # separator on the answer side
    assert ex.input_ids[prompt_len:] == answer and ex.answer_length == len(answer)


def test_zho_hans_keeps_only_simplified_mandarin(tmp_path):
    d = tatoeba(tmp_path, "zho", [("A.", "猫。"), ("B.", "貓。"), ("C.", "佢。")], ["cmn_Hans", "cmn_Hant", "yue_Hans"])
    pairs = load_pairs(d, ENG, ZHO)
    assert [p.target for p in pairs] == ["猫。"] and pairs[0].origin.endswith("eng-zho.zho:1")


def test_swahili_uses_the_tatoeba_code(tmp_path):
    d = tatoeba(tmp_path, "swa", [("Hello.", "Habari.")])
    assert [p.target for p in load_pairs(d, ENG, get_language("swh_Latn"))] == ["Habari."]


def test_bad_files_are_named(tmp_path):
    with pytest.raises(InputError, match="eng-deu.eng: source file not found"):
        load_pairs(tmp_path, ENG, DEU)
    (tmp_path / "eng-deu.eng").write_text("A.\nB.\n")
    (tmp_path / "eng-deu.deu").write_text("A.\n")
    with pytest.raises(InputError, match="eng-deu.deu: 1 lines but the source"):
        load_pairs(tmp_path, ENG, DEU)
    with pytest.raises(InputError, match="must not come from FLORES"):
        load_pairs(tmp_path / "flores200", ENG, DEU)


def test_split_is_deterministic_mixed_and_length_filtered(tmp_path):
    de = [Pair(f"Sentence {i}.", f"Satz {i}.", DEU, f"de:{i}") for i in range(40)]
    zh = [Pair(f"Sentence {i}.", f"句子{i}。", ZHO, f"zh:{i}") for i in range(40)]
    long = [Pair("x" * 500, "y", DEU, "long")]
    tok = CharTokenizer()
    a = build_split(tok, TASK, [de + long, zh], ENG, per_language=20, validation_share=0.1, seed=3)
    b = build_split(tok, TASK, [de + long, zh], ENG, per_language=20, validation_share=0.1, seed=3)
    c = build_split(tok, TASK, [de + long, zh], ENG, per_language=20, validation_share=0.1, seed=4)
    assert [e.origin for e in a.train] == [e.origin for e in b.train] != [e.origin for e in c.train]
    assert len(a.train) == 36 and len(a.validation) == 4
    assert not {e.origin for e in a.train} & {e.origin for e in a.validation}
    assert {e.origin[:2] for e in a.train} == {"de", "zh"}  # languages mixed
    assert all(len(e.input_ids) <= 256 for e in a.train + a.validation)
    only = build_split(tok, TASK, [long + de[:1]], ENG, per_language=2, max_tokens=256)
    assert only.dropped_too_long == 1 and [e.origin for e in only.train + only.validation] == ["de:0"]


def test_real_tatoeba_zho_filter(shared_data):
    pairs = load_pairs(shared_data / "tatoeba", ENG, ZHO)
    labels = (shared_data / "tatoeba" / "eng-zho.zho.labels").read_text().split("\n")
    assert len(pairs) == sum(lab == "cmn_Hans" for lab in labels) == 4450
