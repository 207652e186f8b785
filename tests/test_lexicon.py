"""Lexicons induced from parallel text with eflomal (issue 15.2): a synthetic corpus with a known
word mapping, the cache, the ``induce:`` dictionary spec, and clear errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import require_module

require_module("eflomal", "-e '.[lexicon]'")

from pretty_align.errors import InputError  # noqa: E402
from pretty_align.languages import get_language  # noqa: E402
from pretty_align.priors import PriorItem, make_prior  # noqa: E402
from pretty_align.priors.dictionary import resolve_path  # noqa: E402
from pretty_align.priors.lexicon import induce_lexicon, precision_at_1, read_lexicon  # noqa: E402

ENG, DEU = get_language("eng_Latn"), get_language("deu_Latn")
MAPPING = {"cat": "katze", "dog": "hund", "house": "haus", "tree": "baum", "red": "rot", "big": "groß",
           "sees": "sieht", "the": "die", "small": "klein", "bird": "vogel", "water": "wasser", "old": "alt"}


def corpus(tmp_path: Path, n: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """Sentence pairs whose words translate one to one (target order shuffled a little)."""
    rng = random.Random(seed)
    words = sorted(MAPPING)
    src, tgt = [], []
    for _ in range(n):
        s = rng.sample(words, rng.randint(3, 6))
        t = [MAPPING[w] for w in s]
        if rng.random() < 0.3:
            t[0], t[-1] = t[-1], t[0]
        src.append(" ".join(s))
        tgt.append(" ".join(t).capitalize() + ".")
    (tmp_path / "c.eng").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "c.deu").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return tmp_path / "c.eng", tmp_path / "c.deu"


def test_the_induced_lexicon_recovers_the_mapping_and_is_cached(tmp_path, monkeypatch):
    src, tgt = corpus(tmp_path)
    path = induce_lexicon(src, tgt, ENG, DEU)
    lex = read_lexicon(path)
    p1, n = precision_at_1(lex, {k: [v] for k, v in MAPPING.items()})
    assert n == len(MAPPING) and p1 >= 90
    import eflomal

    monkeypatch.setattr(eflomal.Aligner, "align", lambda *a, **k: pytest.fail("aligned twice"))
    assert induce_lexicon(src, tgt, ENG, DEU) == path          # the same input: the cached file
    copy = induce_lexicon(src, tgt, ENG, DEU, out=tmp_path / "out" / "en-de.tsv")
    assert copy.read_bytes() == path.read_bytes()


def test_an_induce_spec_feeds_the_pseudo_prior(tmp_path):
    src, tgt = corpus(tmp_path)
    spec = f"induce:{src}|{tgt}"
    assert resolve_path(spec, ENG, DEU) == induce_lexicon(src, tgt, ENG, DEU)
    from pretty_align.boundary import encode_prompt
    from pretty_align.tasks.base import Example
    from conftest import build_tokenizer

    tok = build_tokenizer()
    prior = make_prior("pseudo", k=2, dictionary=spec)
    ex = Example("1", "The big dog sleeps.", None, ENG, DEU)
    res = prior.build([PriorItem(ex, encode_prompt(tok, "English: The big dog sleeps.\nGerman:"))], tok)[0]
    assert res.provenance["target_word"] == "groß" and not res.fell_back
    import hashlib

    induced = induce_lexicon(src, tgt, ENG, DEU).read_bytes()   # the lexicon's hash is in the signature
    assert prior.signature(ENG, DEU)["dictionary_sha256"] == hashlib.sha256(induced).hexdigest()


def test_bad_parallel_files_are_named(tmp_path):
    src, tgt = corpus(tmp_path)
    tgt.write_text("one line\n", encoding="utf-8")
    with pytest.raises(InputError, match="line-aligned"):
        induce_lexicon(src, tgt, ENG, DEU)
    with pytest.raises(InputError, match="not found"):
        induce_lexicon(tmp_path / "missing.eng", tgt, ENG, DEU)
    with pytest.raises(InputError, match="induce:SOURCE_FILE|TARGET_FILE"):
        resolve_path(f"induce:{src}", ENG, DEU)
