"""``pretty-align analyze``: decision-space analysis of an experiment config's base and reference
(SFT) models, stored per position in the experiment's SQLite store and resumable per example.

The SFT answers come from the same answerer (and generation cache) as the experiments, so an
``analyze`` after a ``run`` of the same config decodes nothing again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

from ..backends import load_backend
from ..backends.base import Backend
from ..boundary import answer_ids
from ..errors import CapabilityError, InputError
from ..experiment.config import ExperimentConfig, PriorConfig
from ..experiment.runner import Runner, example_key_part
from ..progress import progress_bar
from ..experiment.signature import code_signature, content_hash, package_versions
from .decision import compare, compare_text

log = logging.getLogger(__name__)


@dataclass
class AnalysisSummary:
    examples: int
    produced: int
    skipped: int
    positions: int
    seconds: float
    mode: str


class Analysis:
    """Plan, compute and store the per-position records of one config."""

    def __init__(self, cfg: ExperimentConfig, *, backend_factory: Callable[..., Backend] = load_backend) -> None:
        if cfg.reference is None:
            raise InputError("the analysis compares the base model with a reference (SFT) model: add [reference]",
                             field="reference")
        self.cfg, self.acfg = cfg, cfg.analysis
        n = self.acfg.n if self.acfg.n is not None else cfg.task.n
        # Only the two models matter here: no prior is built or loaded.
        runner_cfg = cfg.model_copy(update={"priors": [PriorConfig(strategy="none", k=[0])],
                                            "task": cfg.task.model_copy(update={"n": n})})
        self.runner = Runner(runner_cfg, backend_factory=backend_factory)
        self.store = self.runner.store
        self.base, self.sft = self.runner.base, self.runner.reference
        assert self.sft is not None
        self.mode = self._mode()

    def _mode(self) -> str:
        """``exact`` when both models share a tokenizer and see the same plain prompt; otherwise the
        approximate text-level mode (``text``), or an error when ``mode = "exact"`` was asked for."""
        for answerer, role in ((self.base, "base"), (self.sft, "reference")):
            if not answerer.backend.capabilities.exact_scoring:
                raise CapabilityError(f"the {role} backend '{answerer.backend.registry_name}' declares "
                                      "exact_scoring=False: it cannot give full-vocabulary log-probs, which both "
                                      "the exact and the text-level analysis need")
        same = self.base.fingerprint == self.sft.fingerprint and not self.base.chat and not self.sft.chat
        if same:
            return "exact"
        if self.acfg.mode == "exact":
            raise CapabilityError("analysis.mode = 'exact' needs both models to share one tokenizer and the plain "
                                  "prompt (chat = false for both); this pair differs: use mode = 'auto' for the "
                                  "approximate text-level analysis")
        log.warning("base and reference tokenizers differ (or one uses a chat template): the analysis is "
                    "APPROXIMATE (text level, aligned at word starts)")
        return "text"

    def _records(self, examples, answers) -> Iterator[tuple[int, list]]:
        a = self.acfg
        if self.mode == "exact":
            items = [(ans.prompt.ids, ans.new_ids) for ans in answers]
            yield from compare(self.base.backend, self.sft.backend, items, top_k=a.top_k, batch_size=a.batch_size,
                               chunk=a.chunk)
            return
        tb = self.base.tokenizer
        items = []
        for ex, ans in zip(examples, answers):
            prompt = self.base.prompt(ex)[0]
            text = self.sft.tokenizer.decode(ans.new_ids, skip_special_tokens=True)
            items.append((prompt.ids, answer_ids(tb, prompt, text), ans.prompt.ids, ans.new_ids))
        yield from compare_text(self.base.backend, self.sft.backend, items, top_k=a.top_k, batch_size=a.batch_size,
                                chunk=a.chunk)

    def signature(self) -> dict[str, Any]:
        return {"analysis": "decision-space", "mode": self.mode, "top_k": self.acfg.top_k,
                "base": self.base.signature(), "sft": self.sft.signature(),
                "sft_decoding": self.sft.decoding.signature(), "task": self.runner.task.signature(),
                "packages": package_versions(), "code": code_signature()}

    def plan(self) -> list[tuple[str, Any]]:
        """(key, example) for every example of every target language, in order."""
        sig = self.signature()
        out = []
        for tgt in self.runner.targets:
            task = self.runner.task.signature(tgt)   # what the target's prompts depend on (POS demonstrations)
            for ex in self.runner.examples[tgt.code]:
                out.append((content_hash({"sig": sig, "task": task, "example": example_key_part(ex)}), ex))
        return out

    def run(self, *, progress: bool = True) -> AnalysisSummary:
        start = time.time()
        plan = self.plan()
        self.store.set_analysis_manifest(self.cfg.name, self.signature(), [(k, ex.tgt.code) for k, ex in plan])
        done = self.store.analysis_done([k for k, _ in plan])
        todo = [(k, ex) for k, ex in plan if k not in done]
        positions = 0
        bs = self.cfg.decoding.batch_size * 8
        skipped = len(plan) - len(todo)
        desc = f"analysing ({skipped} already stored)" if skipped else "analysing"
        with progress_bar(progress, len(todo), description=desc) as advance:
            # Chunks come from the full plan, as in the runner: with a batch-dependent (bfloat16) SFT
            # model a resumed analysis then sees exactly the answers an uninterrupted one would.
            for start_i in range(0, len(plan), bs):
                chunk = plan[start_i:start_i + bs]
                if all(k in done for k, _ in chunk):
                    continue
                answers = self.sft.answer([ex for _, ex in chunk])
                open_ = [j for j, (k, _) in enumerate(chunk) if k not in done]
                for i, records in self._records([chunk[j][1] for j in open_], [answers[j] for j in open_]):
                    key, ex = chunk[open_[i]]
                    self.store.insert_analysis(key, ex.tgt.code, ex.id, self.mode, [asdict(r) for r in records])
                    positions += len(records)
                    advance(1, f"analysing {ex.tgt.code}")
        return AnalysisSummary(len(plan), len(todo), len(plan) - len(todo), positions, time.time() - start, self.mode)


def run_analysis(cfg: ExperimentConfig, *, progress: bool = True,
                 backend_factory: Callable[..., Backend] = load_backend) -> AnalysisSummary:
    """Compute (or resume) the analysis of ``cfg``; the report: ``analysis.report.write_analysis_report``."""
    return Analysis(cfg, backend_factory=backend_factory).run(progress=progress)
