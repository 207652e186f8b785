"""CoNLL-U edge cases and the POS answer parser on malformed answers."""

from __future__ import annotations

import pytest

from pretty_align.errors import InputError
from pretty_align.tasks.conll import parse_tags, read_conllu

SAMPLE = """# sent_id = s1
# text = Il parle du chat.
1\tIl\til\tPRON\t_\t_\t2\tnsubj\t_\t_
2\tparle\tparler\tVERB\t_\t_\t0\troot\t_\t_
3-4\tdu\t_\t_\t_\t_\t_\t_\t_\t_
3\tde\tde\tADP\t_\t_\t5\tcase\t_\t_
4\tle\tle\tDET\t_\t_\t5\tdet\t_\t_
5\tchat\tchat\tNOUN\t_\t_\t2\tobl\t_\tSpaceAfter=No
5.1\tmange\tmanger\tVERB\t_\t_\t_\t_\t2:conj\t_
6\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_

# sent_id = s2
# text = Oui.
1\tOui\toui\tINTJ\t_\t_\t0\troot\t_\tSpaceAfter=No
2\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_
"""


def test_multiword_tokens_give_their_words_and_empty_nodes_are_skipped(tmp_path):
    f = tmp_path / "x.conllu"
    f.write_text(SAMPLE)
    s1, s2 = read_conllu(f)
    assert s1.words == ("Il", "parle", "de", "le", "chat", ".")
    assert s1.tags == ("PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT")
    assert s1.sent_id == "s1" and s1.text == "Il parle du chat." and s1.origin.endswith("x.conllu:1")
    assert s2.words == ("Oui", ".") and s2.origin.endswith("x.conllu:12")


def test_bad_conllu_is_named_by_file_and_line(tmp_path):
    with pytest.raises(InputError, match="CoNLL-U file not found"):
        read_conllu(tmp_path / "missing.conllu")
    f = tmp_path / "bad.conllu"
    f.write_text(SAMPLE.replace("2\tparle\tparler\tVERB\t_\t_\t0\troot\t_\t_", "2\tparle\tVERB"))
    with pytest.raises(InputError, match=r"bad.conllu:4: malformed CoNLL-U"):
        read_conllu(f)
    f.write_text(SAMPLE.replace("\tNOUN\t", "\tNOUNISH\t"))
    with pytest.raises(InputError, match=r"bad.conllu:8: word 5 \('chat'\) has UPOS 'NOUNISH'"):
        read_conllu(f)


def test_real_treebanks_read(shared_data):
    sents = read_conllu(shared_data / "ud-2.5" / "UD_French-GSD" / "fr_gsd-ud-test.conllu")
    assert len(sents) == 416 and all(len(s.words) == len(s.tags) for s in sents)
    ja = read_conllu(shared_data / "ud-2.5" / "UD_Japanese-PUD" / "ja_pud-ud-test.conllu")
    assert len(ja) == 1000


GOLD = ["Il", "parle", "de", "le", "chat", "."]


def test_parser_word_tag_format_exact_and_case_insensitive():
    p = parse_tags("Il/PRON parle/verb de/ADP le/DET chat/NOUN ./PUNCT", GOLD)
    assert p.tags == ["PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT"]
    assert (p.missing, p.extra, p.invalid, p.garbled) == (0, 0, 0, 0)


@pytest.mark.parametrize("answer, tags, counts", [
    # a skipped word shifts nothing after it
    ("Il/PRON parle/VERB le/DET chat/NOUN ./PUNCT", ["PRON", "VERB", None, "DET", "NOUN", "PUNCT"], (1, 0, 0, 0)),
    # an added word is extra, the rest still aligns
    ("Il/PRON ne/ADV parle/VERB de/ADP le/DET chat/NOUN ./PUNCT", ["PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT"],
     (0, 1, 0, 0)),
    # a non-UPOS tag and a garbled item
    ("Il/PRON parle/VB de/ADP le chat/NOUN ./PUNCT", ["PRON", None, "ADP", None, "NOUN", "PUNCT"], (0, 0, 1, 1)),
    # nothing usable at all
    ("I cannot do that.", [None] * 6, (6, 0, 0, 4)),
    ("", [None] * 6, (6, 0, 0, 0)),
])
def test_parser_malformed_word_tag_answers(answer, tags, counts):
    p = parse_tags(answer, GOLD)
    assert p.tags == tags and (p.missing, p.extra, p.invalid, p.garbled) == counts


def test_parser_tags_only_format_by_position():
    p = parse_tags("PRON VERB ADP XYZ NOUN PUNCT NOUN", GOLD, fmt="tags")
    assert p.tags == ["PRON", "VERB", "ADP", None, "NOUN", "PUNCT"] and (p.invalid, p.extra, p.missing) == (1, 1, 0)
    short = parse_tags("PRON VERB", GOLD, fmt="tags")
    assert short.missing == 4 and short.tags[2:] == [None] * 4
    with pytest.raises(InputError, match="unknown POS answer format"):
        parse_tags("x", GOLD, fmt="json")


def test_words_with_slashes_keep_them():
    p = parse_tags("1/2/NUM kg/NOUN", ["1/2", "kg"])
    assert p.tags == ["NUM", "NOUN"]
