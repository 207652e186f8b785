"""Metric contracts: a ``Score`` value object and the ``Metric`` base class.

Invariants every metric keeps:

* ``corpus_score`` scores a whole corpus at once (never an average of sentence scores);
* ``hyps`` and ``refs`` are non-empty and line-aligned (``hyps[i]`` translates the source of
  ``refs[i]``), else ``InputError``;
* ``Score.signature`` says exactly how the number was made (for sacrebleu metrics it is sacrebleu's
  own signature string), so two scores are comparable only when their signatures are equal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..errors import InputError
from ..languages import Language


@dataclass(frozen=True)
class Score:
    """One corpus-level number. ``value`` is on the metric's usual scale (0-100 for BLEU, chrF++,
    off-target); ``extra`` holds metric-specific details (per-output labels, n-gram precisions...)."""

    name: str
    value: float | None   # None: the metric cannot judge this language (e.g. off-target "not covered")
    signature: str
    extra: dict = field(default_factory=dict)

    def format(self) -> str:
        """``"BLEU = 34.12 (nrefs:1|case:mixed|...)"``."""
        shown = "not covered" if self.value is None else f"{self.value:.2f}"
        return f"{self.name} = {shown} ({self.signature})"


class Metric(ABC):
    """A corpus-level metric, registered by name in ``METRICS``.

    ``needs_sources`` is True for metrics that also read the source sentences (COMET); callers may
    pass ``sources=`` to every metric and the others ignore it.
    """

    name: str = "metric"
    needs_sources: bool = False

    @abstractmethod
    def corpus_score(self, hyps: list[str], refs: list[str], tgt: Language, *,
                     sources: list[str] | None = None) -> Score:
        """Score ``hyps`` against the line-aligned ``refs`` in target language ``tgt``."""

    @abstractmethod
    def signature(self, tgt: Language) -> str:
        """The signature ``corpus_score`` would put on a score for target ``tgt`` (one reference)."""

    @classmethod
    def for_report(cls, *, comet_checkpoint: str | None = None,
                   langid_langs: list[str] | None = None) -> "Metric | None":
        """The instance an experiment report scores with, given the config's ``[metrics]``
        options; None when this metric is optional and not set up here (a model file that is not
        local, no checkpoint given). The task names the metrics, each metric decides this."""
        return cls()

    @staticmethod
    def check_args(hyps: list[str], refs: list[str], *, sources: list[str] | None = None) -> None:
        """Raise ``InputError`` unless hyps/refs (and sources, when given) are non-empty, equally long
        lists of strings. Called first by every ``corpus_score``: sacrebleu would otherwise fail late
        with an obscure message, or silently score a truncated corpus."""
        for label, seq in (("hypotheses", hyps), ("references", refs)):
            if not isinstance(seq, list) or not all(isinstance(s, str) for s in seq):
                raise InputError(f"{label} must be a list of strings, got {type(seq).__name__}",
                                 field=label)
        if not hyps:
            raise InputError("cannot score an empty corpus (0 hypotheses)", field="hypotheses")
        if len(hyps) != len(refs):
            raise InputError(f"{len(hyps)} hypotheses but {len(refs)} references; they must be "
                             "line-aligned, one reference per hypothesis", field="references")
        if sources is not None and len(sources) != len(hyps):
            raise InputError(f"{len(hyps)} hypotheses but {len(sources)} sources; they must be "
                             "line-aligned", field="sources")
