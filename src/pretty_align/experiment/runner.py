"""The experiment runner: every condition x target x example, each result stored as produced.

Conditions are the reference model's own answers (if a reference is configured) and the base
model under each prior strategy x k. A result's key is the content hash of its condition signature
(models and file hashes, backend, task template, decoding, prior strategy and parameters, package
versions, and the source hash of the pretty-align code itself) and its example (id and text hashes),
so re-running skips what is stored, a killed run resumes where it stopped, and changing anything
that determines an output (code included) makes new rows. Rows made by other code are reused only
when asked (``reuse_from``), and the report then names that code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from ..backends import Backend, load_backend
from ..errors import CapabilityError, InputError
from ..languages import Language, get_language
from ..metrics.offtarget import detect
from ..priors import PRIORS, Prior, PriorItem, make_prior, strategy_for
from ..priors.corrupt import CorruptedPrior
from ..progress import progress_bar
from ..registry import keyword_params, unknown_keywords
from ..tasks import TASKS, Example, Task
from .answerer import Answer, Answerer
from .config import ExperimentConfig, ModelConfig, PriorConfig
from .signature import code_revision, code_signature, content_hash, package_versions, text_hash
from .store import Store

log = logging.getLogger(__name__)
REFERENCE = "reference"
CHUNK_BATCHES = 8  # batches per chunk handed to the backend (continuous batching refills from it)


@dataclass(eq=False)  # identity: a condition is one object of the plan
class Condition:
    label: str
    answerer: Answerer
    prior: Prior | None             # None: the model's own answer (the reference condition)
    _sigs: dict[str, dict] = field(default_factory=dict, repr=False, compare=False)

    def signature(self, tgt: Language) -> dict:
        """Computed once per target language (prior signatures hash files)."""
        if tgt.code not in self._sigs:
            self._sigs[tgt.code] = self._signature(tgt)
        return self._sigs[tgt.code]

    def _signature(self, tgt: Language) -> dict:
        a = self.answerer
        sig: dict[str, Any] = {"role": "reference" if self.prior is None else "base", "model": a.signature(),
                               "task": a.task.signature(tgt), "decoding": a.decoding.signature(),
                               "packages": package_versions(), "code": code_signature()}
        if self.prior is not None:
            sig["prior"] = self.prior.signature(self.answerer.task.source_language(tgt), tgt)
        return sig


class Work(NamedTuple):
    """One output to produce: a condition on one example of one target language."""

    cond: Condition
    tgt: Language
    idx: int
    example: Example
    key: str


@dataclass
class RunSummary:
    run: str
    store: str
    total: int
    produced: int = 0
    skipped: int = 0
    reused: int = 0                 # rows made by other code, taken with reuse_from
    by_other: int = 0               # rows another process on the same store stored first
    truncated: int = 0
    conditions: list[str] = field(default_factory=list)


def example_key_part(ex: Example) -> dict:
    return {"id": ex.id, "source": text_hash(ex.source), "reference": text_hash(ex.reference),
            "src": ex.src.code, "tgt": ex.tgt.code}


def build_task(cfg: ExperimentConfig) -> Task:
    """The configured task. Fields left unset take the task's defaults; a field the task does not
    take (e.g. ``flores`` for POS tagging) is refused, naming the fields it does take."""
    cls = TASKS.get(cfg.task.name)
    given = cfg.task.model_dump(exclude={"name", "targets", "max_prompt_tokens"}, exclude_none=True)
    unknown = unknown_keywords(cls.__init__, given)
    if unknown:
        raise InputError(f"task '{cfg.task.name}' takes no field '{unknown[0]}'; its fields: "
                         f"{', '.join(sorted({*keyword_params(cls.__init__), 'targets', 'max_prompt_tokens'}))}",
                         field=f"task.{unknown[0]}")
    return cls(**given)


class Runner:
    def __init__(self, cfg: ExperimentConfig, *, backend_factory: Callable[..., Backend] = load_backend) -> None:
        self.cfg = cfg
        self.task = build_task(cfg)
        self.decoding = cfg.decoding.build()
        self.targets = [get_language(code, field="task.targets") for code in cfg.task.targets]
        # Read and validate all data before loading any model: bad input fails in seconds.
        self.task.check_data(self.targets)   # every missing file at once, not the first one read
        self.examples = {tgt.code: list(self.task.examples(tgt)) for tgt in self.targets}
        self.store = Store(cfg.store_path, synchronous=cfg.store_synchronous)
        self._factory = backend_factory
        self._answerers: dict[str, Answerer] = {}
        self.base = self._answerer(cfg.base)
        self.reference = self._answerer(cfg.reference) if cfg.reference else None
        self.conditions = self._conditions()

    def _answerer(self, mc: ModelConfig) -> Answerer:
        key = content_hash(mc.model_dump())
        if key not in self._answerers:
            backend = self._factory(mc.backend, mc.model, adapter=mc.adapter, dtype=mc.dtype, **mc.options)
            self._answerers[key] = Answerer(backend, self.task, self.decoding, chat=mc.chat,
                                            max_prompt_tokens=self.cfg.task.max_prompt_tokens, store=self.store)
        return self._answerers[key]

    def _strategy(self, pc: PriorConfig) -> str:
        """The registered strategy a prior config names: the task's own version (``pos-pseudo``)
        where the task has one (the config validated the name)."""
        return strategy_for(self.task.registry_name, pc.strategy) or pc.strategy

    def _prior(self, pc: PriorConfig, k: int) -> Prior:
        params: dict[str, Any] = dict(pc.params)
        for name in ("dictionary", "stopwords", "command"):
            if getattr(pc, name) is not None:
                params[name] = getattr(pc, name)
        strategy = self._strategy(pc)
        if strategy != pc.strategy:   # a task's own version (pos-pseudo) is built from the task
            params["task"] = self.task
        cls = PRIORS.get(strategy)
        if cls.needs_step_hook and not self.base.backend.capabilities.step_hook:
            raise CapabilityError(f"the '{pc.strategy}' prior steers the base model's own decoding, and backend "
                                  f"'{self.base.backend.registry_name}' decodes in its own engine; run the base model "
                                  "on backend 'hf' or 'llamacpp'")
        if cls.needs_model:
            if pc.model in (None, REFERENCE):
                if self.reference is None:
                    raise InputError("prior model = 'reference' but the config has no [reference] model",
                                     field="priors.model")
                params["answerer"] = self.reference
            else:
                params["answerer"] = self._answerer(ModelConfig(model=pc.model, backend=pc.backend, chat=pc.chat,
                                                                dtype=pc.dtype))
        elif pc.model is not None:
            params["model"] = pc.model   # e.g. refined: the MT model (a strategy without one refuses it)
        prior = make_prior(strategy, k=k, **params)
        prior.check_languages([(self.task.source_language(t), t) for t in self.targets])
        return prior

    def _references(self, tgt: Language) -> list[tuple[str, str]]:
        """(example id, reference) of the run's examples of ``tgt``: the corrupted priors' word pool."""
        return [(ex.id, ex.reference or "") for ex in self.examples.get(tgt.code, [])]

    def _conditions(self) -> list[Condition]:
        out = []
        if self.reference is not None:
            out.append(Condition(REFERENCE, self.reference, None))
        for pc in self.cfg.priors:
            takes_k = PRIORS.get(self._strategy(pc)).takes_k
            for k in (pc.k if takes_k else [0]):
                label = pc.name or (f"{pc.strategy} k={k}" if takes_k else pc.strategy)
                if len(pc.k) > 1 and pc.name:
                    label = f"{pc.name} k={k}"
                prior = self._prior(pc, k)
                if not pc.corrupt:
                    out.append(Condition(label, self.base, prior))
                for p in pc.corrupt:   # one inner prior (its dictionaries, its model) for every p
                    corrupted = CorruptedPrior(prior, p, seed=pc.corrupt_seed, pool=self._references)
                    out.append(Condition(f"{label} corrupt={p:g}", self.base, corrupted))
        labels = [c.label for c in out]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise InputError(f"two conditions are both named {sorted(dupes)}; give each prior a distinct `name`",
                             field="priors")
        return out

    def plan(self, code: dict | None = None) -> list[Work]:
        """Every output of the run with its key; ``code`` replaces the running code's signature
        (the keys that code would have given)."""
        work = []
        for cond in self.conditions:
            for tgt in self.targets:
                sig = cond.signature(tgt) if code is None else {**cond.signature(tgt), "code": code}
                for i, ex in enumerate(self.examples[tgt.code]):
                    work.append(Work(cond, tgt, i, ex, content_hash({"condition": sig, "example": example_key_part(ex)})))
        return work

    def _reuse(self, work: list[Work], done: set[str], revision: str) -> list[Work]:
        """``work`` with each missing row replaced by the row that the code ``revision`` stored
        for it, where there is one (``--reuse-from``)."""
        old = self.plan(self.store.code_of(revision))
        found = self.store.existing_keys(o.key for w, o in zip(work, old) if w.key not in done)
        return [o if w.key not in done and o.key in found else w for w, o in zip(work, old)]

    def run(self, *, progress: bool = True, reuse_from: str | None = None) -> RunSummary:
        """Produce every missing row. ``reuse_from``: take a missing row from the rows that the code
        named by this revision stored (explicit only: by default, rows of other code are never used)."""
        work = self.plan()
        done = self.store.existing_keys(w.key for w in work)
        reused = 0
        if reuse_from:
            mine = {w.key for w in work}
            work = self._reuse(work, done, reuse_from)
            reused = sum(w.key not in mine for w in work)
            done |= {w.key for w in work if w.key not in mine}
        self.store.set_manifest(self.cfg.name, {**self.cfg.model_dump(), "code": code_signature(),
                                                "code_revision": code_revision(), "reuse_from": reuse_from},
                                [(w.cond.label, w.tgt.code, w.idx, w.key) for w in work])
        summary = RunSummary(self.cfg.name, str(self.store.path), len(work), skipped=len(done) - reused,
                             reused=reused, conditions=[c.label for c in self.conditions])
        desc = f"generating ({summary.skipped} already stored)" if summary.skipped else "generating"
        by_slot = {(w.cond.label, w.tgt.code, w.idx): w for w in work}
        with progress_bar(progress, len(work) - len(done), description=desc) as advance:
            def store(w: Work, row: dict) -> None:
                if w.key not in done:  # regenerated for batch composition only: not stored twice
                    if self.store.insert_results([row]):
                        summary.by_other += 1     # another process on this store was first
                    else:
                        summary.produced += 1
                    done.add(w.key)
                    advance(1, f"{w.cond.label} -> {w.tgt.code}")

            for group in self._groups():  # reference first: model priors reuse its cached answers
                for tgt in self.targets:
                    for chunk in self._chunks(self.examples[tgt.code]):
                        items = [by_slot[(c.label, tgt.code, i)] for c in group for i in chunk]
                        if all(w.key in done for w in items):
                            continue
                        if group[0].answerer.backend.capabilities.batch_invariant:
                            items = [w for w in items if w.key not in done]
                        self._produce(tgt, items, store)
        summary.truncated = sum(a.truncated_count for a in self._answerers.values())
        return summary

    def _groups(self) -> list[list[Condition]]:
        """Conditions that share a model, in plan order. A group's conditions are generated together,
        example by example, so one example's prompt reaches the backend once with all its prior
        variants (the HF backend prefills it once and forks the cache; llama.cpp reuses its prompt
        cache) and the batch compositions are a function of the plan alone."""
        groups: dict[int, list[Condition]] = {}
        for cond in self.conditions:
            groups.setdefault(id(cond.answerer), []).append(cond)
        return list(groups.values())

    def _chunks(self, examples: list[Example]) -> list[list[int]]:
        """Example indices in chunks, sorted by source length (length bucketing). A chunk goes to the
        backend at once (times the group's conditions), so freed batch slots are refilled; each
        result is stored as it finishes. Chunks come from the plan, not from what is left to do, so
        a resumed run sees the same compositions as an uninterrupted one: backends whose outputs
        depend on the batch (bfloat16) regenerate the whole chunk, batch-invariant ones only the
        missing rows."""
        order = sorted(range(len(examples)), key=lambda i: (len(examples[i].source), i))
        size = self.decoding.batch_size * CHUNK_BATCHES
        return [order[s:s + size] for s in range(0, len(order), size)]

    def _produce(self, tgt: Language, items: list[Work], store: Callable[[Work, dict], None]) -> None:
        """Generate ``items`` (one model, any of its conditions) in one backend call."""
        answerer = items[0].cond.answerer
        priors: list[Any] = [None] * len(items)
        for cond in dict.fromkeys(w.cond for w in items if w.cond.prior is not None):
            mine = [j for j, w in enumerate(items) if w.cond is cond]
            built = cond.prior.build([PriorItem(items[j].example, answerer.prompt(items[j].example)[0]) for j in mine],
                                     answerer.tokenizer)
            for j, p in zip(mine, built):
                priors[j] = p

        def row(j: int, ans: Answer) -> None:
            w, p = items[j], priors[j]
            ex = w.example
            if p is not None and p.hook is not None:   # a decoding-time prior: its trace is the provenance
                p.provenance = {**p.provenance, **p.hook.finish(len(ans.new_ids))}
            store(w, {
                "key": w.key, "condition": w.cond.label, "tgt": tgt.code, "example_id": ex.id, "source": ex.source,
                "reference": ex.reference, "output": ans.text,
                "prior_text": p.text if p else "", "prior_ids": p.ids if p else [],
                "prior_fell_back": int(p.fell_back) if p else 0, "provenance": p.provenance if p else {},
                "new_tokens": len(ans.new_ids), "stop_reason": ans.stop_reason, "truncated": int(ans.truncated),
                "detected_lang": detect([ans.text], self.cfg.metrics.langid_langs)[0],
                "signature": w.cond.signature(tgt), "code_revision": code_revision()})

        answerer.answer([w.example for w in items], [p.ids if p else [] for p in priors], on_answer=row,
                        hooks=[p.hook if p else None for p in priors])


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True, reuse_from: str | None = None,
                   backend_factory: Callable[..., Backend] = load_backend) -> RunSummary:
    """Run (or resume) every condition of ``cfg``; returns counts. Reports: ``report.write_report``."""
    return Runner(cfg, backend_factory=backend_factory).run(progress=progress, reuse_from=reuse_from)
