"""Corpus-level metrics, registered by name: bleu, chrf++, spbleu, off-target, comet, rouge1/2/L, pos-accuracy.

``default_metrics(tgt)`` is what a one-off translation scores with; ``report_metrics(task.metrics)`` what an
experiment report scores a task with.
"""

from __future__ import annotations

from typing import Sequence

from ..languages import Language
from ..registry import Registry
from .base import Metric, Score

METRICS: Registry[Metric] = Registry("metric", "pretty_align.metrics")

from . import bleu, comet, offtarget, pos, rouge  # noqa: E402,F401  (registration side effects)
from .bleu import BLEU, ChrFpp, SpBLEU  # noqa: E402
from .comet import Comet  # noqa: E402
from .offtarget import OffTarget, detect  # noqa: E402


def default_metrics(tgt: Language, comet_checkpoint: str | None = None) -> list[Metric]:
    """BLEU and chrF++ always; spBLEU (flores200) only when its SPM model is already local;
    off-target when the identifier knows ``tgt``; COMET only when a checkpoint path is given
    (then a missing file or package raises instead of being skipped: the user asked for it)."""
    metrics = [m for cls in (BLEU, ChrFpp, SpBLEU, OffTarget, Comet)
               if (m := cls.for_report(comet_checkpoint=comet_checkpoint)) is not None]
    return [m for m in metrics if not isinstance(m, OffTarget) or m.covers(tgt)]


def report_metrics(names: Sequence[tuple[str, str]], *, comet_checkpoint: str | None = None,
                   langid_langs: list[str] | None = None) -> list[tuple[str, Metric]]:
    """(column label, metric) for a task's ``Task.metrics`` (label, registry name) pairs, in order,
    leaving out the optional metrics that are not set up here (``Metric.for_report``)."""
    out: list[tuple[str, Metric]] = []
    for label, name in names:
        metric = METRICS.get(name).for_report(comet_checkpoint=comet_checkpoint, langid_langs=langid_langs)
        if metric is not None:
            out.append((label, metric))
    return out


__all__ = ["BLEU", "METRICS", "ChrFpp", "Comet", "Metric", "OffTarget", "Score", "SpBLEU",
           "default_metrics", "detect", "report_metrics"]
