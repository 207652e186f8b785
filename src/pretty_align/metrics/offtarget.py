"""Off-target rate: the share of outputs not in the target language, by py3langid.

py3langid ships its model inside the wheel, so nothing is downloaded. It knows 140 languages
(py3langid 0.4); for a FLORES-200 language outside them the rate is "not covered" (``value=None``),
never a number, and the signature names the detector that judged each language (or
``not-covered``).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import py3langid
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from ..errors import InputError
from ..languages import Language
from . import METRICS
from .base import Metric, Score

# Chinese varieties py3langid can answer for written Chinese; the language table has one "zh".
_FOLD = {"wuu": "zh", "yue": "zh"}

# The one full identifier, loaded on first use (decompressing the model takes ~1 s).
_IDENTIFIER: LanguageIdentifier | None = None


def _base() -> LanguageIdentifier:
    global _IDENTIFIER
    if _IDENTIFIER is None:
        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE)
    return _IDENTIFIER


def known_languages() -> list[str]:
    """ISO codes the identifier can answer."""
    return _base().labels


@lru_cache(maxsize=None)
def _identifier(langs: frozenset[str] | None) -> LanguageIdentifier:
    # A restricted identifier is a shallow copy: set_languages() on the shared one would change
    # what every other caller gets. The copy shares the (read-only) model arrays.
    if langs is None:
        return _base()
    unknown = sorted(langs - set(_base().labels))
    if unknown:
        raise InputError(f"language identifier does not know {', '.join(unknown)}; known codes: "
                         + ", ".join(sorted(_base().labels)), field="langs")
    ident = copy.copy(_base())
    ident.set_languages(sorted(langs))
    return ident


def normalize(code: str) -> str:
    """Fold variants to the table's ISO code: ``zh-TW``/``zh_Hant``/``yue``/``wuu`` -> ``zh``."""
    code = code.lower().replace("_", "-").split("-")[0]
    return _FOLD.get(code, code)


def detect(texts: list[str], langs: list[str] | None = None) -> list[str]:
    """ISO 639-1 code per text (``""`` for empty or whitespace-only text, which has no language).

    ``langs`` restricts the answer to those codes (``None``: all the identifier knows).
    """
    ident = _identifier(frozenset(langs) if langs is not None else None)
    return [normalize(ident.classify(t)[0]) if t.strip() else "" for t in texts]


@METRICS.register("off-target")
class OffTarget(Metric):
    """``value`` = 100 * share of hypotheses whose detected language is not ``tgt.iso1``.

    References are only used for the length check. Empty hypotheses count as off-target (an empty
    answer is not an answer in the target language). ``extra["detected"]`` lists the code found for
    each hypothesis, in order.
    """

    name = "off-target"

    def __init__(self, langs: list[str] | None = None) -> None:
        self.langs = sorted(set(langs)) if langs is not None else None
        if self.langs is not None:
            if not self.langs:
                raise InputError("langs must name at least one language", field="langs")
            _identifier(frozenset(self.langs))  # validate the codes now, not after generation

    @classmethod
    def for_report(cls, *, langid_langs: list[str] | None = None, **options) -> "OffTarget":   # noqa: ANN003
        """Restricted to the config's ``langid_langs`` when it names them."""
        return cls(langid_langs)

    def covers(self, tgt: Language) -> bool:
        """Whether the identifier can recognise ``tgt`` at all."""
        return tgt.iso1 in known_languages()

    def corpus_score(self, hyps: list[str], refs: list[str], tgt: Language, *,
                     sources: list[str] | None = None) -> Score:
        """The rate, or ``value=None`` ("not covered") for a language the identifier does not know:
        every output would count as off-target there, which is a wrong number, not a high one."""
        self.check_args(hyps, refs)
        if not self.covers(tgt):
            return Score("off-target", None, self.signature(tgt), {"detector": "not covered"})
        if self.langs is not None and tgt.iso1 not in self.langs:
            # Otherwise every output would be off-target by construction.
            raise InputError(f"target '{tgt.iso1}' is not among the identifier's languages "
                             f"{self.langs}", field="langs")
        detected = detect(hyps, self.langs)
        off = sum(code != tgt.iso1 for code in detected)
        return Score("off-target", 100.0 * off / len(hyps), self.signature(tgt),
                     {"detected": detected, "detector": f"py3langid-{py3langid.__version__}"})

    def signature(self, tgt: Language) -> str:
        """The detector that judged ``tgt``, or ``not-covered`` with the language's code."""
        if not self.covers(tgt):
            return f"langid:not-covered:{tgt.code}|py3langid-{py3langid.__version__}"
        scope = "all-langs" if self.langs is None else "langs:" + ",".join(self.langs)
        return f"langid:py3langid-{py3langid.__version__}|{scope}"
