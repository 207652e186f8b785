"""Languages by FLORES-200 code (``eng_Latn``, ``zho_Hans``, ...): all 204 of FLORES-200.

One record holds what every layer needs to know of a language: its English name (used in prompt
templates), its script (dictionary script filter, word splitting), its ISO 639-1 code (language
identification and MUSE file names) and the sacrebleu tokenizer fit for BLEU on it. Nothing here
is typed by hand:

* the codes are FLORES-200's own list (``data/flores200_languages.tsv``, with FLORES's names);
* names and ISO codes come from ``langcodes`` (CLDR and the IANA registry, via ``language_data``):
  the name of the language, preferring the macrolanguage CLDR prefers (``arb`` -> Arabic, ``swh``
  -> Swahili), with the script added where FLORES writes the language in a script other than its
  usual one (``ace_Arab`` -> "Acehnese (Arabic)"); ISO 639-1 where the language or its dominant
  macrolanguage has one, else the ISO 639-3 code;
* the BLEU tokenizer and word splitting follow the script (``BLEU_BY_SCRIPT``, ``UNSPACED_SCRIPTS``).

``PROMPT_NAMES`` keeps the three names the prompts used before the table came from langcodes
(CLDR now says "Filipino", "Bangla", "Chinese (Traditional)"), so that stored results, which are
keyed on the prompt text, stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .errors import UnknownLanguageError

# Scripts written without spaces between words: word splitting falls back to characters or runs.
UNSPACED_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Thai", "Khmr", "Laoo", "Mymr", "Tibt"})
# sacrebleu's BLEU tokenizer per script; every other script takes "13a" (splits at spaces and
# punctuation). Korean keeps the character tokenizer it had before ko-mecab was considered.
BLEU_BY_SCRIPT = {"Hans": "zh", "Hant": "zh", "Jpan": "ja-mecab", "Hang": "char",
                  **{s: "char" for s in UNSPACED_SCRIPTS - {"Hans", "Hant", "Jpan"}}}
PROMPT_NAMES = {"zho_Hant": "Traditional Chinese", "tgl_Latn": "Tagalog", "ben_Beng": "Bengali"}
# ISO 15924 codes that are not Unicode script values, as the Unicode scripts their letters have.
_UNICODE_SCRIPTS = {"Hans": ("Hani",), "Hant": ("Hani",), "Jpan": ("Hira", "Kana", "Hani"),
                    "Kore": ("Hang", "Hani")}


@dataclass(frozen=True)
class Language:
    code: str          # FLORES-200 code, e.g. "zho_Hans"
    name: str          # English name used in prompt templates
    iso1: str          # ISO 639-1 (or 639-3 when there is none); what py3langid returns
    bleu_tokenizer: str = "13a"
    flores_name: str = ""   # FLORES-200's own name (listings; prompts use ``name``)

    @property
    def iso3(self) -> str:
        return self.code.split("_")[0]

    @property
    def script(self) -> str:
        return self.code.split("_")[1]

    @property
    def spaced(self) -> bool:
        """Whether words are separated by spaces in this script."""
        return self.script not in UNSPACED_SCRIPTS


@lru_cache(maxsize=None)
def flores_codes() -> dict[str, str]:
    """FLORES-200's 204 codes, in its order, with its English names."""
    text = resources.files("pretty_align").joinpath("data/flores200_languages.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {code: name for code, name in rows}


@lru_cache(maxsize=None)
def _iso1_of_alpha3() -> dict[str, str]:
    """ISO 639-3 code -> ISO 639-1 code, from the two-letter subtags of the IANA registry."""
    import langcodes
    from language_data.registry_parser import parse_registry

    out = {}
    for entry in parse_registry():
        tag = entry.get("Subtag", "")
        if entry.get("Type") == "language" and len(tag) == 2 and "Deprecated" not in entry:   # not iw, in, ji
            out[langcodes.Language.get(tag, normalize=False).to_alpha3()] = tag
    return out


def _describe(code: str, flores_name: str, scripts_of: dict[str, set[str]]) -> Language:
    import langcodes

    iso3, script = code.split("_")
    lang = langcodes.Language.get(iso3).prefer_macrolanguage()
    name = lang.display_name()
    usual = langcodes.Language.get(iso3).maximize().script
    if len(scripts_of[iso3]) > 1 and script != usual:
        name = f"{name} ({langcodes.Language.make(script=script).display_name().split(' (')[-1].rstrip(')')})"
    iso1 = _iso1_of_alpha3().get(iso3) or (lang.language if len(lang.language) == 2 else iso3)
    return Language(code, PROMPT_NAMES.get(code, name), iso1, BLEU_BY_SCRIPT.get(script, "13a"), flores_name)


@lru_cache(maxsize=None)
def all_languages() -> dict[str, Language]:
    """Every FLORES-200 language by code (built on first use: langcodes loads its data then)."""
    codes = flores_codes()
    scripts_of: dict[str, set[str]] = {}
    for code in codes:
        scripts_of.setdefault(code.split("_")[0], set()).add(code.split("_")[1])
    return {code: _describe(code, name, scripts_of) for code, name in codes.items()}


def get_language(code: str, *, field: str | None = None) -> Language:
    """Look up a FLORES-200 code; an unknown one raises an error that suggests near codes."""
    table = all_languages()
    try:
        return table[code]
    except KeyError:
        pass
    import difflib

    near = difflib.get_close_matches(code, table, n=5, cutoff=0.5)
    iso3 = [c for c in table if c.split("_")[0] == code.split("_")[0].lower()]
    hint = ", ".join(dict.fromkeys(iso3 + near)) or "see `pretty-align languages`"
    raise UnknownLanguageError(f"unknown language code '{code}'; expected a FLORES-200 code "
                               f"(language_Script, e.g. yor_Latn); near: {hint}", field=field) from None


@lru_cache(maxsize=None)
def _script_pattern(script: str):
    import regex

    names = _UNICODE_SCRIPTS.get(script, (script,))
    try:
        return regex.compile("|".join(rf"\p{{scx={n}}}" for n in names))   # extensions: ー is Kana too
    except regex.error:   # not a Unicode script value
        return None


def in_script(word: str, script: str) -> bool:
    """True when ``word`` has at least one letter and every letter is in ``script`` (Unicode's
    Script_Extensions property; ``Hans``/``Hant`` are Han, ``Jpan`` Hiragana, Katakana and Han).

    Digits, punctuation and spaces are ignored, so "e-mail" is Latin and "3月" is Japanese.
    """
    letters = [ch for ch in word if ch.isalpha()]
    if not letters:
        return False
    pattern = _script_pattern(script)
    if pattern is None:
        return True  # unknown script: no filter rather than a false rejection
    return all(pattern.match(ch) for ch in letters)
