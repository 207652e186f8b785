"""Dictionary (``pseudo``) prior and the ``gold`` / ``random`` / ``function-word`` ablations."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest
from opencc import OpenCC

from pretty_align.backends.fake import OFFSET, CharTokenizer
from pretty_align.boundary import encode_prompt
from pretty_align.errors import InputError
from pretty_align.languages import get_language, in_script
from pretty_align.priors import PRIORS, PriorItem, make_prior
from pretty_align.priors.ablation import FUNCTION_WORDS, FunctionWordPrior, GoldPrior, RandomPrior
from pretty_align.priors.pseudo import PseudoPrior
from pretty_align.tasks.base import Example

TOK = CharTokenizer()
ENG = get_language("eng_Latn")
PROMPT = encode_prompt(TOK, "English: The cat.\nGerman:")


def ids(text: str) -> list[int]:
    return [ord(ch) + OFFSET for ch in text]


def item(source: str, tgt: str = "deu_Latn", reference: str | None = None, id: str = "ex/0") -> PriorItem:
    return PriorItem(Example(id, source, reference, ENG, get_language(tgt)), PROMPT)


def one(prior, *args, **kw):
    return prior.build([item(*args, **kw)], TOK)[0]


@pytest.fixture
def dict_dir(tmp_path: Path) -> Path:
    (tmp_path / "en-de.txt").write_text(
        "the\tdie\ncat\tcat\ncat\tkatze\nmonday\tmontag\nwell-known\tbekannt\ndon't\tnicht\n"
        "sleeps\tschläft\n", encoding="utf-8")
    (tmp_path / "en-ja.txt").write_text("computer\tcomputer\ncomputer\tコンピュータ\nmonday\t月曜日\n",
                                        encoding="utf-8")
    (tmp_path / "en-ru.txt").write_text("monday\tmonday\nmonday\tпонедельник\n", encoding="utf-8")
    return tmp_path


def pseudo(dict_dir: Path, k: int = 2, **kw) -> PseudoPrior:
    return PseudoPrior(k=k, dictionary=str(dict_dir / "en-{tgt_iso1}.txt"), **kw)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---- pseudo ---------------------------------------------------------------------------------

def test_registered():
    assert {"pseudo", "gold", "random", "function-word"} <= set(PRIORS.names())
    assert PRIORS.get("pseudo") is PseudoPrior and PRIORS.get("function-word") is FunctionWordPrior


def test_first_content_word_skipping_stop_words_and_identity(dict_dir):
    r = one(pseudo(dict_dir, k=6), "The cat sleeps.")
    # "The" is a stop word (though in the dictionary); cat -> cat is an identity pair, skipped
    assert r.ids == ids(" katze") and r.text == "katze" and not r.fell_back
    assert r.provenance == {"strategy": "pseudo", "source_word": "cat", "target_word": "katze",
                            "word_index": 1, "candidates_tried": 1,
                            "dictionary_sha256": sha(dict_dir / "en-de.txt")}


def test_k_cuts_base_tokens_and_separator_is_on_the_answer_side(dict_dir):
    # The answer separator " " is the first answer token for a char tokenizer, so k=1 is the
    # separator alone (text "" after dropping it) and k=2 adds the first character.
    r1 = one(pseudo(dict_dir, k=1), "The cat.")
    assert r1.ids == [ord(" ") + OFFSET] and r1.text == "" and not r1.fell_back
    r2 = one(pseudo(dict_dir, k=2), "The cat.")
    assert r2.ids == ids(" k") and r2.text == "k"
    # a prompt that keeps its separator (sep="") gets the first character at k=1
    p = encode_prompt(TOK, "English: The cat.\nGerman: ", sep="")
    r = PseudoPrior(k=1, dictionary=str(dict_dir / "en-de.txt")).build(
        [PriorItem(item("The cat.").example, p)], TOK)[0]
    assert r.ids == ids("k") and r.text == "k"


def test_words_without_entry_are_tried_then_skipped(dict_dir):
    r = one(pseudo(dict_dir, k=9), "The dog and the bird sleeps")
    assert r.text == "schläft"
    assert r.provenance["word_index"] == 5 and r.provenance["candidates_tried"] == 3  # dog, bird, sleeps


def test_hyphen_and_apostrophe_words(dict_dir):
    assert one(pseudo(dict_dir, k=9), "A well-known fact").text == "bekannt"
    # "don't" is a stop word as a whole; with a stop-word file lacking it, it is looked up
    assert one(pseudo(dict_dir, k=9), "I don't know").fell_back


def test_fall_back_when_nothing_found(dict_dir):
    r = one(pseudo(dict_dir), "The dog and the bird.")
    assert r.ids == [] and r.text == "" and r.fell_back
    assert r.provenance["target_word"] is None and r.provenance["source_word"] is None
    assert r.provenance["candidates_tried"] == 2 and r.provenance["word_index"] is None
    assert one(pseudo(dict_dir), "").fell_back


def test_match_case(dict_dir):
    assert one(pseudo(dict_dir, k=7), "On Monday.").text == "Montag"
    assert one(pseudo(dict_dir, k=7, match_case=False), "On Monday.").text == "montag"
    assert one(pseudo(dict_dir, k=7), "on monday.").text == "montag"
    assert one(pseudo(dict_dir, k=12), "On Monday.", tgt="rus_Cyrl").text == "Понедельник"
    assert one(pseudo(dict_dir, k=4), "On Monday.", tgt="jpn_Jpan").text == "月曜日"  # no case


def test_script_filter(dict_dir):
    # Latin identity target rejected for Japanese, the katakana one used
    assert one(pseudo(dict_dir, k=9), "My computer", tgt="jpn_Jpan").text == "コンピュータ"
    # even with skip_identity=False, "computer" is not in the Japanese script
    assert one(pseudo(dict_dir, k=9, skip_identity=False), "My computer", tgt="jpn_Jpan").text == "コンピュータ"
    # skip_identity=False lets a same-script identity pair through
    assert one(pseudo(dict_dir, k=9, skip_identity=False), "The cat.").text == "cat"


def test_custom_stopwords(dict_dir, tmp_path):
    sw = tmp_path / "stop.txt"
    sw.write_text("# my list\ncat\nthe\n", encoding="utf-8")
    r = one(pseudo(dict_dir, k=9, stopwords=str(sw)), "The cat sleeps.")
    assert r.text == "schläft" and r.provenance["word_index"] == 2
    assert one(pseudo(dict_dir, k=9, stopwords=str(sw)), "I don't know").text == "nicht"
    with pytest.raises(InputError) as e:
        pseudo(dict_dir, stopwords=str(tmp_path / "missing.txt"))
    assert e.value.field == "priors.stopwords"


def test_builtin_stopwords_list():
    words = resources.files("pretty_align").joinpath("data/stopwords_en.txt").read_text("utf-8").split()
    assert 150 <= len(words) <= 250 and len(set(words)) == len(words)
    assert {"the", "a", "and", "of", "on", "is", "was", "they", "don't", "would"} <= set(words)
    assert all(w == w.lower() for w in words) and not {"cat", "monday", "scientists"} & set(words)


def test_signature_uses_hashes_not_paths(dict_dir, tmp_path):
    eng, deu = get_language("eng_Latn"), get_language("deu_Latn")
    builtin = hashlib.sha256(resources.files("pretty_align").joinpath("data/stopwords_en.txt")
                             .read_bytes()).hexdigest()
    assert pseudo(dict_dir).signature(eng, deu) == {
        "strategy": "pseudo", "k": 2, "dictionary_sha256": sha(dict_dir / "en-de.txt"),
        "stopwords_sha256": builtin, "skip_identity": True, "match_case": True}
    assert pseudo(dict_dir).signature(eng, get_language("jpn_Jpan"))["dictionary_sha256"] == sha(dict_dir / "en-ja.txt")
    sw = tmp_path / "stop.txt"
    sw.write_text("the\n", encoding="utf-8")
    assert pseudo(dict_dir, stopwords=str(sw)).signature(eng, deu)["stopwords_sha256"] == sha(sw)
    assert str(dict_dir) not in repr(pseudo(dict_dir).signature(eng, deu))


def test_dictionary_param_errors(dict_dir):
    with pytest.raises(InputError) as e:
        one(PseudoPrior(dictionary=str(dict_dir / "en-{lang}.txt")), "The cat.")
    assert e.value.field == "priors.dictionary" and "{lang}" in str(e.value)
    with pytest.raises(InputError) as e:
        one(pseudo(dict_dir), "The cat.", tgt="fra_Latn")
    assert e.value.field == "priors.dictionary" and str(dict_dir / "en-fr.txt") in str(e.value)
    with pytest.raises(InputError) as e:
        pseudo(dict_dir).signature(get_language("eng_Latn"), get_language("fra_Latn"))
    assert str(dict_dir / "en-fr.txt") in str(e.value)
    with pytest.raises(InputError) as e:
        one(PseudoPrior(), "The cat.")
    assert e.value.field == "priors.dictionary"
    with pytest.raises(InputError) as e:
        PseudoPrior(dictionary="x", dictonary="typo")
    assert e.value.field == "priors.dictonary" and "dictionary" in str(e.value)


def test_dictionary_as_mapping_and_make_prior(dict_dir):
    prior = make_prior("pseudo", k=7, dictionary={"deu_Latn": str(dict_dir / "en-de.txt")})
    assert isinstance(prior, PseudoPrior)
    assert one(prior, "On Monday.").text == "Montag"
    with pytest.raises(InputError) as e:
        one(prior, "On Monday.", tgt="rus_Cyrl")
    assert "rus_Cyrl" in str(e.value)


def test_real_muse_en_de_on_flores_dev_line_1(shared_data):
    source = (shared_data / "flores200/dev/eng_Latn.dev").read_text("utf-8").splitlines()[0]
    ref = (shared_data / "flores200/dev/deu_Latn.dev").read_text("utf-8").splitlines()[0]
    prior = PseudoPrior(k=3, dictionary=str(shared_data / "dictionaries/muse/en-{tgt_iso1}.txt"))
    r = one(prior, source)
    assert r.ids == ids(" Mo") and r.text == "Mo" and not r.fell_back
    assert (r.provenance["source_word"], r.provenance["target_word"]) == ("Monday", "Montag")
    assert r.provenance["word_index"] == 1 and r.provenance["candidates_tried"] == 1
    assert ref.startswith("Am Montag")


def test_real_muse_en_zh_prior_is_simplified(shared_data):
    source = (shared_data / "flores200/dev/eng_Latn.dev").read_text("utf-8").splitlines()[0]
    ref = (shared_data / "flores200/dev/zho_Hans.dev").read_text("utf-8").splitlines()[0]
    prior = PseudoPrior(k=3, dictionary=str(shared_data / "dictionaries/muse/en-{tgt_iso1}.txt"))
    r = one(prior, source, tgt="zho_Hans")
    assert r.provenance["target_word"] == "周一"                     # file: 週一 (Traditional)
    assert r.ids == ids(" 周一") and r.text == "周一" and ref.startswith("周一")
    assert in_script(r.text, "Hans") and OpenCC("t2s").convert(r.text) == r.text
    r = one(prior, "Scientists agree.", tgt="zho_Hans")
    assert r.provenance["target_word"] == "科学家" and r.text == "科学"   # file: 科學家


def test_real_muse_en_ru_and_ja(shared_data):
    source = (shared_data / "flores200/dev/eng_Latn.dev").read_text("utf-8").splitlines()[0]
    prior = PseudoPrior(k=20, dictionary=str(shared_data / "dictionaries/muse/en-{tgt_iso1}.txt"))
    assert one(prior, source, tgt="rus_Cyrl").text == "Понедельник"
    assert one(prior, source, tgt="jpn_Jpan").text == "月曜日"


# ---- gold -----------------------------------------------------------------------------------

def test_gold():
    r = one(GoldPrior(k=3), "The cat.", reference="Die Katze.")
    assert r.ids == ids(" Di") and r.text == "Di" and not r.fell_back
    assert r.provenance == {"strategy": "gold", "has_reference": True}
    r = one(GoldPrior(k=3), "The cat.")
    assert r.ids == [] and r.fell_back and r.provenance["has_reference"] is False
    assert GoldPrior(k=2).signature(get_language("eng_Latn"), get_language("deu_Latn")) == {"strategy": "gold", "k": 2}


# ---- random ---------------------------------------------------------------------------------

@pytest.fixture
def rand_dict(tmp_path: Path) -> Path:
    p = tmp_path / "en-de.txt"
    p.write_text("the\tdie\nthe\tder\ndie\tdie\ndie\tsterben\nwas\twas\ncat\tкошка\nred\trot\n", encoding="utf-8")
    return p


def test_random_is_seeded_per_example_and_deterministic(rand_dict):
    words = lambda seed: [one(RandomPrior(k=9, dictionary=str(rand_dict), seed=seed), "x", id=f"ex/{i}").text
                          for i in range(6)]
    # pool: non-identity Latin targets in file order; "was" (identity only) and кошка never drawn
    assert words(0) == ["sterben", "die", "rot", "sterben", "rot", "rot"]
    assert words(0) == words(0)                       # a fresh instance reproduces the run
    assert words(1) == ["der", "der", "rot", "rot", "der", "sterben"]
    r = one(RandomPrior(k=2, dictionary=str(rand_dict)), "x", id="ex/0")
    assert r.ids == ids(" s") and not r.fell_back
    assert r.provenance == {"strategy": "random", "target_word": "sterben", "pool_size": 4, "seed": 0,
                            "dictionary_sha256": sha(rand_dict)}
    assert RandomPrior(k=2, dictionary=str(rand_dict), seed=3).signature(get_language("eng_Latn"), get_language("deu_Latn")) == {
        "strategy": "random", "k": 2, "dictionary_sha256": sha(rand_dict), "seed": 3}


def test_random_empty_pool_falls_back(rand_dict):
    r = one(RandomPrior(dictionary={"jpn_Jpan": str(rand_dict)}), "x", tgt="jpn_Jpan")
    assert r.ids == [] and r.fell_back and r.provenance["pool_size"] == 0


# ---- function-word --------------------------------------------------------------------------

def test_function_word_first():
    prior = FunctionWordPrior(k=9)
    assert one(prior, "x").text == "die"
    assert one(prior, "x", tgt="zho_Hans").ids == ids(" 的")
    assert one(prior, "x", tgt="jpn_Jpan").text == "の"
    assert one(prior, "x", tgt="rus_Cyrl").text == "и"
    r = one(FunctionWordPrior(k=2), "x")
    assert r.ids == ids(" d") and not r.fell_back
    assert r.provenance == {"strategy": "function-word", "target_word": "die", "choice": "first"}
    assert {"de", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "vi", "sw", "id", "th", "ko", "ar",
            "hi", "en"} <= set(FUNCTION_WORDS)
    for code, words in FUNCTION_WORDS.items():
        assert len(words) == 5 and len(set(words)) == 5, code


def test_function_word_random_is_seeded():
    words = [one(FunctionWordPrior(k=9, choice="random"), "x", id=f"ex/{i}").text for i in range(6)]
    assert words == ["und", "die", "in", "den", "in", "in"]
    assert FunctionWordPrior(choice="random", seed=4).signature(get_language("eng_Latn"), get_language("deu_Latn")) == {
        "strategy": "function-word", "k": 1, "choice": "random", "words": FUNCTION_WORDS["de"], "seed": 4}
    assert "seed" not in FunctionWordPrior().signature(get_language("eng_Latn"), get_language("deu_Latn"))


def test_function_word_errors():
    with pytest.raises(InputError) as e:
        one(FunctionWordPrior(), "x", tgt="pol_Latn")
    assert "pol_Latn" in str(e.value) and "de, en, es" in str(e.value)
    with pytest.raises(InputError) as e:
        FunctionWordPrior(choice="most")
    assert e.value.field == "priors.choice"


@pytest.mark.parametrize("strategy, extra", [("none", {}), ("gold", {}), ("pseudo", {"dictionary": "x.txt"}),
                                             ("function-word", {})])
def test_every_strategy_rejects_a_mistyped_parameter(strategy, extra):
    with pytest.raises(InputError, match=rf"'{strategy}' prior takes no parameter 'tiemout'"):
        make_prior(strategy, k=1, tiemout=5, **extra)


def test_accepted_parameters_are_listed_from_the_constructors():
    assert PRIORS.get("command").accepted_params() == ["command", "timeout"]
    assert PRIORS.get("pos-refined").accepted_params() == ["iterations", "lexicon_split", "task"]
