"""Reports: per language and condition BLEU, chrF++, off-target %, % of the reference model, and
mean rows, with every number's signature. Rendered from the store alone, so a report can be
re-made at any time (``pretty-align report``) and shows how complete the run is."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

from ..languages import get_language
from ..metrics import BLEU, ChrFpp, OffTarget, SpBLEU
from ..metrics.base import Metric
from .signature import METRIC_PACKAGES, package_versions
from .store import Store

# Per task: the metrics of the report (label, metric) and those that get a "% ref" column.
RATIO_METRICS = {"translation": ("BLEU", "chrF++"), "summarization": ("ROUGE-1", "ROUGE-L"), "pos": ("accuracy",)}


def _metrics(task: str = "translation", comet_checkpoint: str | None = None,
             langid_langs: list[str] | None = None) -> list[tuple[str, Metric]]:
    ms: list[tuple[str, Metric]]
    if task == "pos":   # tags are language-independent: no off-target rate
        from ..metrics.pos import POSAccuracy
        return [("accuracy", POSAccuracy())]
    if task == "summarization":
        from ..metrics.rouge import Rouge
        ms = [(r.name, r) for r in (Rouge("rouge1"), Rouge("rouge2"), Rouge("rougeL"))]
    else:
        ms = [("BLEU", BLEU()), ("chrF++", ChrFpp())]
        if SpBLEU.available("flores200"):
            ms.append(("spBLEU", SpBLEU("flores200")))
    ms.append(("off-target %", OffTarget(langid_langs)))
    if comet_checkpoint and task == "translation":
        from ..metrics import Comet
        ms.append(("COMET", Comet(comet_checkpoint)))
    return ms


def compute(store: Store, run: str) -> dict[str, Any]:
    """All numbers of a run: per (condition, tgt) scores, ratios to the reference, means."""
    config = store.run_config(run)
    rows = store.rows(run)
    expected = store.manifest_size(run)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["condition"], r["tgt"])].append(r)
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    targets = list(dict.fromkeys(r["tgt"] for r in rows))
    mcfg = config.get("metrics") or {}
    task = (config.get("task") or {}).get("name", "translation")
    metrics = _metrics(task, mcfg.get("comet_checkpoint"), mcfg.get("langid_langs"))
    ratio_metrics = RATIO_METRICS.get(task, ())
    cells: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    signatures: dict[str, set[str]] = defaultdict(set)
    for (cond, tgt_code), rs in groups.items():
        tgt = get_language(tgt_code)
        hyps, refs = [r["output"] for r in rs], [r["reference"] or "" for r in rs]
        cell: dict[str, Any] = {"n": len(rs)}
        for label, m in metrics:
            score = m.corpus_score(hyps, refs, tgt, sources=[r["source"] for r in rs])
            cell[label] = round(score.value, 2)
            signatures[label].add(score.signature)
            if "confusion" in score.extra:   # POS: gold>predicted counts, for the per-tag table
                cell["confusion"] = score.extra["confusion"]
        cell["prior fallback %"] = round(100 * mean(r["prior_fell_back"] for r in rs), 1)
        cell["truncated"] = sum(r["truncated"] for r in rs)   # inputs cut to fit max_prompt_tokens
        cell["new tokens"] = round(mean(r["new_tokens"] for r in rs), 1)
        cell["stops"] = dict(sorted(Counter(r["stop_reason"] for r in rs).items()))
        cells[cond][tgt_code] = cell
    ref = cells.get("reference")
    if ref:
        for cond in conditions:
            for tgt_code, cell in cells[cond].items():
                for m in ratio_metrics:
                    base = ref.get(tgt_code, {}).get(m)
                    cell[f"% ref {m}"] = round(100 * cell[m] / base, 1) if base else None
    means = {}
    for cond in conditions:
        cs = list(cells[cond].values())
        keys = [k for k in cs[0] if isinstance(cs[0][k], (int, float)) and k != "n"] + \
            [k for k in cs[0] if k.startswith("% ref")]
        # The mean of "% ref" is the mean of per-language ratios (SPEC §6), not a ratio of means.
        means[cond] = {k: _mean([c.get(k) for c in cs]) for k in dict.fromkeys(keys)}
        means[cond]["truncated"] = sum(c.get("truncated", 0) for c in cs)   # a count: summed, not averaged
    # A condition's signature can differ per target (e.g. each language's dictionary hash): keep
    # every distinct one with the targets it covers, not whichever row came last.
    model_sigs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        entries = model_sigs[r["condition"]]
        entry = next((e for e in entries if e["signature"] == r["signature"]), None)
        if entry is None:
            entries.append({"targets": [r["tgt"]], "signature": r["signature"]})
        elif r["tgt"] not in entry["targets"]:
            entry["targets"].append(r["tgt"])
    return {"run": run, "task": task, "metrics": [label for label, _ in metrics], "ratio_metrics": list(ratio_metrics),
            "complete": f"{len(rows)}/{expected}", "conditions": conditions, "targets": targets,
            "cells": cells, "means": means, "metric_signatures": {k: sorted(v) for k, v in signatures.items()},
            "condition_signatures": model_sigs, "metric_packages": package_versions(METRIC_PACKAGES)}


def _mean(xs: list) -> float | None:
    vals = [x for x in xs if isinstance(x, (int, float))]
    return round(mean(vals), 2) if vals else None


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def to_markdown(res: dict[str, Any]) -> str:
    truncated = any(c.get("truncated") for cs in res["cells"].values() for c in cs.values())
    cols = list(res["metrics"]) + ([f"% ref {m}" for m in res["ratio_metrics"]] if "reference" in res["conditions"]
                                   else []) + ["prior fallback %"] + (["truncated"] if truncated else []) + ["n"]
    lines = [f"# pretty-align report: {res['run']}", "", f"Results stored: {res['complete']}", ""]
    ref = res["condition_signatures"].get("reference")
    if ref:   # say which model "% ref" is relative to (e.g. a LoRA SFT counterpart)
        m = ref[0]["signature"].get("model", {})
        adapter = f" + LoRA adapter `{m['adapter_sha256'][:16]}`" if m.get("adapter_sha256") else ""
        lines += [f"Reference model (\"% ref\"): `{m.get('model', '?')}`{adapter}", ""]
    for tgt in res["targets"]:
        lines += [f"## {tgt}", "", "| condition | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for cond in res["conditions"]:
            cell = res["cells"][cond].get(tgt)
            if cell:
                lines.append(f"| {cond} | " + " | ".join(_fmt(cell.get(c)) for c in cols) + " |")
        lines.append("")
    mcols = [c for c in cols if c != "n"]
    lines += ["## Mean over languages", "", "(% ref = mean of per-language ratios)", "",
              "| condition | " + " | ".join(mcols) + " |", "|---" * (len(mcols) + 1) + "|"]
    for cond in res["conditions"]:
        lines.append(f"| {cond} | " + " | ".join(_fmt(res["means"][cond].get(c)) for c in mcols) + " |")
    lines += _per_tag_lines(res)
    lines += ["", "## Signatures", "", "Metrics:"]
    for label, sigs in res["metric_signatures"].items():
        lines += [f"- {label}: `{s}`" for s in sigs]
    lines += [f"- metric packages: `{json.dumps(res['metric_packages'], sort_keys=True)}`", "", "Conditions:"]
    for cond, entries in res["condition_signatures"].items():
        for e in entries:
            where = f" ({', '.join(e['targets'])})" if len(entries) > 1 else ""
            lines.append(f"- {cond}{where}: `{json.dumps(e['signature'], sort_keys=True, ensure_ascii=False)}`")
    return "\n".join(lines) + "\n"


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
    """Write report.md and report.json for ``run`` into ``out_dir``; returns the Markdown path."""
    res = compute(store, run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(res, indent=1, ensure_ascii=False, default=str))
    md = out / "report.md"
    md.write_text(to_markdown(res), encoding="utf-8")
    return md, res
