"""``translation-refined`` prior (strategy ``refined`` in a translation config): the paper's
"smaller task model" translates the source, and the first ``k`` base-model tokens of its
translation become the prior (``Prior.from_text``: cut as a continuation of the base prompt).

Provider ``seq2seq`` (the only one here): a transformers ``AutoModelForSeq2SeqLM`` with its
``AutoTokenizer`` (NLLB, M2M-100, Marian/OPUS-MT), a local directory or a hub id, on the CPU in
float32, greedy unless ``num_beams`` > 1. The other refined providers are strategies of their own:
``command`` (an external program such as Apertium) and ``model`` (a causal LM).

Language codes are read off the MT tokenizer: NLLB names a language by its FLORES code
(``eng_Latn``, an added token), M2M-100 by ISO 639-1 (``en``: ``get_lang_id`` / ``lang_code_to_id``).
The source code becomes ``tokenizer.src_lang``; the target's token is forced as the first generated
token. A tokenizer with no language codes (Marian) serves one fixed pair, so ``check_languages``
refuses it for a run with several pairs. ``src_lang`` / ``tgt_lang`` replace the derived code (one
code for the whole run).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Sequence

from ..boundary import Tokenizer
from ..errors import InputError, MissingDependencyError, PrettyAlignError
from ..languages import Language
from ..models import ResolvedModel, dir_sha256, pin_hub_revision, resolve_model
from . import PRIORS
from .base import Prior, PriorItem, PriorResult

FLORES_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
Codes = tuple[str | None, str | None]   # (source code, target code) in the MT model's convention


def lang_token_id(tok: Any, code: str) -> int | None:
    """Id of the token naming language ``code`` in ``tok``: a ``lang_code_to_id`` entry (M2M-100:
    ``en``), an added token (NLLB: ``eng_Latn``) or ``get_lang_id`` (M2M-100); None if it has none."""
    table = getattr(tok, "lang_code_to_id", None)
    if isinstance(table, Mapping) and code in table:
        return int(table[code])
    if code in tok.added_tokens_encoder:
        return int(tok.added_tokens_encoder[code])
    get_lang_id = getattr(tok, "get_lang_id", None)
    if callable(get_lang_id):
        try:
            return int(get_lang_id(code))
        except (KeyError, ValueError):
            pass
    return None


def has_language_codes(tok: Any) -> bool:
    """True for a multilingual MT tokenizer (NLLB, M2M-100); False for a one-pair one (Marian)."""
    return bool(getattr(tok, "lang_code_to_id", None)) or callable(getattr(tok, "get_lang_id", None)) \
        or any(FLORES_CODE.fullmatch(t) for t in tok.added_tokens_encoder)


class _Loaded:
    """A seq2seq tokenizer, its model (loaded on first use) and every translation made with them.
    Shared by all priors on the same weights (one per ``k`` of a config), so each source is
    translated once per (codes, settings)."""

    def __init__(self, resolved: ResolvedModel) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise MissingDependencyError(f"the seq2seq refined prior ({e})", "transformers torch") from None
        self.resolved = resolved
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, revision=resolved.revision)
        except ImportError as e:   # e.g. M2M-100 and Marian need sentencepiece
            raise MissingDependencyError(f"the tokenizer of '{resolved.spec}' ({e})", "sentencepiece") from None
        except (OSError, ValueError) as e:
            raise PrettyAlignError(f"could not load the tokenizer of '{resolved.spec}': {e}") from e
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._model: Any = None
        self.done: dict[tuple, str] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from transformers import AutoModelForSeq2SeqLM

            try:
                model = AutoModelForSeq2SeqLM.from_pretrained(self.resolved.path, revision=self.resolved.revision,
                                                              dtype=torch.float32)
            except ValueError as e:   # a config that is not a seq2seq architecture
                raise InputError(f"'{self.resolved.spec}' is not a seq2seq model ({e}); for a causal LM use "
                                 "strategy `model`", field="priors.model") from None
            except OSError as e:
                raise PrettyAlignError(f"could not load the MT model '{self.resolved.spec}': {e}") from e
            self._model = model.to("cpu").eval()
        return self._model


@functools.lru_cache(maxsize=4)
def _load(resolved: ResolvedModel) -> _Loaded:
    """One ``_Loaded`` per weights (``resolved`` carries the sha256 or the hub commit)."""
    return _Loaded(resolved)


class Seq2SeqProvider:
    """A transformers seq2seq MT model.

    Invariants: the weights are identified at construction (directory sha256, or the hub commit
    that is then loaded); nothing is loaded until codes or translations are asked for, the model
    only when something is translated; the codes of a pair are resolved once."""

    name = "seq2seq"

    def __init__(self, model: str, *, num_beams: int, max_new_tokens: int, batch_size: int,
                 src_lang: str | None, tgt_lang: str | None) -> None:
        resolved = resolve_model(model, field="priors.model")
        if resolved.kind == "gguf":
            raise InputError(f"'{model}' is a GGUF file; the seq2seq provider needs a transformers model "
                             "directory or hub id", field="priors.model")
        if resolved.kind == "dir":
            resolved = ResolvedModel(resolved.spec, "dir", resolved.path, dir_sha256(resolved.path))
        self.resolved = pin_hub_revision(resolved)
        self.num_beams, self.max_new_tokens, self.batch_size = num_beams, max_new_tokens, batch_size
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self._codes: dict[tuple[str, str], Codes] = {}

    @property
    def loaded(self) -> _Loaded:
        return _load(self.resolved)

    def _code(self, lang: Language, override: str | None, side: str) -> str | None:
        tok = self.loaded.tokenizer
        if not has_language_codes(tok):
            if override:
                raise InputError(f"'{self.resolved.spec}' has no language codes (a one-pair model such as "
                                 f"Marian); drop {side}", field=f"priors.{side}")
            return None
        for code in [override] if override else [lang.code, lang.iso1]:
            if lang_token_id(tok, code) is not None:
                return code
        tried = override or f"{lang.code}, {lang.iso1}"
        raise InputError(f"the tokenizer of '{self.resolved.spec}' has no language code for {lang.name} "
                         f"(tried {tried}); set params.{side} to its code", field=f"priors.{side}")

    def codes(self, src: Language, tgt: Language) -> Codes:
        """(source code, target code) for ``src -> tgt``; (None, None) for a one-pair model."""
        key = (src.code, tgt.code)
        if key not in self._codes:
            self._codes[key] = (self._code(src, self.src_lang, "src_lang"),
                                self._code(tgt, self.tgt_lang, "tgt_lang"))
        return self._codes[key]

    def check_languages(self, pairs: Sequence[tuple[Language, Language]]) -> None:
        """Refuse one fixed pair (or one fixed code) for a run that needs several; resolve every code."""
        distinct = sorted({(s.code, t.code) for s, t in pairs})
        for side, n in (("src_lang", len({s for s, _ in distinct})), ("tgt_lang", len({t for _, t in distinct}))):
            if n > 1 and getattr(self, side):
                raise InputError(f"{side} = '{getattr(self, side)}' is one code, but the run has {n} "
                                 f"{'sources' if side == 'src_lang' else 'targets'}", field=f"priors.{side}")
        if len(distinct) > 1 and not has_language_codes(self.loaded.tokenizer):
            raise InputError(f"'{self.resolved.spec}' translates one fixed language pair (its tokenizer has no "
                             f"language codes, e.g. Marian), but the run has {len(distinct)} pairs "
                             f"({', '.join('-'.join(p) for p in distinct)}); use one model per target or a "
                             "multilingual model (NLLB, M2M-100)", field="priors.model")
        for src, tgt in pairs:
            self.codes(src, tgt)

    def translate(self, sources: Sequence[str], src: Language, tgt: Language) -> list[str]:
        """One translation per source, whitespace-stripped, in order."""
        import torch

        src_code, tgt_code = self.codes(src, tgt)
        mt = self.loaded
        settings = (src_code, tgt_code, self.num_beams, self.max_new_tokens)
        todo = [s for s in dict.fromkeys(sources) if (*settings, s) not in mt.done]
        tok = mt.tokenizer
        if src_code is not None:
            tok.src_lang = src_code   # NLLB / M2M-100: the source code starts the encoder input
        forced = {} if tgt_code is None else {"forced_bos_token_id": lang_token_id(tok, tgt_code)}
        skip = 1 + len(forced)        # decoder start token, then the forced target-language token
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = mt.model.generate(**enc, max_new_tokens=self.max_new_tokens + len(forced),
                                        num_beams=self.num_beams, do_sample=False, **forced)
            for s, text in zip(chunk, tok.batch_decode(out[:, skip:], skip_special_tokens=True)):
                mt.done[(*settings, s)] = text.strip()
        return [mt.done[(*settings, s)] for s in sources]

    def signature(self, src: Language, tgt: Language) -> dict:
        src_code, tgt_code = self.codes(src, tgt)
        r = self.resolved
        weights = {"sha256": r.sha256} if r.kind == "dir" else {"hub": r.path, "revision": r.revision}
        return {"model": weights, "src_lang": src_code, "tgt_lang": tgt_code, "num_beams": self.num_beams,
                "max_new_tokens": self.max_new_tokens}


PROVIDERS: dict[str, type[Seq2SeqProvider]] = {"seq2seq": Seq2SeqProvider}


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}", field=f"priors.{name}")
    return value


@PRIORS.register("translation-refined")
class RefinedTranslationPrior(Prior):
    """Params: ``model`` (required: a directory or hub id), ``provider`` ("seq2seq"), ``batch_size``,
    ``max_new_tokens`` (translation tokens), ``num_beams`` (1: greedy), ``src_lang`` / ``tgt_lang``
    (the MT model's own codes, replacing the derived ones).

    Invariants: constructed only for the translation task, with every parameter checked; the prior
    of an example is ``from_text`` of its translation, so ids are base tokens continuing the base
    prompt, at most ``k`` of them; an empty translation is a fallback (no prior)."""

    def __init__(self, k: int = 1, *, task: Any = None, model: str | None = None, provider: str = "seq2seq",
                 batch_size: int = 8, max_new_tokens: int = 64, num_beams: int = 1,
                 src_lang: str | None = None, tgt_lang: str | None = None, **params: Any) -> None:
        if task is None or getattr(task, "registry_name", None) != "translation":
            raise InputError(f"the {self.registry_name} prior works with the translation task only",
                             field="priors.strategy")
        super().__init__(k=k, **params)
        if provider not in PROVIDERS:
            raise InputError(f"unknown provider '{provider}'; available: {', '.join(PROVIDERS)} (an external "
                             "program is strategy `command`, a causal LM strategy `model`)", field="priors.provider")
        if not isinstance(model, str) or not model.strip():
            raise InputError("the refined translation prior needs an MT model: params = { model = \"<directory "
                             "or hub id>\" }", field="priors.model")
        for name, code in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if code is not None and (not isinstance(code, str) or not code.strip()):
                raise InputError(f"{name} must be a language code of the MT model, got {code!r}",
                                 field=f"priors.{name}")
        self.task = task
        self.provider = PROVIDERS[provider](model, num_beams=_count("num_beams", num_beams),
                                            max_new_tokens=_count("max_new_tokens", max_new_tokens),
                                            batch_size=_count("batch_size", batch_size),
                                            src_lang=src_lang, tgt_lang=tgt_lang)

    def check_languages(self, pairs: Sequence[tuple[Language, Language]]) -> None:
        self.provider.check_languages(pairs)

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        groups: dict[tuple[Language, Language], list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault((it.example.src, it.example.tgt), []).append(i)
        results: dict[int, PriorResult] = {}
        for (src, tgt), idx in groups.items():
            src_code, tgt_code = self.provider.codes(src, tgt)
            outs = self.provider.translate([items[i].example.source for i in idx], src, tgt)
            for i, out in zip(idx, outs):
                prov = {"strategy": self.registry_name, "provider": self.provider.name, "output": out[:300],
                        "src_lang": src_code, "tgt_lang": tgt_code}
                results[i] = self.from_text(tokenizer, items[i].prompt, out, prov, fell_back=not out)
        return [results[i] for i in range(len(items))]

    def signature(self, src: Language, tgt: Language) -> dict:
        return {"strategy": self.registry_name, "k": self.k, "provider": self.provider.name,
                **self.provider.signature(src, tgt)}
