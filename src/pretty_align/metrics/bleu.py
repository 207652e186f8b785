"""sacrebleu metrics: BLEU (language-appropriate tokenizer), chrF++ and spBLEU.

Each ``Score.signature`` is sacrebleu's own signature string, so numbers can be reproduced with
``sacrebleu`` on the command line.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from sacrebleu.metrics import BLEU as _SacreBLEU
from sacrebleu.metrics import CHRF as _SacreCHRF
from sacrebleu.metrics.base import Metric as _SacreMetric
from sacrebleu.tokenizers import tokenizer_spm

from ..errors import InputError, MissingDependencyError
from ..languages import Language
from . import METRICS
from .base import Metric, Score

log = logging.getLogger(__name__)
_warned_mecab = False


def _mecab_available() -> bool:
    # sacrebleu's own test: its ja-mecab module sets MeCab to None when MeCab or ipadic fails to import.
    from sacrebleu.tokenizers import tokenizer_ja_mecab
    return tokenizer_ja_mecab.MeCab is not None


def bleu_tokenizer(tgt: Language) -> str:
    """The sacrebleu tokenizer BLEU uses for ``tgt``: ``tgt.bleu_tokenizer``, except that
    ``ja-mecab`` becomes ``char`` when mecab-python3/ipadic are missing (warned once; the score's
    signature then says ``tok:char``, so it is never mistaken for a MeCab score)."""
    global _warned_mecab
    tok = tgt.bleu_tokenizer
    if tok == "ja-mecab" and not _mecab_available():
        if not _warned_mecab:
            log.warning("mecab-python3/ipadic not installed: BLEU for Japanese uses tok:char instead "
                        "of tok:ja-mecab (pip install 'pretty-align[ja]' for the standard one)")
            _warned_mecab = True
        tok = "char"
    return tok


def _sig_one_ref(metric: _SacreMetric) -> str:
    # sacrebleu learns the reference count only while scoring; we always score one reference.
    metric.num_refs = 1
    return metric.get_signature().format()


class _SacreWrapper(Metric):
    """Shared scoring for sacrebleu metrics: build the sacrebleu object for ``tgt``, score, sign."""

    def _sacre(self, tgt: Language) -> _SacreMetric:
        raise NotImplementedError

    def _extra(self, result) -> dict:  # noqa: ANN001 - a sacrebleu score object
        return {}

    def corpus_score(self, hyps: list[str], refs: list[str], tgt: Language, *,
                     sources: list[str] | None = None) -> Score:
        self.check_args(hyps, refs)
        metric = self._sacre(tgt)
        result = metric.corpus_score(hyps, [refs])
        return Score(self.name, float(result.score), metric.get_signature().format(),
                     self._extra(result))

    def signature(self, tgt: Language) -> str:
        return _sig_one_ref(self._sacre(tgt))

    def paired_bootstrap(self, systems: dict[str, list[str]], refs: list[str], tgt: Language, baseline: str,
                         n_samples: int = 1000) -> tuple[str, dict[str, dict]]:
        """sacrebleu's paired bootstrap resampling (Koehn 2004) of every system against ``baseline``,
        all scored on the same resampled sentence sets. Returns the test's signature and, per system,
        ``{"score", "mean": bootstrap mean, "ci": half-width of the 95% interval (mean ± ci, sacrebleu's
        convention), "p": p-value against the baseline (None for it)}``.
        Seeded by SACREBLEU_SEED (default 12345, in the signature), so a rerun gives the same numbers."""
        from sacrebleu.significance import PairedTest

        for hyps in systems.values():
            self.check_args(hyps, refs)
        names = [baseline] + [s for s in systems if s != baseline]
        test = PairedTest([(n, systems[n]) for n in names], {self.name: self._sacre(tgt)}, [refs],
                          test_type="bs", n_samples=n_samples)
        signatures, scores = test()
        key = next(k for k in scores if k != "System")
        base = scores[key][0].score
        # sacrebleu counts resampled differences strictly above the observed one (after multeval), so
        # a system that scores exactly the baseline's (e.g. the same outputs) gets its smallest p-value
        # and would look "significant": an observed difference of 0 is no evidence of one.
        out = {name: {"score": float(r.score), "mean": float(r.mean), "ci": float(r.ci),
                      "p": None if name == baseline else 1.0 if r.score == base else float(r.p_value)}
               for name, r in zip(names, scores[key])}
        return signatures[key].format(), out


@METRICS.register("bleu")
class BLEU(_SacreWrapper):
    """Corpus BLEU with ``tokenize = bleu_tokenizer(tgt)`` (13a, zh, char, or ja-mecab)."""

    name = "BLEU"

    def _sacre(self, tgt: Language) -> _SacreMetric:
        return _SacreBLEU(tokenize=bleu_tokenizer(tgt))

    def _extra(self, result) -> dict:  # noqa: ANN001
        return {"precisions": list(result.precisions), "bp": result.bp,
                "sys_len": result.sys_len, "ref_len": result.ref_len}


@METRICS.register("chrf++")
class ChrFpp(_SacreWrapper):
    """Corpus chrF++ (character 6-grams plus word bigrams: ``CHRF(word_order=2)``)."""

    name = "chrF++"

    def _sacre(self, tgt: Language) -> _SacreMetric:
        return _SacreCHRF(word_order=2)


@METRICS.register("spbleu")
class SpBLEU(_SacreWrapper):
    """BLEU on the FLORES SentencePiece tokenization (``tokenize="flores200"`` or ``"flores101"``).

    Invariant: never downloads. sacrebleu would fetch the SPM model on first use; this class only
    runs when the file is already at ``$SACREBLEU/models/<name>`` (see ``model_path``), and raises
    ``InputError`` saying where to put it otherwise.
    """

    name = "spBLEU"
    VARIANTS = ("flores200", "flores101")

    def __init__(self, variant: str = "flores200") -> None:
        if variant not in self.VARIANTS:
            raise InputError(f"unknown spBLEU variant '{variant}'; expected one of "
                             + ", ".join(self.VARIANTS), field="variant")
        if importlib.util.find_spec("sentencepiece") is None:
            raise MissingDependencyError("spBLEU", "sentencepiece")
        if not self.available(variant):
            raise InputError(
                f"spBLEU ({variant}) needs the FLORES SentencePiece model, which is not downloaded "
                f"automatically; put it at {self.model_path(variant)} (or set SACREBLEU to a "
                "folder holding models/ before starting), or use BLEU and chrF++ instead",
                path=self.model_path(variant))
        self.variant = variant
        self.name = f"spBLEU-{variant}"

    @staticmethod
    def model_path(variant: str) -> str:
        """Where sacrebleu looks for the SPM model: ``$SACREBLEU/models/<basename of its URL>``."""
        url = tokenizer_spm.SPM_MODELS[variant]["url"]
        return os.path.join(tokenizer_spm.SACREBLEU_DIR, "models", os.path.basename(url))

    @classmethod
    def available(cls, variant: str = "flores200") -> bool:
        """True when sentencepiece is installed and the SPM model file for ``variant`` is present
        locally. Only looks at the file system: never downloads."""
        return (variant in cls.VARIANTS and importlib.util.find_spec("sentencepiece") is not None
                and os.path.isfile(cls.model_path(variant)))

    def _sacre(self, tgt: Language) -> _SacreMetric:
        return _SacreBLEU(tokenize=self.variant)

    @classmethod
    def for_report(cls, **options) -> "SpBLEU | None":   # noqa: ANN003
        """FLORES-200 spBLEU when its SPM model is already local (reports never download)."""
        return cls("flores200") if cls.available("flores200") else None
