"""Reports: per language and condition BLEU, chrF++, off-target %, % of the reference model, and
mean rows, with every number's signature. Rendered from the store alone, so a report can be
re-made at any time (``pretty-align report``) and shows how complete the run is."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean
from typing import Any, Sequence

from ..languages import get_language
from ..metrics import report_metrics
from ..metrics.base import Metric
from ..tasks import TASKS
from .signature import METRIC_PACKAGES, compact_signature, package_versions
from .store import Store

REFERENCE = "reference"   # the reference (SFT) model's own answers: the runner's condition label


def _metrics(task: str = "translation", comet_checkpoint: str | None = None,
             langid_langs: list[str] | None = None) -> list[tuple[str, Metric]]:
    """(label, metric) of the report of a ``task`` run: the task's own metric set (``Task.metrics``)."""
    return report_metrics(TASKS.get(task).metrics, comet_checkpoint=comet_checkpoint, langid_langs=langid_langs)


def compute(store: Store, run: str, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """All numbers of a run: per (condition, tgt) scores, ratios to the reference, means.
    ``rows``: the run's rows when the caller has read them already."""
    config = store.run_config(run)
    rows = store.rows(run) if rows is None else rows
    expected = store.manifest_size(run)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["condition"], r["tgt"])].append(r)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    targets = list(dict.fromkeys(r["tgt"] for r in rows))
    mcfg = config.get("metrics") or {}
    task = (config.get("task") or {}).get("name", "translation")
    metrics = _metrics(task, mcfg.get("comet_checkpoint"), mcfg.get("langid_langs"))
    ratio_metrics = TASKS.get(task).ratio_metrics
    cells: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    signatures: dict[str, set[str]] = defaultdict(set)
    for (cond, tgt_code), rs in groups.items():
        tgt = get_language(tgt_code)
        hyps, refs = [r["output"] for r in rs], [r["reference"] or "" for r in rs]
        cell: dict[str, Any] = {"n": len(rs)}
        for label, m in metrics:
            score = m.corpus_score(hyps, refs, tgt, sources=[r["source"] for r in rs])
            cell[label] = score.value          # unrounded: ratios and means are computed from it
            signatures[label].add(score.signature)
            if "confusion" in score.extra:   # POS: gold>predicted counts, for the per-tag table
                cell["confusion"] = score.extra["confusion"]
        cell["prior fallback %"] = 100.0 * mean(r["prior_fell_back"] for r in rs)
        cell["truncated"] = sum(r["truncated"] for r in rs)   # inputs cut to fit max_prompt_tokens
        cell["new tokens"] = mean(r["new_tokens"] for r in rs)
        cell["stops"] = dict(sorted(Counter(r["stop_reason"] for r in rs).items()))
        shares = [r["provenance"]["helper_share"] for r in rs if "helper_share" in (r.get("provenance") or {})]
        if shares:   # a dynamic prior: the share of output tokens its helper supplied, and rewrote
            cell["helper share %"] = 100.0 * mean(shares)
            changed = [r["provenance"].get("changed_share") for r in rs
                       if "helper_share" in (r.get("provenance") or {})]
            if all(c is not None for c in changed):   # rows made before it was recorded have none
                cell["helper changed %"] = 100.0 * mean(changed)
        cells[cond][tgt_code] = cell
    agreement = _agreement(groups, conditions, targets)
    model_sigs = _condition_signatures(rows)
    significance = _significance(groups, cells, conditions, targets, metrics, model_sigs)
    means = {cond: _means(list(cells[cond].values())) for cond in conditions}
    floor = float(mcfg.get("ratio_floor", 1.0))
    below = ref_ratios(cells, means, ratio_metrics, floor)
    return {"run": run, "task": task, "metrics": [label for label, _ in metrics], "ratio_metrics": list(ratio_metrics),
            "complete": f"{len(rows)}/{expected}", "conditions": conditions, "targets": targets,
            "cells": cells, "means": means, "ratio_floor": floor, "ratio_below_floor": below,
            "metric_signatures": {k: sorted(v) for k, v in signatures.items()},
            "condition_signatures": model_sigs, "metric_packages": package_versions(METRIC_PACKAGES),
            "code": _code(rows, config), "warnings": _warnings(model_sigs), "significance": significance,
            "agreement": agreement}


AGREEMENT_POSITIONS = 10   # positions shown in the free-running agreement tables


def _agreement(groups: dict[tuple[str, str], list[dict]], conditions: list[str],
               targets: list[str]) -> dict[str, dict[str, Any]]:
    """Free-running agreement (``metrics.agreement``) of each base condition's outputs with the
    reference model's outputs on the same examples, per language and over all of them; {} without
    a reference condition."""
    from ..metrics.agreement import agreement

    if REFERENCE not in conditions:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        if cond == REFERENCE:
            continue
        pairs: dict[str, tuple[list[str], list[str]]] = {}
        for tgt in targets:
            sft = {r["example_id"]: r["output"] for r in groups.get((REFERENCE, tgt), [])}
            mine = [r for r in groups.get((cond, tgt), []) if r["example_id"] in sft]
            if mine:
                pairs[tgt] = ([r["output"] for r in mine], [sft[r["example_id"]] for r in mine])
        per = {tgt: agreement(h, s, get_language(tgt), max_positions=AGREEMENT_POSITIONS)
               for tgt, (h, s) in pairs.items()}
        if per:
            total = sum(a["tokens"] for a in per.values())
            per["all"] = {k: round(sum(a[k] * a["tokens"] for a in per.values() if a[k] is not None) / total, 1)
                          if total else None for k in ("exact %", "aligned %")}
            per["all"]["tokens"] = total
            out[cond] = per
    return out


ALPHA = 0.05          # significance level of the marks in the tables
BOOTSTRAP_SAMPLES = 1000


def _condition_signatures(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every distinct signature of each condition with the targets it covers: a condition's
    signature can differ per target (each language's dictionary hash), so not whichever came last."""
    sigs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        entries = sigs[r["condition"]]
        entry = next((e for e in entries if e["signature"] == r["signature"]), None)
        if entry is None:
            entries.append({"targets": [r["tgt"]], "signature": r["signature"]})
        elif r["tgt"] not in entry["targets"]:
            entry["targets"].append(r["tgt"])
    return sigs


def _significance(groups: dict[tuple[str, str], list[dict]], cells: dict[str, dict[str, dict[str, Any]]],
                  conditions: list[str], targets: list[str], metrics: list[tuple[str, Metric]],
                  sigs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Paired bootstrap (sacrebleu) per language and metric, against the no-prior condition and
    against the reference model: adds ``ci`` (95%), ``p vs none`` and ``p vs reference`` to each
    cell (``ci``: the bootstrap mean and the half-width of its 95% interval). Only languages whose
    conditions all cover the same examples are tested."""
    none = next((c for c in conditions if (sigs[c][0]["signature"].get("prior") or {}).get("strategy") == "none"),
                None)
    baselines = [b for b in (none, "reference") if b in conditions]
    testable = [(label, m) for label, m in metrics if hasattr(m, "paired_bootstrap")]
    signatures: dict[str, set[str]] = defaultdict(set)   # BLEU's tokenizer differs per language
    for tgt in targets:
        rows = {c: sorted(groups.get((c, tgt), []), key=lambda r: r["idx"]) for c in conditions}
        ids = [r["example_id"] for r in rows[conditions[0]]]
        if not baselines or any([r["example_id"] for r in rs] != ids for rs in rows.values()):
            continue
        systems = {c: [r["output"] for r in rs] for c, rs in rows.items()}
        refs = [r["reference"] or "" for r in rows[conditions[0]]]
        for label, metric in testable:
            for baseline in baselines:
                signature, out = metric.paired_bootstrap(systems, refs, get_language(tgt), baseline,
                                                         BOOTSTRAP_SAMPLES)
                signatures[label].add(signature)
                for cond, r in out.items():
                    cell = cells[cond][tgt]
                    cell.setdefault("ci", {})[label] = {"mean": r["mean"], "ci": r["ci"]}
                    role = "none" if baseline == none else "reference"
                    cell.setdefault(f"p vs {role}", {})[label] = r["p"]
    return {"baselines": {"none": none, "reference": "reference" if "reference" in conditions else None},
            "metrics": [label for label, _ in testable], "alpha": ALPHA, "resamples": BOOTSTRAP_SAMPLES,
            "signatures": {label: sorted(s) for label, s in signatures.items()}}


def _means(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric column, the mean over languages (counts such as ``truncated`` are summed)."""
    keys = list(dict.fromkeys(k for c in cells for k, v in c.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"))
    # A language a metric cannot judge (None: off-target "not covered") is left out of its mean.
    out: dict[str, Any] = {k: mean(vals) for k in keys
                           if (vals := [c[k] for c in cells if isinstance(c.get(k), (int, float))])}
    out["truncated"] = sum(c.get("truncated", 0) for c in cells)
    return out


def ref_ratios(cells: dict[str, dict[str, dict[str, Any]]], means: dict[str, dict[str, Any]],
               metrics: Sequence[str], floor: float) -> dict[str, list[str]]:
    """Add "% ref <metric>" to every cell and mean, from unrounded scores, and return the
    languages whose reference scores below ``floor`` per metric.

    The mean's ratio is the ratio of means, 100 * mean(condition) / mean(reference) over the same
    languages as the metric columns, so no language drops out of it and a near-zero reference in
    one language cannot blow it up. A per-language ratio is None (shown "n/a") where the reference
    scores below ``floor``; so is the mean's where the reference mean does.
    """
    ref = cells.get("reference")
    below: dict[str, list[str]] = {}
    if not ref:
        return below
    for m in metrics:
        below[m] = [t for t, c in ref.items() if c[m] < floor]
        for cond, by_tgt in cells.items():
            for tgt, cell in by_tgt.items():
                base = ref[tgt][m] if tgt in ref else None
                cell[f"% ref {m}"] = 100 * cell[m] / base if base is not None and base >= floor else None
            shared = [t for t in by_tgt if t in ref]
            ref_mean = mean(ref[t][m] for t in shared) if shared else 0.0
            means[cond][f"% ref {m}"] = (100 * mean(by_tgt[t][m] for t in shared) / ref_mean
                                         if ref_mean >= floor and ref_mean > 0 else None)
    return below


def _code(rows: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Which code made the rows of the run: the run's own, and any other (reused with --reuse-from)."""
    counts = Counter((r.get("code_revision") or "unknown", (r["signature"].get("code") or {}).get("source_sha256"))
                     for r in rows)
    mine = (config.get("code") or {}).get("source_sha256")
    return {"run": config.get("code_revision"), "source_sha256": mine, "reuse_from": config.get("reuse_from"),
            "rows": [{"revision": rev, "source_sha256": sha, "rows": n, "this_run": sha == mine}
                     for (rev, sha), n in counts.most_common()]}


def _warnings(model_sigs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What a reader must know about the rows' provenance (e.g. weights that cannot be identified)."""
    out = []
    for cond, entries in model_sigs.items():
        for e in entries:
            m = e["signature"].get("model") or {}
            if m.get("backend") == "openai" and not m.get("revision") and not m.get("sha256"):
                msg = (f"{cond}: openai-served model '{(m.get('served') or {}).get('id') or m.get('model')}' has "
                       "neither a revision nor a sha256 (backend options `revision`, `sha256`); its results "
                       "cannot be tied to exact weights")
                if msg not in out:
                    out.append(msg)
    return out


def _fmt(v: Any) -> str:
    """Display form: one decimal for floats (the store and report.json keep full precision)."""
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _ratio_cell(cell: dict[str, Any], col: str, tgt: str, res: dict[str, Any]) -> str:
    """A "% ref" value, or why it has none (the reference scores below the floor)."""
    metric = col[len("% ref "):]
    if cell.get(col) is None and tgt in res.get("ratio_below_floor", {}).get(metric, []):
        return f"n/a (ref < {res['ratio_floor']:g})"
    return _fmt(cell.get(col))


def _marked(cell: dict[str, Any], metric: str, alpha: float) -> str:
    """The score with * (differs from no prior) and † (differs from the reference) at p < alpha."""
    marks = "".join(sym for key, sym in (("p vs none", "*"), ("p vs reference", "†"))
                    if (p := (cell.get(key) or {}).get(metric)) is not None and p < alpha)
    return _fmt(cell.get(metric)) + marks


def _ci(cell: dict[str, Any], metric: str) -> str:
    ci = (cell.get("ci") or {}).get(metric)
    return f"±{ci['ci']:.1f}" if ci else "-"


def to_markdown(res: dict[str, Any]) -> str:
    truncated = any(c.get("truncated") for cs in res["cells"].values() for c in cs.values())
    has_ref = "reference" in res["conditions"]
    ratio_cols = [f"% ref {m}" for m in res["ratio_metrics"]] if has_ref else []
    sig = res.get("significance") or {}
    tested = [m for m in sig.get("metrics", []) if any("ci" in c for cs in res["cells"].values() for c in cs.values())]
    ci_cols = [f"{m} 95% CI" for m in tested]
    cols = list(res["metrics"]) + ci_cols + ratio_cols + ["prior fallback %"] + (["truncated"] if truncated else []) + ["n"]

    def show(cell: dict[str, Any], col: str, tgt: str) -> str:
        if col in ratio_cols:
            return _ratio_cell(cell, col, tgt, res)
        if col in ci_cols:
            return _ci(cell, col[:-len(" 95% CI")])
        return _marked(cell, col, sig["alpha"]) if col in tested else _fmt(cell.get(col))

    lines = [f"# pretty-align report: {res['run']}", "", f"Results stored: {res['complete']}", ""]
    lines += [f"**Warning:** {w}" for w in res.get("warnings", [])] + ([""] if res.get("warnings") else [])
    ref = res["condition_signatures"].get("reference")
    if ref:   # say which model "% ref" is relative to (e.g. a LoRA SFT counterpart)
        m = ref[0]["signature"].get("model", {})
        adapter = f" + LoRA adapter `{m['adapter_sha256'][:16]}`" if m.get("adapter_sha256") else ""
        lines += [f"Reference model (\"% ref\"): `{m.get('model', '?')}`{adapter}", ""]
    for tgt in res["targets"]:
        body = [[cond] + [show(cell, c, tgt) for c in cols]
                for cond in res["conditions"] if (cell := res["cells"][cond].get(tgt))]
        lines += [f"## {tgt}", ""] + _table(["condition"] + cols, body) + [""]
        if "off-target %" in cols and all(res["cells"][c].get(tgt, {}).get("off-target %") is None
                                          for c in res["conditions"] if tgt in res["cells"][c]):
            lines += [f"off-target %: not covered: the language identifier does not know {tgt} (it is left out of "
                      "the mean over languages).", ""]
    if tested:
        lines += [f"{', '.join(tested)}: * differs from no prior (`{sig['baselines']['none']}`), † from the "
                  f"reference, at p < {sig['alpha']:g}; 95% CI: paired bootstrap over sentences, {sig['resamples']} "
                  f"resamples, shown as ± the half-width around the bootstrap mean (sacrebleu: "
                  + "; ".join(f"`{v}`" for vs in sig["signatures"].values() for v in vs) + ").", ""]
    mcols = [c for c in cols if c not in ["n", *ci_cols]]
    lines += ["## Mean over languages", ""]
    if has_ref:
        lines += [f"% ref = 100 x mean(condition) / mean(reference) over the {len(res['targets'])} languages "
                  "(ratio of means); per-language ratios are in the next table.", ""]
    lines += _table(["condition"] + mcols, [[cond] + [_fmt(res["means"][cond].get(c)) for c in mcols]
                                            for cond in res["conditions"]])
    for col in ratio_cols:
        lines += ["", f"### {col}, per language", ""]
        lines += _table(["condition", "mean (ratio of means)"] + res["targets"],
                        [[cond, _fmt(res["means"][cond].get(col))]
                         + [_ratio_cell(res["cells"][cond].get(tgt, {}), col, tgt, res) for tgt in res["targets"]]
                         for cond in res["conditions"]])
        low = res["ratio_below_floor"].get(col[len("% ref "):])
        if low:
            lines += ["", f"n/a: the reference scores below {res['ratio_floor']:g} in {', '.join(low)}, where a "
                      "ratio says nothing (metrics.ratio_floor sets the floor); those languages still count in "
                      "the ratio of means."]
    lines += _per_tag_lines(res) + _dynamic_lines(res) + _agreement_lines(res) + _code_lines(res.get("code"))
    lines += ["", "## Signatures", "", "Metrics:"]
    for label, sigs in res["metric_signatures"].items():
        lines += [f"- {label}: `{s}`" for s in sigs]
    lines += [f"- metric packages: `{json.dumps(res['metric_packages'], sort_keys=True)}`", "", "Conditions:"]
    for cond, entries in res["condition_signatures"].items():
        for e in entries:
            where = f" ({', '.join(e['targets'])})" if len(entries) > 1 else ""
            lines.append(f"- {cond}{where}: `{compact_signature(e['signature'])}`")
    lines += ["", "(Compact forms; the full signatures are in report.json and report.html.)"]
    return "\n".join(lines) + "\n"


def dynamic_conditions(res: dict[str, Any]) -> list[str]:
    """Conditions whose rows carry a helper share (the ``dynamic`` prior)."""
    return [c for c in res["conditions"] if "helper share %" in res["means"].get(c, {})]


def _dynamic_lines(res: dict[str, Any]) -> list[str]:
    conds = dynamic_conditions(res)
    if not conds:
        return []
    ratio = [f"% ref {m}" for m in res["ratio_metrics"]]
    lines = ["", "## Dynamic prior: quality against the helper's share", "",
             f"{DYNAMIC_NOTE} (Mean over rows, then over languages.)", ""]
    return lines + _table(["condition", "helper share %", "helper changed %"] + ratio,
                          [[c, _fmt(res["means"][c]["helper share %"]), _fmt(res["means"][c].get("helper changed %"))]
                           + [_fmt(res["means"][c].get(r)) for r in ratio] for c in conds])


DYNAMIC_NOTE = ("Helper share % = the share of output tokens the helper model supplied; helper changed % = the "
                "share it supplied where its token differs from the base model's own greedy choice (elsewhere "
                "the base model would have written the same token).")


AGREEMENT_NOTE = ("Free-running agreement with the reference model's output: the share of the reference output's "
                  "tokens (sacrebleu's BLEU tokenization of the target language) that the condition's own output "
                  "has at the same position (exact) or inside the matching blocks of the two sequences (aligned, "
                  "difflib). The teacher-forced view of the same question is the decision-space analysis.")


def shown_agreement(res: dict[str, Any]) -> dict[str, Any]:
    """The agreement figures of the conditions ``res`` shows (none without the reference)."""
    if REFERENCE not in res["conditions"]:
        return {}
    return {c: per for c, per in (res.get("agreement") or {}).items() if c in res["conditions"]}


def _agreement_lines(res: dict[str, Any]) -> list[str]:
    agree = shown_agreement(res)
    if not agree:
        return []
    targets = res["targets"]
    lines = ["", "## Free-running agreement with the reference output", "", AGREEMENT_NOTE, "",
             "Aligned % per language, and exact / aligned % over all reference tokens:", ""]
    lines += _table(["condition"] + targets + ["all exact %", "all aligned %"],
                    [[c] + [_fmt(per.get(t, {}).get("aligned %")) for t in targets]
                     + [_fmt(per["all"]["exact %"]), _fmt(per["all"]["aligned %"])] for c, per in agree.items()])
    lines += ["", "Exact % by position (1-based) of the reference output, mean over languages:", ""]
    positions = list(range(1, AGREEMENT_POSITIONS + 1))
    lines += _table(["condition"] + [str(p) for p in positions],
                    [[c] + [_fmt(position_mean(per, p)) for p in positions] for c, per in agree.items()])
    return lines


def position_mean(per: dict[str, Any], position: int, key: str = "exact %") -> float | None:
    """``key`` at a 1-based position, averaged over the languages that reach it (weighted by n)."""
    cells = [a["by_position"].get(position) or a["by_position"].get(str(position))
             for t, a in per.items() if t != "all"]
    cells = [c for c in cells if c and c["n"]]
    n = sum(c["n"] for c in cells)
    return round(sum(c[key] * c["n"] for c in cells) / n, 1) if n else None


def _code_lines(code: dict[str, Any] | None) -> list[str]:
    """Which code made the rows; rows of other code than the run's are called out."""
    if not code or not code["rows"]:
        return []
    lines = ["", "## Code", ""]
    lines += [f"- `{c['revision']}` (source `{c['source_sha256']}`): {c['rows']} rows"
              + ("" if c["this_run"] else " **made by other code than this run's**") for c in code["rows"]]
    other = sum(c["rows"] for c in code["rows"] if not c["this_run"])
    if other:
        how = f"reused with --reuse-from {code['reuse_from']}" if code.get("reuse_from") else "from an earlier run"
        lines += ["", f"**Note:** {other} rows were made by other code than this run's (`{code['run']}`), {how}."]
    return lines


def per_tag_accuracy(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """POS: {condition: {gold tag: % of its tokens tagged correctly}} over all languages."""
    out: dict[str, dict[str, float]] = {}
    for cond, cells in res["cells"].items():
        total: Counter = Counter()
        right: Counter = Counter()
        for cell in cells.values():
            for pair, n in (cell.get("confusion") or {}).items():
                gold, pred = pair.split(">", 1)
                total[gold] += n
                right[gold] += n if gold == pred else 0
        if total:
            out[cond] = {t: round(100 * right[t] / total[t], 1) for t in sorted(total)}
    return out


def _per_tag_lines(res: dict[str, Any]) -> list[str]:
    table = per_tag_accuracy(res)
    if not table:
        return []
    tags = sorted({t for row in table.values() for t in row})
    return ["", "## Per-tag accuracy, all languages (% of gold tokens of the tag)", "",
            "| condition | " + " | ".join(tags) + " |", "|---" * (len(tags) + 1) + "|"] + \
        [f"| {cond} | " + " | ".join(_fmt(row.get(t)) for t in tags) + " |" for cond, row in table.items()]


def write_report(store: Store, run: str, out_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Write report.md, report.json and report.html (self-contained: plots, the example browser)
    for ``run`` into ``out_dir``; returns the Markdown path and the numbers."""
    from .html import write_html

    rows = store.rows(run)
    res = compute(store, run, rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(res, indent=1, ensure_ascii=False, default=str))
    md = out / "report.md"
    md.write_text(to_markdown(res), encoding="utf-8")
    write_html(res, rows, out / "report.html")
    return md, res
