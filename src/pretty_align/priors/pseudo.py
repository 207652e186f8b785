"""The ``pseudo`` prior: a dictionary translation of one source word (SPEC §3, default ours).

Take the source words in order, skip stop words and words with no usable entry, translate the first
one found with its first dictionary target in the target language's script; the prior is the first
``k`` base tokens of that word. When no word qualifies there is no prior and ``fell_back`` is True,
so the fall-back rate can be measured rather than hidden (SPEC §9).
"""

from __future__ import annotations

import hashlib
import os
import regex
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ..boundary import Tokenizer
from ..errors import InputError
from ..languages import Language
from . import PRIORS
from .base import Prior, PriorItem, PriorResult
from .dictionary import BilingualDictionary, DictionarySpec, resolve_path

# Letters/digits with internal hyphens or apostrophes ("well-known", "don't"); "_" is not a letter.
# Combining marks belong to their word (Thai vowels, Devanagari and Tamil signs): with plain
# ``re`` and ``[^\W_]``, "हिन्दी" would split into three "words".
WORD_RE = regex.compile(r"[\p{L}\p{N}][\p{L}\p{M}\p{N}]*(?:['\u2019\-][\p{L}\p{N}][\p{L}\p{M}\p{N}]*)*")
_CASED_SCRIPTS = {"Latn", "Cyrl", "Grek"}


@lru_cache(maxsize=None)
def _stopwords(path: str | None) -> tuple[frozenset[str], str]:
    """(lower-cased stop words, sha256 of the list's bytes); ``None`` = the built-in English list.
    One word per line; blank lines and ``#`` comments ignored."""
    if path is None:
        data = resources.files("pretty_align").joinpath("data/stopwords_en.txt").read_bytes()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError:
            raise InputError("stop-word file not found; expected one word per line",
                             path=path, field="priors.stopwords") from None
    words = (ln.split("#", 1)[0].strip().lower() for ln in data.decode("utf-8-sig").splitlines())
    return frozenset(w.replace("\u2019", "'") for w in words if w), hashlib.sha256(data).hexdigest()


def load_dictionary(spec: DictionarySpec | None, src: Language, tgt: Language,
                    strict: bool = False) -> BilingualDictionary:
    """The dictionary configured by ``spec`` (see ``dictionary.resolve_path``) for ``src -> tgt``."""
    if not spec:
        raise InputError("a bilingual dictionary is required: a path pattern such as "
                         "'dictionaries/muse/en-{tgt_iso1}.txt' or a {flores_code: path} table",
                         field="priors.dictionary")
    return BilingualDictionary.load(resolve_path(spec, src, tgt), tgt=tgt, strict=strict)


class DictionaryPrior(Prior):
    """A prior that reads a bilingual dictionary (``self.dictionary`` spec, ``self.strict``): each
    (src, tgt) dictionary is resolved and loaded once per prior, so its signature hash and the
    entries its priors use come from the same load."""

    dictionary: DictionarySpec | None
    strict: bool

    def dictionary_for(self, src: Language, tgt: Language) -> BilingualDictionary:
        cache = self.__dict__.setdefault("_dictionaries", {})
        if (src.code, tgt.code) not in cache:
            cache[(src.code, tgt.code)] = load_dictionary(self.dictionary, src, tgt, self.strict)
        return cache[(src.code, tgt.code)]


@PRIORS.register("pseudo")
class PseudoPrior(DictionaryPrior):
    """Params: ``dictionary`` (path pattern or {flores_code: path}), ``stopwords`` (path, None =
    built-in English list), ``skip_identity``, ``match_case``, ``strict`` (malformed dictionary
    lines raise)."""

    def __init__(self, k: int = 1, *, dictionary: DictionarySpec | None = None,
                 stopwords: str | os.PathLike[str] | None = None,
                 skip_identity: bool = True, match_case: bool = True, strict: bool = False,
                 **unknown: Any) -> None:
        super().__init__(k=k, **unknown)
        self.dictionary, self.skip_identity, self.match_case, self.strict = \
            dictionary, skip_identity, match_case, strict
        self.stopwords_path = None if stopwords is None else os.fspath(stopwords)
        _stopwords(self.stopwords_path)  # a missing stop-word file fails at construction

    def find(self, source: str, src: Language, tgt: Language) -> tuple[dict[str, Any], str | None]:
        """(provenance, target word or None) for one source text; pure, no tokenizer."""
        d = self.dictionary_for(src, tgt)
        stop, _ = _stopwords(self.stopwords_path)
        prov: dict[str, Any] = {"strategy": "pseudo", "source_word": None, "target_word": None,
                                "word_index": None, "candidates_tried": 0, "dictionary_sha256": d.sha256}
        for i, m in enumerate(WORD_RE.finditer(source)):
            word = m.group().replace("\u2019", "'")
            if word.lower() in stop:
                continue
            prov["candidates_tried"] += 1
            targets = d.targets_in_script(word, tgt.script, self.skip_identity)
            if not targets:
                continue
            target = targets[0]
            # A capitalised source word (a name, a sentence start) gets a capitalised target where
            # the script has case; MUSE targets are all lower-case.
            if self.match_case and word[0].isupper() and tgt.script in _CASED_SCRIPTS:
                target = target[0].upper() + target[1:]
            prov.update(source_word=word, target_word=target, word_index=i)
            return prov, target
        return prov, None

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        out = []
        for item in items:
            ex = item.example
            prov, word = self.find(ex.source, ex.src, ex.tgt)
            out.append(self.from_text(tokenizer, item.prompt, word, prov, fell_back=word is None))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        d = self.dictionary_for(src, tgt)
        return {"strategy": "pseudo", "k": self.k, "dictionary_sha256": d.sha256,
                "stopwords_sha256": _stopwords(self.stopwords_path)[1],
                "skip_identity": self.skip_identity, "match_case": self.match_case}
