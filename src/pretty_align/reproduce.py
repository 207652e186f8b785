"""``pretty-align reproduce``: the paper's evidence from one command, in one resumable store.

A preset (``configs/presets/<name>.toml``, table ``[reproduce]``) names the stages: an SFT
counterpart build (or ``--sft``), experiment configs (translation, summarization, POS; each
composes shared configs with ``extends``) and the decision-space analysis, which runs on the first
stage's config. Every stage writes into the preset's one store, so killing the command anywhere and
running it again continues where it stopped (the SFT build resumes from its checkpoints, the runs
and the analysis skip what is stored). Results go to ``results/<preset>/``: each stage's report
(``report.html``, ``.md``, ``.json``), the analysis, and an index (``README.md``, ``results.json``)
with the paper's published figures beside ours and the time each stage took.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from .backends.base import Backend
from .errors import InputError
from .experiment.config import ExperimentConfig, _Strict, _validate, composed, load_config
from .experiment.signature import content_hash

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "presets"
# The paper's figures (Zhan et al. 2024, Llama2-7B / Mistral-7B, Flores-101, 8 languages): the base
# model's score as % of its SFT counterpart's, per prior; and the share of SFT-chosen tokens within the
# base model's top 10 (the "silent majority").
PAPER_PERCENT_OF_SFT = {"none": 52.5, "pseudo": 85.4, "refined": 98.8}
PAPER_SILENT_MAJORITY = 90.8


class PresetConfig(_Strict):
    """``[reproduce]`` of a preset file. Paths are relative to the preset file."""

    sft: str | None = None                          # the SFT build config (None: --sft is required)
    sft_set: dict[str, Any] = Field(default_factory=dict)   # overrides of the SFT build config
    stages: list[str] = Field(min_length=1)         # experiment configs; the first one is also analysed
    n: int | None = Field(None, ge=1)               # examples per language in every stage (None: the configs')
    analysis_n: int | None = Field(None, ge=1)      # examples per language in the analysis (0 stages: none)
    analysis: bool = True
    crosssum: str | None = None                     # a summarization stage run when --crosssum gives the data
    store: str                                      # the one store of every stage
    results: str                                    # where the reports and the index go


class _PresetFile(_Strict):
    reproduce: PresetConfig


def _is_preset(path: Path) -> bool:
    """A preset file has a ``[reproduce]`` table (the stage configs beside it have none)."""
    import tomllib

    try:
        return "reproduce" in tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError:
        return False


def load_preset(name_or_path: str) -> tuple[PresetConfig, Path]:
    """A preset by name (``configs/presets/<name>.toml``) or path, validated; relative paths resolved."""
    path = Path(name_or_path)
    if not path.suffix:   # a name: the checkout's presets (or the working directory's configs/presets)
        here = Path.cwd() / "configs" / "presets" / f"{name_or_path}.toml"
        path = here if here.is_file() else PRESETS / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.toml") if _is_preset(p)))
        raise InputError(f"no preset '{name_or_path}'; presets: {known or 'none'}", field="--preset")
    preset = _validate(_PresetFile, composed(path, path_keys=set()), path).reproduce
    here = lambda p: str((path.parent / p).resolve())   # noqa: E731  (absolute paths stay as they are)
    return preset.model_copy(update={"sft": preset.sft and here(preset.sft), "stages": [here(s) for s in preset.stages],
                                     "crosssum": preset.crosssum and here(preset.crosssum),
                                     "store": here(preset.store), "results": here(preset.results)}), path


@dataclass
class Stage:
    name: str
    seconds: float | None = 0.0     # None: unknown (a re-render of rows whose run's times are lost)
    produced: int = 0
    total: int = 0
    note: str = ""
    report: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Reproduction:
    preset: str
    results: Path
    stages: list[Stage] = field(default_factory=list)
    seconds: float = 0.0


def _stage_config(path: Path, preset: PresetConfig, *, base: str | None, reference: dict[str, Any],
                  data: dict[str, str]) -> ExperimentConfig:
    """A stage's experiment config with the preset's store, sizes and models applied (and, for the
    stages named in ``data``, the task's data path)."""
    overrides: dict[str, Any] = {"store": str(Path(preset.store).resolve()),
                                 "report_dir": str(Path(preset.results).resolve() / path.stem)}
    if str(path) in data:
        overrides["task.data"] = data[str(path)]
    if preset.n is not None:
        overrides["task.n"] = preset.n
    if base:
        overrides["base.model"] = base
    overrides.update({f"reference.{k}": v for k, v in reference.items()})
    return load_config(path, overrides)


def _counterpart(preset: PresetConfig, sft: str | None, base: str | None, progress: bool,
                 log: Callable[[str], None]) -> tuple[dict[str, Any], Stage]:
    """The reference (SFT) model's config fields, building the counterpart when needed."""
    stage = Stage("sft")
    start = time.time()
    if sft:
        path = Path(sft)
        if (path / "adapter_config.json").is_file():   # a LoRA adapter of the base model
            stage.note = f"adapter given: {path}"
            return {"adapter": str(path.resolve())}, stage
        stage.note = f"model given: {sft}"
        return {"model": sft, "adapter": None, "chat": None, "dtype": "bfloat16"}, stage
    if preset.sft is None:
        raise InputError("this preset builds no SFT counterpart: give one with --sft (an adapter directory or "
                         "an instruct model)", field="--sft")
    from .sft.config import load_sft_config
    from .sft.train import build_sft

    overrides = dict(preset.sft_set)
    if base:
        overrides["base.model"] = base
    cfg = load_sft_config(preset.sft, overrides)
    log(f"SFT counterpart: building {cfg.output_path} (resumes from its checkpoints)")
    result = build_sft(cfg, progress=progress)
    stage.seconds = time.time() - start
    stage.produced = result.state.step - (result.resumed_from or 0)
    stage.total = result.state.step
    stage.note = (f"{result.state.step} steps, best validation loss {result.state.best_val:.4f}, "
                  f"{result.split_sizes['train']} training examples")
    return {"adapter": str(Path(result.adapter_dir).resolve())}, stage


def _shared_backends() -> Callable[..., Backend]:
    """``load_backend`` that loads each (backend, model, options) once for all stages: the base model
    and the SFT counterpart (merged with its adapter) serve every stage and the analysis."""
    from .backends import load_backend

    loaded: dict[str, Backend] = {}

    def factory(name: str, model: str, **options: Any) -> Backend:
        key = content_hash({"name": name, "model": model, "options": options})
        if key not in loaded:
            loaded[key] = load_backend(name, model, **options)
        return loaded[key]

    return factory


def _stage_paths(preset: PresetConfig, crosssum: str | None) -> tuple[list[Path], dict[str, str]]:
    """The preset's stage configs (its CrossSum stage too when ``crosssum`` gives the data) and the
    data overrides by stage path."""
    paths = [Path(s) for s in preset.stages]
    if not crosssum:
        return paths, {}
    path, data = _crosssum_stage(preset, crosssum)
    return [*paths, path], data


def _crosssum_stage(preset: PresetConfig, pattern: str) -> tuple[Path, dict[str, str]]:
    """The preset's CrossSum stage and its data override, refused unless the preset has one."""
    if preset.crosssum is None:
        raise InputError("this preset has no CrossSum stage (its [reproduce] sets no 'crosssum')", field="--crosssum")
    if "{" not in pattern:
        raise InputError(f"'{pattern}' names no language: give a path pattern with {{tgt_iso1}} or {{tgt}} (and "
                         "{src_iso1}/{src}), e.g. 'crosssum/{src_iso1}-{tgt_iso1}.jsonl'", field="--crosssum")
    path = Path(preset.crosssum)
    return path, {str(path): str(Path(pattern).expanduser().resolve())}


def _check_data(cfg: ExperimentConfig) -> None:
    """Every data file the stage reads exists, before any model is built or loaded."""
    from .experiment.runner import build_task
    from .languages import get_language

    try:
        build_task(cfg).check_data([get_language(t) for t in cfg.task.targets])
    except InputError as e:
        raise InputError(f"stage '{cfg.name}': {e.message}", field=e.field) from None


def _rows_made_by(reports: dict[str, Any]) -> dict[str, set[str]]:
    """Per stage report, the code revisions that made its rows."""
    return {name: {str(r["revision"]) for r in ((rep.get("code") or {}).get("rows") or [])}
            for name, rep in reports.items() if isinstance(rep, dict)}


def _timings(results: Path) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """The stages of the last index (``results.json``) by name, and the revisions that made each
    stage's rows then: a re-render keeps a stage's time only for the same rows."""
    try:
        index = json.loads((results / "results.json").read_text())
    except (OSError, ValueError):
        return {}, {}
    return {s["name"]: s for s in index.get("stages", [])}, _rows_made_by(index.get("reports") or {})


def rerender(preset_name: str, *, crosssum: str | None = None, log: Callable[[str], None] = print) -> Reproduction:
    """Rewrite ``results/<preset>/`` from the store alone: every stage's report and the index, with
    the current report code, loading no model and running nothing. The stage times are the ones the
    last index recorded (an index that ran nothing would otherwise say 0 s), kept only where they
    describe the same rows: a stage whose rows were made by other code since, and the ``sft`` stage
    unless every stage's rows are the same, gets no time ("-") instead of a stale one."""
    from .analysis.report import write_analysis_report
    from .experiment.report import write_report
    from .experiment.store import Store

    preset, path = load_preset(preset_name)
    if not Path(preset.store).is_file():
        raise InputError(f"no store at {preset.store}: run the preset first", field="--report-only")
    repro = Reproduction(path.stem, Path(preset.results))
    before, made_before = _timings(repro.results)

    def kept(name: str, same: bool) -> Stage:   # the stage as the last index recorded it, if its rows
        old = before.get(name, {})
        if not same:
            return Stage(name, seconds=None, note="time unknown: the rows were made by another run than "
                                                  "the last index describes")
        return Stage(name, **{k: old[k] for k in ("seconds", "produced", "total", "note") if k in old})

    store = Store(Path(preset.store))
    stage_paths, data = _stage_paths(preset, crosssum)
    configs = [_stage_config(p, preset, base=None, reference={}, data=data) for p in stage_paths]
    runs = set(store.runs())
    for cfg in configs:
        if cfg.name not in runs:
            log(f"{cfg.name}: not in the store, left out")
            continue
        stage = Stage(cfg.name)
        _, stage.report = write_report(store, cfg.name, cfg.report_path)
        repro.stages.append(stage)
    if preset.analysis and store.analysis_positions(configs[0].name):
        stage, a = Stage("analysis"), configs[0].analysis
        _, stage.report = write_analysis_report(store, configs[0].name, repro.results / "analysis", priors=a.priors,
                                                top_k=a.top_k, max_positions=a.max_positions)
        repro.stages.append(stage)
    made_now = _rows_made_by({s.name: s.report for s in repro.stages})
    same = {name: name in made_before and revs == made_before[name] for name, revs in made_now.items() if revs}
    same_all = bool(same) and all(same.values())   # for the sft stage and reports without row revisions
    for i, s in enumerate(repro.stages):
        repro.stages[i] = replace(kept(s.name, same.get(s.name, same_all)), report=s.report)
    repro.stages.insert(0, kept("sft", same_all))
    log(f"re-rendered {', '.join(s.name for s in repro.stages[1:])} into {repro.results}")
    repro.seconds = sum(x.seconds or 0.0 for x in repro.stages)
    write_index(repro, preset_name, rendered_only=True)
    return repro


def reproduce(preset_name: str, *, base: str | None = None, sft: str | None = None, crosssum: str | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> Reproduction:
    """Run (or resume) every stage of a preset and write ``results/<preset>/``. ``crosssum``: a path
    pattern of CrossSum JSONL pairs, which adds the preset's CrossSum stage."""
    from .analysis.report import write_analysis_report
    from .analysis.run import Analysis
    from .experiment.report import write_report
    from .experiment.runner import Runner

    preset, path = load_preset(preset_name)
    out = Path(preset.results)
    out.mkdir(parents=True, exist_ok=True)
    repro = Reproduction(path.stem, out)
    start = time.time()
    # Every stage config is read and validated before anything is built or loaded.
    stage_paths, data = _stage_paths(preset, crosssum)
    placeholder = {"adapter": None} if sft else {}
    configs = [_stage_config(p, preset, base=base, reference=placeholder, data=data) for p in stage_paths]
    for cfg0 in configs:
        _check_data(cfg0)
    reference, sft_stage = _counterpart(preset, sft, base, progress, log)
    repro.stages.append(sft_stage)
    factory = _shared_backends()
    for stage_path, cfg0 in zip(stage_paths, configs):
        stage = Stage(cfg0.name)
        cfg = _stage_config(stage_path, preset, base=base, reference=reference, data=data)
        needs = [p.command for p in cfg.priors if p.strategy == "command"]
        if needs and shutil.which(str(needs[0]).split()[0]) is None:
            stage.note = f"skipped: {str(needs[0]).split()[0]} is not installed"
            log(f"{stage.name}: {stage.note}")
            repro.stages.append(stage)
            continue
        t0 = time.time()
        log(f"{stage.name}: running (resumable)")
        runner = Runner(cfg, backend_factory=factory)
        summary = runner.run(progress=progress)
        _, stage.report = write_report(runner.store, cfg.name, cfg.report_path)
        stage.seconds, stage.produced, stage.total = time.time() - t0, summary.produced, summary.total
        repro.stages.append(stage)
    if preset.analysis:
        stage = Stage("analysis")
        t0 = time.time()
        cfg = _stage_config(stage_paths[0], preset, base=base, reference=reference, data=data)
        cfg = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"n": preset.analysis_n})})
        log("analysis: decision space of the base and SFT models (resumable)")
        analysis = Analysis(cfg, backend_factory=factory)
        summary = analysis.run(progress=progress)
        a = cfg.analysis
        _, stage.report = write_analysis_report(analysis.store, cfg.name, out / "analysis", priors=a.priors,
                                                top_k=a.top_k, max_positions=a.max_positions)
        stage.seconds, stage.produced, stage.total = time.time() - t0, summary.produced, summary.examples
        repro.stages.append(stage)
    repro.seconds = time.time() - start
    write_index(repro, preset_name)
    return repro


# -- the index --------------------------------------------------------------------------------------
def _strategy(res: dict[str, Any], cond: str) -> str | None:
    entries = res["condition_signatures"].get(cond) or [{}]
    prior = (entries[0].get("signature") or {}).get("prior") or {}
    return prior.get("strategy")


def paper_comparison(res: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Per condition of a translation report: our % of SFT (ratio of means of ``metric``) and the
    paper's figure for its prior strategy, where the paper has one (none, pseudo, refined)."""
    out = []
    for cond in res["conditions"]:
        if cond == "reference":
            continue
        strategy = _strategy(res, cond)
        paper_key = "refined" if strategy in ("command", "refined", "translation-refined") else strategy
        out.append({"condition": cond, "ours": res["means"][cond].get(f"% ref {metric}"),
                    "paper": PAPER_PERCENT_OF_SFT.get(paper_key or "")})
    return out


def _agreement(rows: list[dict[str, Any]]) -> str:
    """One sentence on where our % of SFT agrees with the paper's (within 10 points) and where not."""
    both = [r for r in rows if r["paper"] is not None and r["ours"] is not None]
    if not both:
        return "The paper has no figure for these conditions."
    near = [r["condition"] for r in both if abs(r["ours"] - r["paper"]) <= 10]
    far = [f"{r['condition']} ({r['ours']:.1f}% vs {r['paper']}%)" for r in both if abs(r["ours"] - r["paper"]) > 10]
    parts = []
    if near:
        parts.append(f"within 10 points of the paper: {', '.join(near)}")
    if far:
        parts.append(f"further from it: {', '.join(far)}")
    return "Ours vs the paper: " + "; ".join(parts) + "."


def write_index(repro: Reproduction, preset_name: str, *, rendered_only: bool = False) -> Path:
    """``results/<preset>/README.md`` and ``results.json``: stage times, the paper's tables beside ours.
    ``rendered_only``: a re-render (``--report-only``), whose stage times are the last run's."""
    from .experiment.report import _fmt, _ratio_cell, _table
    from .experiment.signature import code_revision

    made = sorted({str(r["revision"]) for s in repro.stages for r in ((s.report.get("code") or {}).get("rows") or [])})
    how = (f"Rendered by code revision `{code_revision()}` from the store, without running anything "
           f"(`--report-only`); the stage times are those of the run that produced the rows"
           if rendered_only else f"Code revision `{code_revision()}`")
    lines = [f"# pretty-align reproduce --preset {preset_name}", "",
             f"{how}; regenerate with `pretty-align reproduce --preset {preset_name}`."
             + (f" Rows made by: {', '.join(f'`{m}`' for m in made)}." if made else ""),
             "Each stage's full report (tables with confidence intervals, plots, the example browser, "
             "signatures) is `<stage>/report.html`.", ""]
    index: dict[str, Any] = {"preset": preset_name, "code_revision": code_revision(),
                             "seconds": repro.seconds, "stages": []}
    lines += ["## Stages", ""] + _table(
        ["stage", "rows produced now / planned", "seconds (this invocation)", "note"],
        [[s.name, f"{s.produced}/{s.total}", "-" if s.seconds is None else f"{s.seconds:.0f}", s.note]
         for s in repro.stages])
    for s in repro.stages:
        index["stages"].append({"name": s.name, "seconds": s.seconds, "produced": s.produced, "total": s.total,
                                "note": s.note})
    for s in repro.stages:
        res = s.report
        if not res or "conditions" not in res:
            continue
        metric = res["ratio_metrics"][-1] if res.get("ratio_metrics") else None
        lines += ["", f"## {s.name} ({res['task']}, {res['complete']} rows): % of the SFT counterpart", ""]
        if metric is None or "reference" not in res["conditions"]:
            lines.append("(no reference model in this stage)")
            continue
        rows = paper_comparison(res, metric)
        paper = res["task"] == "translation"
        header = ["condition", f"% of SFT ({metric}, ratio of means)"] + (["paper"] if paper else []) + res["targets"]
        lines += _table(header, [[r["condition"], _fmt(r["ours"])] + ([_fmt(r["paper"])] if paper else [])
                                 + [_ratio_cell(res["cells"][r["condition"]].get(t, {}), f"% ref {metric}", t, res)
                                    for t in res["targets"]] for r in rows])
        if paper:
            lines += ["", "Paper: Llama2-7B / Mistral-7B on Flores-101, 8 languages (none 52.5%, dictionary prior "
                      "85.4%, refined prior 98.8% of SFT). " + _agreement(rows)]
    analysis = next((s for s in repro.stages if s.name == "analysis" and s.report), None)
    if analysis:
        res = analysis.report
        k = res["top_k"]
        row = res["table"]["all"]
        lines += ["", "## Decision space: the silent majority", "",
                  f"Share of the SFT model's tokens within the base model's top {k} (all languages; "
                  f"paper: {PAPER_SILENT_MAJORITY}%):", ""]
        lines += _table(["prior tokens given", f"rank <= {k} %", "rank 1 %", "mean KL"],
                        [[str(p), _fmt(row[p].get(f"rank <= {k} %")), _fmt(row[p].get("rank 1 %")),
                          _fmt(row[p].get("mean KL"))] for p in res["priors"]])
        index["silent_majority"] = {str(p): row[p].get(f"rank <= {k} %") for p in res["priors"]}
    index["paper"] = {"percent_of_sft": PAPER_PERCENT_OF_SFT, "silent_majority": PAPER_SILENT_MAJORITY}
    index["reports"] = {s.name: s.report for s in repro.stages if s.report}
    (repro.results / "results.json").write_text(json.dumps(index, indent=1, ensure_ascii=False, default=str))
    md = repro.results / "README.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md
