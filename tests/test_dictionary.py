"""BilingualDictionary: parsing, malformed lines, script conversion and filtering, caching."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from pretty_align.errors import InputError
from pretty_align.languages import get_language
from pretty_align.priors import dictionary as dictmod
from pretty_align.priors.dictionary import BilingualDictionary, resolve_path

ENG, DEU, ZHO, ZHT, JPN, RUS = (get_language(c) for c in
                                ("eng_Latn", "deu_Latn", "zho_Hans", "zho_Hant", "jpn_Jpan", "rus_Cyrl"))


def write(tmp_path: Path, text: str, name: str = "d.txt") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_tab_space_and_blank_lines(tmp_path):
    p = write(tmp_path, "cat\tkatze\n\nCat kater\n   \ncat\tkatze\nice cream\tspeise eis\ndog\thund\n")
    d = BilingualDictionary.load(p)
    assert len(d) == 3
    assert d.lookup("CAT") == ["katze", "kater"]      # key lower-cased, file order, de-duplicated
    assert d.lookup("ice cream") == ["speise eis"]    # with a tab, fields may contain spaces
    assert d.lookup("bird") == []
    assert d.malformed_count == 0 and d.malformed_lines == []
    assert d.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_malformed_lines_skipped_counted_and_warned_once(tmp_path, caplog):
    p = write(tmp_path, "ok\tgut\nlonely\na b c\nx\t\n\ty\na\tb\tc\nyes ja\n")
    with caplog.at_level(logging.WARNING, logger="pretty_align.priors.dictionary"):
        d = BilingualDictionary.load(p)
    assert d.malformed_count == 5
    assert d.malformed_lines == [2, 3, 4, 5, 6]
    assert d.lookup("ok") == ["gut"] and d.lookup("yes") == ["ja"] and len(d) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(p) in warnings[0] and "5 malformed" in warnings[0] and "2, 3, 4, 5, 6" in warnings[0]


def test_malformed_reports_only_first_ten_line_numbers(tmp_path):
    p = write(tmp_path, "ok\tgut\n" + "bad\n" * 12)
    d = BilingualDictionary.load(p)
    assert d.malformed_count == 12
    assert d.malformed_lines == list(range(2, 12))


def test_strict_raises_with_line_number(tmp_path):
    p = write(tmp_path, "ok\tgut\n\nthree fields here\n")
    with pytest.raises(InputError) as e:
        BilingualDictionary.load(p, strict=True)
    assert e.value.line == 3 and e.value.path == str(p)
    assert f"{p}:3" in str(e.value) and "expected one 'source<TAB>target' pair" in str(e.value)
    # the non-strict load of the same file is unaffected by (and independent of) the strict one
    assert BilingualDictionary.load(p).malformed_lines == [3]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.txt"
    with pytest.raises(InputError) as e:
        BilingualDictionary.load(p)
    assert e.value.path == str(p)
    assert str(p) in str(e.value) and "not found" in str(e.value) and "source<TAB>target" in str(e.value)


def test_invalid_utf8_names_the_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"a\tb\nc\t\xff\xfe\n")
    with pytest.raises(InputError) as e:
        BilingualDictionary.load(p)
    assert e.value.line == 2 and "UTF-8" in str(e.value)


def test_traditional_to_simplified_for_zho_hans(tmp_path):
    p = write(tmp_path, "cat\t貓\nsay\t說\nsay\t说\nhello\t你好\n")
    d = BilingualDictionary.load(p, tgt=ZHO)
    assert d.lookup("cat") == ["猫"]
    assert d.lookup("say") == ["说"]                  # 說 -> 说 then de-duplicated with the 说 line
    assert d.lookup("hello") == ["你好"]
    assert d.converted_count == 2
    # other targets (and no target) keep the file's script
    for tgt in (None, ZHT):
        raw = BilingualDictionary.load(p, tgt=tgt)
        assert raw.lookup("say") == ["說", "说"] and raw.converted_count == 0


def test_real_muse_en_zh_is_simplified(shared_data):
    d = BilingualDictionary.load(shared_data / "dictionaries/muse/en-zh.txt", tgt=ZHO)
    assert d.lookup("scientists") == ["科学家"]        # file: 科學家
    assert d.lookup("monday") == ["周一", "星期一"]     # file: 週一, 星期一
    assert d.lookup("cat")[:2] == ["猫咪", "猫"]
    assert d.converted_count == 12364
    assert d.malformed_count == 0


def test_targets_in_script(tmp_path):
    p = write(tmp_path, "computer\tcomputer\ncomputer\tコンピュータ\ncat\tCat\ncat\tкошка\ncat\tкот\n")
    d = BilingualDictionary.load(p)
    assert d.targets_in_script("computer", JPN.script) == ["コンピュータ"]  # Latin identity rejected
    assert d.targets_in_script("Cat", RUS.script) == ["кошка", "кот"]
    assert d.targets_in_script("cat", "Latn") == []                        # identity, any case
    assert d.targets_in_script("cat", "Latn", skip_identity=False) == ["Cat"]
    assert d.targets_in_script("dog", "Latn") == []


def test_all_targets_excludes_identity_only_targets(tmp_path):
    p = write(tmp_path, "the\tdie\nthe\tder\ndie\tdie\ndie\tsterben\nwas\twas\ncat\tкошка\nred\trot\n")
    d = BilingualDictionary.load(p)
    # "die" is an identity pair once but a real target of "the"; "was" is only identity noise
    assert d.all_targets("Latn") == ["die", "der", "sterben", "rot"]
    assert d.all_targets("Cyrl") == ["кошка"]


def test_cache_per_path_and_target_and_reload_on_change(tmp_path):
    p = write(tmp_path, "cat\t貓\n")
    a = BilingualDictionary.load(p, tgt=ZHO)
    assert BilingualDictionary.load(p, tgt=ZHO) is a
    assert BilingualDictionary.load(p, tgt=DEU) is not a
    p.write_text("cat\t貓\ndog\t狗\n", encoding="utf-8")       # size changes -> reloaded
    b = BilingualDictionary.load(p, tgt=ZHO)
    assert b is not a and b.lookup("dog") == ["狗"]


def test_real_muse_parses_completely(shared_data):
    """Every entry, none malformed. Its parse time is benchmarks/dictionary_load.py's, not a test's."""
    dictmod._CACHE.clear()
    d = BilingualDictionary.load(shared_data / "dictionaries/muse/en-de.txt", tgt=DEU)
    assert len(d) == 74655 and d.malformed_count == 0
    assert d.lookup("monday") == ["montag", "montags"]


def test_resolve_path(tmp_path):
    p = write(tmp_path, "a\tb\n", "en-de.txt")
    assert resolve_path(str(tmp_path / "en-{tgt_iso1}.txt"), ENG, DEU) == p
    q = write(tmp_path, "a\tb\n", "eng_Latn-deu_Latn.txt")
    assert resolve_path(str(tmp_path / "{src}-{tgt}.txt"), ENG, DEU) == q
    assert resolve_path({"deu_Latn": str(p)}, ENG, DEU) == p

    with pytest.raises(InputError) as e:
        resolve_path(str(tmp_path / "en-{lang}.txt"), ENG, DEU)
    assert e.value.field == "priors.dictionary" and "{lang}" in str(e.value) and "{tgt_iso1}" in str(e.value)
    with pytest.raises(InputError) as e:
        resolve_path(str(tmp_path / "en-{tgt_iso1}.txt"), ENG, RUS)
    assert e.value.field == "priors.dictionary" and str(tmp_path / "en-ru.txt") in str(e.value)
    with pytest.raises(InputError) as e:
        resolve_path({"deu_Latn": str(p)}, ENG, RUS)
    assert e.value.field == "priors.dictionary" and "rus_Cyrl" in str(e.value) and "deu_Latn" in str(e.value)
    with pytest.raises(InputError) as e:
        resolve_path({"german": str(p)}, ENG, DEU)
    assert "german" in str(e.value)
