"""Decision-space report: tables (Markdown, HTML, JSON) and PNG plots from stored position records.

"With k prior tokens" = positions > k of the SFT answer (see ``decision``). Shares are over
positions (every SFT-chosen token counts once), as in the paper's 90.8% figure.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from statistics import mean, median
from typing import Any

from ..experiment.store import Store

PAPER_SILENT_MAJORITY = 90.8   # % of SFT-chosen tokens in the base model's top-K (paper §2.2)


def _mean_kl(recs: list[dict]) -> float | None:
    """Mean KL over records that have one (text-level records have NaN: different vocabularies)."""
    vals = [r["kl"] for r in recs if r["kl"] is not None and r["kl"] == r["kl"]]
    return round(mean(vals), 3) if vals else None


def _summary(recs: list[dict], top_k: int) -> dict[str, Any]:
    n = len(recs)
    if not n:
        return {"positions": 0}
    return {"positions": n,
            "rank 1 %": round(100 * sum(r["rank_base"] == 1 for r in recs) / n, 1),
            "rank <= 3 %": round(100 * sum(r["rank_base"] <= 3 for r in recs) / n, 1),
            f"rank <= {top_k} %": round(100 * sum(r["rank_base"] <= top_k for r in recs) / n, 1),
            "median rank": median(r["rank_base"] for r in recs),
            "mean KL": _mean_kl(recs),
            "mean p_base": round(mean(r["p_base"] for r in recs), 3),
            "mean p_sft": round(mean(r["p_sft"] for r in recs), 3),
            f"top-{top_k} overlap %": round(100 * mean(r["overlap"] for r in recs), 1)}


def compute(store: Store, run: str, *, priors: list[int], top_k: int, max_positions: int) -> dict[str, Any]:
    stored, planned, signature = store.analysis_status(run)
    recs = store.analysis_positions(run)
    by_tgt: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by_tgt[r["tgt"]].append(r)
    targets = list(by_tgt)
    groups = {**{t: by_tgt[t] for t in targets}, "all": recs}
    table = {g: {k: _summary([r for r in rs if r["position"] > k], top_k) for k in priors} for g, rs in groups.items()}
    by_pos: dict[str, dict[int, dict]] = {}
    for g, rs in groups.items():
        at: dict[int, list[dict]] = defaultdict(list)
        for r in rs:
            if r["position"] <= max_positions:
                at[r["position"]].append(r)
        by_pos[g] = {p: _summary(v, top_k) for p, v in sorted(at.items())}
    modes = sorted({r["mode"] for r in recs})
    return {"run": run, "complete": f"{stored}/{planned}", "modes": modes, "approximate": modes != ["exact"],
            "top_k": top_k, "priors": priors, "targets": targets, "table": table, "by_position": by_pos,
            "signature": signature, "paper_silent_majority": PAPER_SILENT_MAJORITY}


def _md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    fmt = lambda v: "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"] + \
        ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) of every table in the report, shared by Markdown and HTML."""
    k10 = res["top_k"]
    cols = ["rank 1 %", "rank <= 3 %", f"rank <= {k10} %", "median rank", "mean KL", f"top-{k10} overlap %",
            "positions"]
    main = [[g if g != "all" else "**all**", k] + [res["table"][g][k].get(c) for c in cols]
            for g in [*res["targets"], "all"] for k in res["priors"]]
    out = [(f"Share of SFT-chosen tokens by their rank under the base model (paper: {res['paper_silent_majority']}% "
            f"in the silent majority)", ["language", "prior k"] + cols, main)]
    positions = sorted({p for g in res["by_position"].values() for p in g})
    for metric in ("mean KL", "median rank", "rank 1 %"):
        rows = [[g] + [res["by_position"][g].get(p, {}).get(metric) for p in positions]
                for g in [*res["targets"], "all"]]
        out.append((f"{metric} by answer position", ["language"] + [str(p) for p in positions], rows))
    return out


def to_markdown(res: dict[str, Any], plots: list[str]) -> str:
    label = " (APPROXIMATE: text-level alignment)" if res["approximate"] else ""
    lines = [f"# Decision-space analysis: {res['run']}{label}", "",
             f"Examples analysed: {res['complete']}; mode: {', '.join(res['modes'])}. Prior k = the base model is "
             "given the SFT model's first k tokens; rows with k > 0 cover answer positions > k.", ""]
    if res["approximate"]:
        lines += ["**Approximate**: the models have different tokenizers, so positions are *words* (compared where "
                  "both tokenizers start a token), ranks are of each model's own first token of the word, KL is "
                  "undefined and top-k overlap compares token strings.", ""]
    for title, head, rows in tables(res):
        lines += [f"## {title}", "", *_md_table(head, rows), ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + ["", "## Signature", "",
                                                                  f"`{json.dumps(res['signature'], sort_keys=True)}`", ""]
    return "\n".join(lines)


def to_html(res: dict[str, Any], plots: list[str]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(res['run'])}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>",
             f"<h1>Decision-space analysis: {esc(res['run'])}{' (APPROXIMATE)' if res['approximate'] else ''}</h1>",
             f"<p>Examples analysed: {esc(res['complete'])}; mode: {esc(', '.join(res['modes']))}.</p>"]
    for title, head, rows in tables(res):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc('-' if v is None else str(v))}</td>" for v in row) + "</tr>"
                  for row in rows]
        parts.append("</table>")
    parts += [f"<p><img src='{esc(p)}' style='max-width:100%'></p>" for p in plots]
    parts.append(f"<h2>Signature</h2><pre>{esc(json.dumps(res['signature'], indent=1, sort_keys=True))}</pre>")
    return "\n".join(parts)


def plot(res: dict[str, Any], out: Path) -> list[str]:
    """PNG figures: KL and rank-1 share by position per language; silent-majority share by prior k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    groups = [*res["targets"], "all"]
    for metric, fname, ylabel in (("mean KL", "kl_by_position.png", "mean KL(P_sft || P_base), nats"),
                                  ("rank 1 %", "rank1_by_position.png", "% SFT tokens at base rank 1")):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
        for g in groups:
            pts = sorted(res["by_position"][g].items())
            ax.plot([p for p, _ in pts], [v[metric] for _, v in pts], marker="o" if g == "all" else None,
                    linewidth=2.5 if g == "all" else 1, label=g)
        for k in res["priors"]:
            if k:
                ax.axvline(k + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("answer position (words, APPROXIMATE)" if res["approximate"] else "answer position (SFT tokens)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / fname)
        plt.close(fig)
        names.append(fname)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    width = 0.8 / len(res["priors"])
    col = f"rank <= {res['top_k']} %"
    for j, k in enumerate(res["priors"]):
        ax.bar([i + j * width for i in range(len(groups))], [res["table"][g][k].get(col, 0) for g in groups],
               width, label=f"prior k={k}")
    ax.axhline(res["paper_silent_majority"], color="black", linestyle="--", linewidth=1, label="paper: 90.8%")
    ax.set_xticks([i + width * (len(res["priors"]) - 1) / 2 for i in range(len(groups))], groups, rotation=30,
                  fontsize=8)
    ax.set_ylabel(f"% SFT tokens in base top-{res['top_k']}")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "silent_majority.png")
    plt.close(fig)
    return names + ["silent_majority.png"]


def write_analysis_report(store: Store, run: str, out_dir: str | Path, *, priors: list[int], top_k: int,
                          max_positions: int) -> tuple[Path, dict[str, Any]]:
    """Write analysis.md/.html/.json and the PNG plots into ``out_dir``; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = compute(store, run, priors=priors, top_k=top_k, max_positions=max_positions)
    plots = plot(res, out) if res["targets"] else []
    (out / "analysis.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "analysis.html").write_text(to_html(res, plots), encoding="utf-8")
    md = out / "analysis.md"
    md.write_text(to_markdown(res, plots), encoding="utf-8")
    return md, res
