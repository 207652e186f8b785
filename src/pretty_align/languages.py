"""Languages by FLORES-200 code (``eng_Latn``, ``zho_Hans``, ...).

One table holds what every layer needs to know of a language: its English name (used in
templates), its script (dictionary script filter), its ISO 639-1 code (language identification and
MUSE file names) and the sacrebleu tokenizer fit for BLEU on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UnknownLanguageError


@dataclass(frozen=True)
class Language:
    code: str          # FLORES-200 code, e.g. "zho_Hans"
    name: str          # English name used in prompt templates
    iso1: str          # ISO 639-1 (or 639-3 when there is none); what py3langid returns
    bleu_tokenizer: str = "13a"

    @property
    def iso3(self) -> str:
        return self.code.split("_")[0]

    @property
    def script(self) -> str:
        return self.code.split("_")[1]


_TABLE = [
    Language("eng_Latn", "English", "en"),
    Language("deu_Latn", "German", "de"),
    Language("fra_Latn", "French", "fr"),
    Language("spa_Latn", "Spanish", "es"),
    Language("ita_Latn", "Italian", "it"),
    Language("por_Latn", "Portuguese", "pt"),
    Language("nld_Latn", "Dutch", "nl"),
    Language("pol_Latn", "Polish", "pl"),
    Language("ces_Latn", "Czech", "cs"),
    Language("ron_Latn", "Romanian", "ro"),
    Language("swe_Latn", "Swedish", "sv"),
    Language("dan_Latn", "Danish", "da"),
    Language("fin_Latn", "Finnish", "fi"),
    Language("hun_Latn", "Hungarian", "hu"),
    Language("tur_Latn", "Turkish", "tr"),
    Language("vie_Latn", "Vietnamese", "vi"),
    Language("ind_Latn", "Indonesian", "id"),
    Language("zsm_Latn", "Malay", "ms"),
    Language("tgl_Latn", "Tagalog", "tl"),
    Language("swh_Latn", "Swahili", "sw"),
    Language("rus_Cyrl", "Russian", "ru"),
    Language("ukr_Cyrl", "Ukrainian", "uk"),
    Language("bul_Cyrl", "Bulgarian", "bg"),
    Language("ell_Grek", "Greek", "el"),
    Language("heb_Hebr", "Hebrew", "he"),
    Language("arb_Arab", "Arabic", "ar"),
    Language("pes_Arab", "Persian", "fa"),
    Language("hin_Deva", "Hindi", "hi"),
    Language("ben_Beng", "Bengali", "bn"),
    Language("tam_Taml", "Tamil", "ta"),
    Language("tha_Thai", "Thai", "th", "char"),
    Language("kor_Hang", "Korean", "ko", "char"),
    Language("zho_Hans", "Chinese", "zh", "zh"),
    Language("zho_Hant", "Traditional Chinese", "zh", "zh"),
    Language("jpn_Jpan", "Japanese", "ja", "ja-mecab"),
]
LANGUAGES: dict[str, Language] = {lang.code: lang for lang in _TABLE}

# Unicode ranges per script; a word "is in" a script when all its letters are (see in_script).
_SCRIPT_LETTERS = {
    "Latn": r"A-Za-z\u00C0-\u024F\u1E00-\u1EFF",
    "Cyrl": r"\u0400-\u052F",
    "Grek": r"\u0370-\u03FF\u1F00-\u1FFF",
    "Hebr": r"\u0590-\u05FF",
    "Arab": r"\u0600-\u06FF\u0750-\u077F",
    "Deva": r"\u0900-\u097F",
    "Beng": r"\u0980-\u09FF",
    "Taml": r"\u0B80-\u0BFF",
    "Thai": r"\u0E00-\u0E7F",
    "Hang": r"\uAC00-\uD7AF\u1100-\u11FF\u3130-\u318F",
    "Hans": r"\u3400-\u4DBF\u4E00-\u9FFF",
    "Hant": r"\u3400-\u4DBF\u4E00-\u9FFF",
    "Jpan": r"\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\u31F0-\u31FF\uFF66-\uFF9F",
}


def get_language(code: str, *, field: str | None = None) -> Language:
    """Look up a FLORES code; an unknown one raises an error that lists the known codes."""
    try:
        return LANGUAGES[code]
    except KeyError:
        raise UnknownLanguageError(
            f"unknown language code '{code}'; expected a FLORES-200 code, one of: "
            + ", ".join(sorted(LANGUAGES)), field=field) from None


def in_script(word: str, script: str) -> bool:
    """True when ``word`` has at least one letter and every letter is in ``script``.

    Digits, punctuation and spaces are ignored, so "e-mail" is Latin and "3月" is Japanese.
    """
    letters = [ch for ch in word if ch.isalpha()]
    if not letters:
        return False
    pattern = _SCRIPT_LETTERS.get(script)
    if pattern is None:
        return True  # unknown script: no filter rather than a false rejection
    allowed = re.compile(f"[{pattern}]")
    return all(allowed.match(ch) for ch in letters)
