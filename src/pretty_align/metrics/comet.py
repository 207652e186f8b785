"""COMET (optional): needs ``unbabel-comet`` and a local checkpoint; nothing is downloaded."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingDependencyError
from ..languages import Language
from . import METRICS
from .base import Metric, Score


@METRICS.register("comet")
class Comet(Metric):
    """Corpus COMET from a checkpoint file (e.g. ``wmt22-comet-da/checkpoints/model.ckpt``).

    Needs the sources: ``corpus_score(hyps, refs, tgt, sources=[...])`` with ``sources`` line-aligned
    to ``hyps``. ``value`` is COMET's system score as COMET prints it (mean of segment scores,
    roughly 0-1, not x100); ``extra["scores"]`` holds the segment scores.
    The constructor fails fast (missing file, missing package); the model loads on first use.
    """

    name = "COMET"
    needs_sources = True

    @classmethod
    def for_report(cls, *, comet_checkpoint: str | None = None, **options) -> "Comet | None":   # noqa: ANN003
        """Only when the config names a checkpoint; then a missing file or package raises."""
        return cls(comet_checkpoint) if comet_checkpoint else None

    def __init__(self, checkpoint: str, *, batch_size: int = 8, gpus: int = 0) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise InputError("COMET checkpoint not found (give the path of a downloaded "
                             "checkpoint file, e.g. .../checkpoints/model.ckpt)", path=str(checkpoint))
        try:
            self._comet: Any = importlib.import_module("comet")
        except ImportError:
            raise MissingDependencyError("COMET", "unbabel-comet") from None
        self.checkpoint, self.batch_size, self.gpus = str(path), batch_size, gpus
        self._model: Any = None

    def corpus_score(self, hyps: list[str], refs: list[str], tgt: Language, *,
                     sources: list[str] | None = None) -> Score:
        if sources is None:
            raise InputError("COMET needs the source sentences: pass sources=[...]", field="sources")
        self.check_args(hyps, refs, sources=sources)
        if self._model is None:
            self._model = self._comet.load_from_checkpoint(self.checkpoint)
        data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hyps, refs)]
        out = self._model.predict(data, batch_size=self.batch_size, gpus=self.gpus)
        return Score(self.name, float(out.system_score), self.signature(tgt),
                     {"scores": [float(x) for x in out.scores]})

    def signature(self, tgt: Language) -> str:
        path = Path(self.checkpoint)
        # ".../wmt22-comet-da/checkpoints/model.ckpt" is named by its model folder, not "model".
        model = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        try:
            version = importlib.metadata.version("unbabel-comet")
        except importlib.metadata.PackageNotFoundError:  # importable but not installed as a dist
            version = getattr(self._comet, "__version__", "unknown")
        return f"comet:{model}|version:{version}"
