"""A self-contained HTML report of a run (``report.html``): header, result tables, plots, a
per-example browser and the signatures, in one file that opens offline.

Nothing on the page is fetched: CSS and JS are inline, plots are base64 PNGs. The examples are
one copy of their JSON, gzip-compressed and base64-encoded (a run of thousands of outputs stays a
few hundred kB), which the page unpacks (``DecompressionStream``) and renders as cards. Every text
from data goes into the page escaped: the tables and signatures through ``html.escape``, the cards
through the DOM's ``textContent`` (never ``innerHTML``), and base64 holds no ``<``, so an output
holding ``</script>`` can neither end the blob nor run. Numbers are formatted by report.py's
helpers, so the page shows exactly what report.md shows.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any, Sequence

from ..languages import get_language
from .report import (AGREEMENT_NOTE, AGREEMENT_POSITIONS, DYNAMIC_NOTE, REFERENCE, _fmt, _ratio_cell,
                     dynamic_conditions, per_tag_accuracy, position_mean, shown_agreement)
from .signature import compact_signature

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
          "#9c755f", "#bab0ac"]   # Tableau 10: one colour per condition, the same in every plot


# -- compact signatures ------------------------------------------------------------------------------
def write_html(res: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the report of ``res`` (``report.compute``) and its ``rows`` (``Store.rows``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(res, rows), encoding="utf-8")
    return path


def render_html(res: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The whole page as one string."""
    title = f"pretty-align report: {res['run']}"
    body = [_header(res), _nav(), _tables(res), _plots(res), _browser(res, rows), _signatures(res)]
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + f"\n</main>\n<script>{JS}</script>\n</body>\n</html>\n")


def _header(res: dict[str, Any]) -> str:
    items = [("task", escape(res["task"])), ("results stored", escape(res["complete"]))]
    ref = (res["condition_signatures"].get(REFERENCE) or [{}])[0].get("signature", {}).get("model")
    if ref:
        adapter = (f" + LoRA adapter <code>{escape(ref['adapter_sha256'][:16])}</code>"
                   if ref.get("adapter_sha256") else "")
        items.append(("reference model (“% ref”)", f"<code>{escape(str(ref.get('model', '?')))}</code>{adapter}"))
    code = res.get("code") or {}
    items += _code_items(code)
    out = [f"<header><h1>pretty-align report: {escape(res['run'])}</h1>", "<dl class=\"meta\">"]
    out += [f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items]
    out.append("</dl>")
    if code.get("reuse_from"):
        reuse = escape(str(code["reuse_from"]))
        out.append(f"<p class=\"note\">Rows reused with --reuse-from <code>{reuse}</code>.</p>")
    out += [f"<p class=\"warning\"><strong>Warning:</strong> {escape(w)}</p>" for w in res.get("warnings", [])]
    return "\n".join(out) + "</header>"


def _code_items(code: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's code and the code that made its rows; rows of other code than the run's called out."""
    def rev(revision: Any, sha: Any) -> str:
        return f"<code>{escape(str(revision))}</code> (source <code>{escape(str(sha))}</code>)"

    made_by = code.get("rows", [])
    this = rev(code["run"], code.get("source_sha256")) if code.get("run") else None
    if this and len(made_by) == 1 and made_by[0]["this_run"] and made_by[0]["revision"] == code["run"]:
        return [("code", this + ", made every row")]
    items = [("code of this run", this)] if this else []
    for c in made_by:
        other = "" if c["this_run"] else " <strong>made by other code than this run's</strong>"
        items.append(("rows made by", f"{rev(c['revision'], c['source_sha256'])}: {c['rows']} rows{other}"))
    return items


def _nav() -> str:
    links = [("results", "Results"), ("plots", "Plots"), ("examples", "Examples"), ("signatures", "Signatures")]
    return "<nav>" + " · ".join(f"<a href=\"#{a}\">{t}</a>" for a, t in links) + "</nav>"


# -- tables --------------------------------------------------------------------------------------------
def _table(header: Sequence[str], body: list[list[str]], note: str = "", cls: str = "") -> str:
    """An HTML table; ``header`` and ``body`` cells are plain text (escaped here); the first column
    names the row, the others are numbers (right-aligned). ``note`` (HTML) goes under it."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    trs = []
    for row in body:
        tr_cls = " class=\"ref\"" if row and row[0] == REFERENCE else ""
        trs.append(f"<tr{tr_cls}><th scope=\"row\">{escape(row[0])}</th>"
                   + "".join(f"<td>{escape(v)}</td>" for v in row[1:]) + "</tr>")
    after = f"<p class=\"sig\">{note}</p>" if note else ""
    return (f"<div class=\"scroll\"><table class=\"num {cls}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(trs)}</tbody></table></div>{after}")


def _ratio_mean(res: dict[str, Any], cond: str, col: str) -> str:
    """The headline "% ref": the ratio of means, or why it has none."""
    v = res["means"][cond].get(col)
    return f"n/a (ref mean < {res['ratio_floor']:g})" if v is None and REFERENCE in res["conditions"] else _fmt(v)


def _stops(res: dict[str, Any], cond: str) -> str:
    total: Counter = Counter()
    for cell in res["cells"][cond].values():
        total.update(cell.get("stops") or {})
    return " ".join(f"{k} {n}" for k, n in sorted(total.items()))


def _tables(res: dict[str, Any]) -> str:
    conds, targets = res["conditions"], res["targets"]
    has_ref = REFERENCE in conds
    ratio_cols = [f"% ref {m}" for m in res["ratio_metrics"]] if has_ref else []
    truncated = any(c.get("truncated") for cs in res["cells"].values() for c in cs.values())
    cols = list(res["metrics"]) + ratio_cols + ["prior fallback %"] + (["truncated"] if truncated else [])
    out = ["<section id=\"results\"><h2>Results</h2>", "<h3>Mean over languages</h3>"]
    if has_ref:
        out.append(f"<p>% ref = 100 × mean(condition) / mean(reference) over the {len(targets)} languages "
                   "(ratio of means); the per-language ratios are in the tables below.</p>")
    out.append(_table(["condition"] + cols + ["stops"],
                      [[c] + [_ratio_mean(res, c, k) if k in ratio_cols else _fmt(res["means"][c].get(k)) for k in cols]
                       + [_stops(res, c)] for c in conds]))
    for col in ratio_cols:
        metric = col[len("% ref "):]
        out.append(f"<h3>{escape(col)}, per language</h3>")
        out.append(_table(["condition", "mean (ratio of means)"] + targets,
                          [[c, _ratio_mean(res, c, col)]
                           + [_ratio_cell(res["cells"][c].get(t, {}), col, t, res) for t in targets] for c in conds],
                          cls="headline"))
        low = res["ratio_below_floor"].get(metric)
        if low:
            out.append(f"<p class=\"note\">n/a: the reference scores below {res['ratio_floor']:g} {escape(metric)} "
                       f"in {escape(', '.join(low))}, where a ratio says nothing (metrics.ratio_floor sets the "
                       "floor); those languages still count in the ratio of means.</p>")
    for metric in res["metrics"]:
        out.append(f"<h3>{escape(metric)}</h3>")
        sigs = res["metric_signatures"].get(metric, [])
        note = "<br>".join(f"<code>{escape(s)}</code>" for s in sigs)
        out.append(_table(["condition"] + targets + ["mean"],
                          [[c] + [_fmt(res["cells"][c].get(t, {}).get(metric)) for t in targets]
                           + [_fmt(res["means"][c].get(metric))] for c in conds], note=note))
    out.append(_per_tag_table(res))
    out.append(_dynamic_table(res))
    out.append(_agreement_table(res))
    return "\n".join(out) + "</section>"


def _dynamic_table(res: dict[str, Any]) -> str:
    conds = dynamic_conditions(res)
    if not conds:
        return ""
    ratio = [f"% ref {m}" for m in res["ratio_metrics"]]
    return ("<h3>Dynamic prior: quality against the helper’s share</h3>"
            + _table(["condition", "helper share %", "helper changed %"] + ratio,
                     [[c, _fmt(res["means"][c]["helper share %"]), _fmt(res["means"][c].get("helper changed %"))]
                      + [_ratio_mean(res, c, r) for r in ratio] for c in conds],
                     note=DYNAMIC_NOTE))


def _agreement_table(res: dict[str, Any]) -> str:
    agree = shown_agreement(res)
    if not agree:
        return ""
    targets = res["targets"]
    return ("<h3>Free-running agreement with the reference output (aligned %)</h3>"
            + _table(["condition"] + targets + ["all exact %", "all aligned %"],
                     [[c] + [_fmt(per.get(t, {}).get("aligned %")) for t in targets]
                      + [_fmt(per["all"]["exact %"]), _fmt(per["all"]["aligned %"])] for c, per in agree.items()],
                     note=escape(AGREEMENT_NOTE)))


def _per_tag_table(res: dict[str, Any]) -> str:
    table = per_tag_accuracy(res)
    if not table:
        return ""
    tags = sorted({t for row in table.values() for t in row})
    return ("<h3>Per-tag accuracy, all languages (% of gold tokens of the tag)</h3>"
            + _table(["condition"] + tags, [[c] + [_fmt(row.get(t)) for t in tags] for c, row in table.items()]))


# -- plots ---------------------------------------------------------------------------------------------
def _figure(width: float, height: float = 3.6):
    """A matplotlib Figure on the Agg canvas, without pyplot (no global state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _img(fig, alt: str, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{escape(alt)}\">"
            f"<figcaption>{caption}</figcaption></figure>")


def _color(res: dict[str, Any], cond: str) -> str:
    return COLORS[res["conditions"].index(cond) % len(COLORS)]


def _plot_ratio(res: dict[str, Any]) -> str:
    """Grouped bars: % of reference per language (and the mean), per condition, for the first ratio
    metric that has a ratio anywhere (the reference may score below the floor in all languages)."""
    if REFERENCE not in res["conditions"] or not res["ratio_metrics"] or len(res["conditions"]) < 2:
        return "<p>No reference model (or nothing to compare with it) in this run: no “% of reference” plot.</p>"
    conds = [c for c in res["conditions"] if c != REFERENCE]
    groups = res["targets"] + ["mean"]
    has_ratio = [m for m in res["ratio_metrics"] if any(
        v.get(f"% ref {m}") is not None for c in conds for v in [res["means"][c], *res["cells"][c].values()])]
    if not has_ratio:
        return (f"<p>The reference scores below {res['ratio_floor']:g} in every language ("
                f"{escape(', '.join(res['ratio_metrics']))}): no “% of reference” plot.</p>")
    metric = has_ratio[0]
    col = f"% ref {metric}"
    fig = _figure(min(12.0, 2.5 + 0.35 * len(groups) * len(conds)))
    ax = fig.add_subplot()
    width = 0.8 / len(conds)
    for j, c in enumerate(conds):
        vals = [res["cells"][c].get(t, {}).get(col) for t in res["targets"]] + [res["means"][c].get(col)]
        xs = [i + (j - (len(conds) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v or 0 for v in vals], width, label=c, color=_color(res, c))
        for x, v in zip(xs, vals):
            if v is None:
                ax.text(x, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.axhline(100, color="black", linestyle="--", linewidth=1, label="reference = 100")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(f"% of reference {metric}")
    ax.legend(fontsize=7, ncol=min(4, len(conds) + 1), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _img(fig, f"% of reference {metric} per language and condition",
                f"{escape(metric)} as % of the reference model’s, per language; “mean” is the ratio of means. "
                f"n/a: the reference scores below {res['ratio_floor']:g}.")


def _plot_off_target(res: dict[str, Any]) -> str:
    """Bars: mean off-target rate per condition; dots: each language's rate."""
    col = "off-target %"
    if col not in res["metrics"]:
        return ""
    conds = [c for c in res["conditions"] if res["means"][c].get(col) is not None]
    if not conds:   # no target language the identifier knows
        return "<p>The language identifier covers none of this run's target languages: no off-target plot.</p>"
    fig = _figure(min(12.0, 2.5 + 0.9 * len(conds)))
    ax = fig.add_subplot()
    means = [res["means"][c][col] for c in conds]
    ax.bar(range(len(conds)), means, 0.6, color=[_color(res, c) for c in conds])
    for i, c in enumerate(conds):
        ys = [cell[col] for cell in res["cells"][c].values() if cell.get(col) is not None]
        ax.scatter([i] * len(ys), ys, s=12, color="black", zorder=3)
        ax.text(i, means[i] + 2, f"{means[i]:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(conds)), conds, rotation=20, ha="right")
    ax.set_ylim(0, 110)
    ax.set_ylabel("off-target %")
    ax.grid(axis="y", alpha=0.3)
    return _img(fig, "off-target rate per condition",
                "Share of outputs not identified as the target language: bars are the mean over languages, "
                "dots the single languages.")


def _k_series(res: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """Conditions that differ only in k, by series (the label without " k=N"): [(k, condition)]."""
    series: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cond, entries in res["condition_signatures"].items():
        prior = entries[0]["signature"].get("prior") if entries else None
        if prior and prior.get("strategy") != "none" and prior.get("k") is not None:
            series[re.sub(r" k=\d+$", "", cond)].append((int(prior["k"]), cond))
    return {name: sorted(pts) for name, pts in series.items() if len({k for k, _ in pts}) > 1}


def _plot_prior_k(res: dict[str, Any]) -> str:
    """Metric (mean over languages) vs k, one line per strategy; none and reference as dashed lines."""
    series = _k_series(res)
    if not series:
        return "<p>Each prior strategy runs with a single k here: no “effect of prior k” plot.</p>"
    metrics = (res["ratio_metrics"][:1] or res["metrics"][:1]) + [m for m in ("off-target %",) if m in res["metrics"]]
    fig = _figure(4.2 * len(metrics) + 1)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for name, pts in series.items():
            ax.plot([k for k, _ in pts], [res["means"][c][metric] for _, c in pts], marker="o", label=name,
                    color=_color(res, pts[0][1]))
        for c, style in (("none", ":"), (REFERENCE, "--")):
            if c in res["means"]:
                ax.axhline(res["means"][c][metric], color="grey" if c == "none" else "black", linestyle=style,
                           linewidth=1, label=c)
        ax.set_xticks(sorted({k for pts in series.values() for k, _ in pts}))
        ax.set_xlabel("prior tokens k")
        ax.set_ylabel(f"{metric}, mean over languages")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _img(fig, "effect of prior k", "Mean over languages against the number of prior tokens k, per "
                "strategy; dotted: no prior, dashed: the reference model.")


def _first_ratio(res: dict[str, Any]) -> str | None:
    return f"% ref {res['ratio_metrics'][0]}" if REFERENCE in res["conditions"] and res["ratio_metrics"] else None


def _plot_agreement(res: dict[str, Any]) -> str:
    """Exact agreement with the reference output by position, one line per condition."""
    agree = shown_agreement(res)
    if not agree:
        return ""
    fig = _figure(7.0)
    ax = fig.add_subplot()
    positions = list(range(1, AGREEMENT_POSITIONS + 1))
    for c, per in agree.items():
        ax.plot(positions, [position_mean(per, p) for p in positions], marker="o", label=c, color=_color(res, c))
    ax.set_xticks(positions)
    ax.set_xlabel("position in the reference output (tokens)")
    ax.set_ylabel("exact agreement %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _img(fig, "free-running agreement by position", "Share of the reference output’s tokens at each "
                "position that the condition’s own output has at the same position (mean over languages).")


def _plot_dynamic(res: dict[str, Any]) -> str:
    """% of reference against the helper's share of the output, one point per dynamic condition."""
    conds, col = dynamic_conditions(res), _first_ratio(res)
    if not conds or not col:
        return ""
    fig = _figure(5.5)
    ax = fig.add_subplot()
    series: dict[str, list[tuple[float, float, str]]] = defaultdict(list)   # one line per helper and k
    for c in conds:
        means = res["means"][c]
        series[re.sub(r" tau=[\d.]+", "", c)].append((means["helper share %"], means.get(col) or 0, c))
    for name, pts in series.items():
        pts.sort()
        ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", label=name, color=_color(res, pts[0][2]))
        for x, y, c in pts:
            ax.annotate(c[len(name):].strip() or c, (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.legend(fontsize=7)
    ax.axhline(100, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("helper share of output tokens %")
    ax.set_ylabel(col)
    ax.grid(alpha=0.3)
    return _img(fig, "dynamic prior: quality against helper share", f"{escape(col)} (ratio of means) against "
                "the share of output tokens the helper supplied; dashed: the reference model.")


def _corrupt_series(res: dict[str, Any]) -> dict[str, list[tuple[float, str]]]:
    series: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for cond, entries in res["condition_signatures"].items():
        prior = entries[0]["signature"].get("prior") if entries else None
        if prior and prior.get("corrupt") is not None:
            series[re.sub(r" corrupt=[\d.]+$", "", cond)].append((float(prior["corrupt"]), cond))
    return {name: sorted(pts) for name, pts in series.items() if len(pts) > 1}


def _plot_corrupt(res: dict[str, Any]) -> str:
    """The prior-quality curve: % of reference against the probability of a corrupted prior."""
    series, col = _corrupt_series(res), _first_ratio(res)
    if not series or not col:
        return ""
    fig = _figure(5.5)
    ax = fig.add_subplot()
    for name, pts in series.items():
        ax.plot([p for p, _ in pts], [res["means"][c].get(col) or 0 for _, c in pts], marker="o", label=name,
                color=_color(res, pts[0][1]))
    if "none" in res["means"] and res["means"]["none"].get(col) is not None:
        ax.axhline(res["means"]["none"][col], color="grey", linestyle=":", linewidth=1, label="none")
    ax.set_xlabel("probability that the prior is a random word")
    ax.set_ylabel(col)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _img(fig, "prior-quality curve", f"{escape(col)} (ratio of means) as priors are replaced by random "
                "target-language words of the same token length; dotted: no prior.")


def _plots(res: dict[str, Any]) -> str:
    parts = [("% of reference per language × condition", _plot_ratio(res)),
             ("Off-target rate per condition", _plot_off_target(res)),
             ("Effect of prior k", _plot_prior_k(res)),
             ("Prior-quality curve", _plot_corrupt(res)),
             ("Dynamic prior", _plot_dynamic(res)),
             ("Free-running agreement by position", _plot_agreement(res))]
    return ("<section id=\"plots\"><h2>Plots</h2>"
            + "".join(f"<h3>{escape(t)}</h3>{p}" for t, p in parts if p) + "</section>")


# -- the example browser -------------------------------------------------------------------------------
def _examples(res: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (target, example): one entry per card, outputs in condition order."""
    order = {c: i for i, c in enumerate(res["conditions"])}
    tgt_order = {t: i for i, t in enumerate(res["targets"])}
    cards: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        card = cards.setdefault((r["tgt"], r["example_id"]), {
            "id": r["example_id"], "tgt": r["tgt"], "idx": r.get("idx", 0), "source": r["source"],
            "reference": r["reference"], "outputs": []})
        card["outputs"].append({"condition": r["condition"], "output": r["output"],
                                "prior": r.get("prior_text") or "", "prior_ids": r.get("prior_ids") or [],
                                "prior_fell_back": bool(r.get("prior_fell_back")),
                                "provenance": r.get("provenance") and json.loads(json.dumps(r["provenance"], sort_keys=True)),
                                "detected_lang": r.get("detected_lang"), "stop_reason": r.get("stop_reason")})
    out = sorted(cards.values(), key=lambda e: (tgt_order.get(e["tgt"], len(tgt_order)), e["idx"], str(e["id"])))
    for e in out:
        e["outputs"].sort(key=lambda o: order.get(o["condition"], len(order)))
    return out


def pack_examples(data: Any) -> str:
    """``data`` as the page carries it: JSON, gzip (mtime 0, so a report is byte-for-byte reproducible),
    base64. ``unpack_examples`` is the inverse."""
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def unpack_examples(text: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(text)).decode("utf-8"))


def _iso1(res: dict[str, Any], tgt: str) -> str | None:
    """The code a detected language is compared with (off-target tasks only)."""
    if "off-target %" not in res["metrics"]:
        return None
    try:
        return get_language(tgt).iso1
    except Exception:   # a code the language table does not know: no off-target marking
        return None


def _browser(res: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    examples = _examples(res, rows)
    opts = lambda xs: "".join(f"<option value=\"{escape(x)}\">{escape(x)}</option>" for x in xs)  # noqa: E731
    controls = (f"<div class=\"filters\"><label>language <select id=\"f-lang\"><option value=\"\">all</option>"
                f"{opts(res['targets'])}</select></label> <label>condition <select id=\"f-cond\">"
                f"<option value=\"\">all</option>{opts(res['conditions'])}</select></label> "
                f"<label>search <input id=\"f-q\" type=\"search\" placeholder=\"text in source, reference or "
                f"outputs\"></label> <span id=\"f-count\">{len(examples)} examples</span></div>")
    data = {"conditions": res["conditions"], "targets": res["targets"],
            "iso1": {t: _iso1(res, t) for t in res["targets"]}, "examples": examples}
    return ("<section id=\"examples\"><h2>Examples</h2><p>Every output, grouped by example; the prior tokens "
            "are <mark>marked</mark> (hover for where they came from), a detected language other than the target "
            "is <span class=\"off\">red</span>. The filters can be set in the address: "
            "<code>#lang=zho_Hans&amp;cond=none&amp;q=word</code>.</p>"
            + controls + "<div id=\"browser\"></div><noscript><p>The example browser needs JavaScript. Every "
            "output is also in the run's store (<code>runs/&lt;name&gt;.sqlite</code>).</p></noscript>"
            + f"<script type=\"application/octet-stream\" id=\"examples-data\" data-encoding=\"gzip+base64\">"
            f"{pack_examples(data)}</script></section>")


# -- signatures ----------------------------------------------------------------------------------------
def _signatures(res: dict[str, Any]) -> str:
    out = ["<section id=\"signatures\"><h2>Signatures</h2><h3>Conditions</h3><ul class=\"sigs\">"]
    for cond, entries in res["condition_signatures"].items():
        for e in entries:
            where = f" ({', '.join(e['targets'])})" if len(entries) > 1 else ""
            full = json.dumps(e["signature"], indent=1, sort_keys=True, ensure_ascii=False)
            out.append(f"<li><strong>{escape(cond + where)}</strong>: <code>{escape(compact_signature(e['signature']))}"
                       f"</code><details><summary>full signature</summary><pre>{escape(full)}</pre></details></li>")
    out.append("</ul><h3>Metrics</h3><ul class=\"sigs\">")
    for label, sigs in res["metric_signatures"].items():
        out += [f"<li><strong>{escape(label)}</strong>: <code>{escape(s)}</code></li>" for s in sigs]
    packages = "|".join(f"{k}:{v}" for k, v in sorted(res["metric_packages"].items()))
    out.append(f"<li><strong>metric packages</strong>: <code>{escape(packages)}</code></li></ul></section>")
    return "\n".join(out)


CSS = """
:root { color-scheme: light; --line: #d8dde3; --muted: #5f6b76; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: #1d232a;
  margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.5rem 4rem; }
h1 { font-size: 1.6rem; margin: .2rem 0 .6rem; } h2 { border-bottom: 2px solid var(--line); padding-bottom: .2rem;
  margin-top: 2.2rem; } h3 { margin: 1.6rem 0 .4rem; font-size: 1.08rem; } h4 { margin: 0 0 .4rem; font-size: .95rem; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { overflow-wrap: anywhere; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; }
nav { margin: 1rem 0; padding: .4rem 0; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); }
a { color: #1f5fa8; }
.warning { background: #fff1e6; border-left: 4px solid #e67e22; padding: .5rem .8rem; }
.note { color: var(--muted); font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .3rem 0; font-size: .9rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { background: #f3f5f7; text-align: left; }
table.num td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.num thead th:not(:first-child) { text-align: right; }
table.num tbody th { text-align: left; font-weight: 500; white-space: nowrap; }
table.headline td:nth-child(2) { font-weight: 700; }
tr.ref { background: #f7f7fb; font-style: italic; }
p.sig { color: var(--muted); font-size: .8rem; margin: .1rem 0 0; }
figure { margin: .5rem 0 1rem; } figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .85rem; }
.filters { position: sticky; top: 0; z-index: 5; background: #fff; padding: .6rem 0;
  border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; align-items: center; }
.filters input { width: 18rem; } #f-count { color: var(--muted); font-size: .9rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .7rem .9rem; margin: .8rem 0; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem; margin: 0 0 .5rem;
  font-size: .92rem; }
.card dt { color: var(--muted); } .card dd { margin: 0; }
table.outputs { width: 100%; font-size: .9rem; } table.outputs tbody th { text-align: left; white-space: nowrap;
  font-weight: 500; width: 9rem; } table.outputs td.out { white-space: pre-wrap; overflow-wrap: anywhere; width: 100%; }
mark { background: #ffe08a; border-radius: 2px; padding: 0 1px; }
.off { color: #c0392b; font-weight: 600; } .small { font-size: .8rem; color: var(--muted); }
.empty { color: var(--muted); }
ul.sigs li { margin: .25rem 0; } details pre { background: #f6f8fa; padding: .5rem; overflow-x: auto; }
[hidden] { display: none !important; }
"""

# Filters: language and condition selects and a text search; their state lives in the address
# (#lang=..&cond=..&q=..) so that a filtered view can be linked to or dumped headless.
JS = """
(async () => {
  const browser = document.getElementById('browser'), blob = document.getElementById('examples-data');
  const lang = document.getElementById('f-lang'), cond = document.getElementById('f-cond');
  const q = document.getElementById('f-q'), count = document.getElementById('f-count');
  let data;
  try {   // the examples: JSON, gzip, base64 (one copy; see html.py)
    const bytes = Uint8Array.from(atob(blob.textContent.trim()), c => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    data = JSON.parse(await new Response(stream).text());
  } catch (err) {
    browser.textContent = 'This browser cannot unpack the examples (it needs DecompressionStream: Chrome 80, '
      + 'Firefox 113, Safari 16.4 or later): ' + err;
    return;
  }
  // Cards are built with textContent only: no text from the data is ever parsed as HTML.
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const small = text => el('div', 'small', text);
  function mark(text, provenance) {
    const m = el('mark', '', text);
    m.title = provenance ? JSON.stringify(provenance) : 'prior';
    return m;
  }
  function outputCell(o) {
    const td = el('td', 'out'), text = o.output, prior = o.prior;
    if (!text) td.append(el('span', 'empty', '(empty)'));
    else if (prior && text.startsWith(prior)) td.append(mark(prior, o.provenance), text.slice(prior.length));
    else td.append(text);
    if (prior && !text.startsWith(prior)) {   // a prior that is not the output's prefix: shown apart
      const d = small('prior: '); d.append(mark(prior, o.provenance)); td.append(d);
    }
    if (o.prior_ids.length && !prior) {   // e.g. a lone whitespace token that decodes to nothing
      const n = o.prior_ids.length;
      td.append(small('prior: ' + n + ' token' + (n > 1 ? 's' : '') + ', no visible text'));
    }
    if (o.prior_fell_back) td.append(small('prior fell back'));
    return td;
  }
  function card(e) {
    const art = el('article', 'card'), iso = data.iso1[e.tgt];
    art.dataset.lang = e.tgt;
    art.append(el('h4', '', e.id + ' \u2192 ' + e.tgt));
    const dl = el('dl');
    dl.append(el('dt', '', 'source'), el('dd', '', e.source), el('dt', '', 'reference'), el('dd', '', e.reference || ''));
    const table = el('table', 'outputs'), head = el('tr'), body = el('tbody');
    ['condition', 'output (prior marked)', 'lang', 'stop'].forEach(h => head.append(el('th', '', h)));
    table.append(el('thead'), body);
    table.tHead.append(head);
    e.outputs.forEach(o => {
      const tr = el('tr'), th = el('th', '', o.condition), lg = el('td', '', o.detected_lang || '');
      tr.dataset.cond = o.condition;
      th.scope = 'row';
      if (iso && o.detected_lang && o.detected_lang !== iso) { lg.className = 'off'; lg.title = 'not the target language'; }
      tr.append(th, outputCell(o), lg, el('td', '', o.stop_reason || ''));
      body.append(tr);
    });
    art.append(dl, table);
    return art;
  }
  const cards = data.examples.map(card);
  const all = document.createDocumentFragment();
  cards.forEach(c => all.append(c));
  browser.append(all);
  const hay = data.examples.map(e => [e.id, e.source, e.reference || '', ...e.outputs.map(o => o.output)]
    .join('\\n').toLowerCase());
  function apply(updateHash) {
    const l = lang.value, c = cond.value, s = q.value.trim().toLowerCase();
    let shown = 0;
    cards.forEach((card, i) => {
      const ok = (!l || data.examples[i].tgt === l) && (!s || hay[i].includes(s));
      card.hidden = !ok;
      if (ok) shown++;
      card.querySelectorAll('tr[data-cond]').forEach(tr => { tr.hidden = !!c && tr.dataset.cond !== c; });
    });
    count.textContent = shown + ' of ' + cards.length + ' examples';
    if (!updateHash) return;
    const h = new URLSearchParams();
    if (l) h.set('lang', l); if (c) h.set('cond', c); if (q.value) h.set('q', q.value);
    history.replaceState(null, '', h.toString() ? '#' + h.toString() : location.pathname + location.search);
  }
  function fromHash() {
    if (!location.hash.includes('=')) return;   // a section link (#plots), not a filter
    const h = new URLSearchParams(location.hash.slice(1));
    lang.value = h.get('lang') || ''; cond.value = h.get('cond') || ''; q.value = h.get('q') || '';
    apply(false);
    document.getElementById('examples').scrollIntoView();   // a link to a filtered view opens on it
  }
  [lang, cond].forEach(e => e.addEventListener('change', () => apply(true)));
  q.addEventListener('input', () => apply(true));
  window.addEventListener('hashchange', fromHash);
  fromHash();
  apply(false);
  document.body.dataset.examples = 'ready';   // for headless checks: the cards are in the page
})();
"""
