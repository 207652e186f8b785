"""Corpus-level metrics, registered by name: bleu, chrf++, spbleu, off-target, comet, rouge1/2/L, pos-accuracy.

``default_metrics(tgt)`` is what an experiment reports when the user names none.
"""

from __future__ import annotations

from ..languages import Language
from ..registry import Registry
from .base import Metric, Score

METRICS: Registry[Metric] = Registry("metric")

from . import bleu, comet, offtarget, pos, rouge  # noqa: E402,F401  (registration side effects)
from .bleu import BLEU, ChrFpp, SpBLEU  # noqa: E402
from .comet import Comet  # noqa: E402
from .offtarget import OffTarget, detect  # noqa: E402


def default_metrics(tgt: Language, comet_checkpoint: str | None = None) -> list[Metric]:
    """BLEU and chrF++ always; spBLEU (flores200) only when its SPM model is already local;
    off-target when the identifier knows ``tgt``; COMET only when a checkpoint path is given
    (then a missing file or package raises instead of being skipped: the user asked for it)."""
    metrics: list[Metric] = [BLEU(), ChrFpp()]
    if SpBLEU.available("flores200"):
        metrics.append(SpBLEU("flores200"))
    if tgt.iso1 in offtarget.known_languages():
        metrics.append(OffTarget())
    if comet_checkpoint is not None:
        metrics.append(Comet(comet_checkpoint))
    return metrics


__all__ = ["BLEU", "METRICS", "ChrFpp", "Comet", "Metric", "OffTarget", "Score", "SpBLEU",
           "default_metrics", "detect"]
