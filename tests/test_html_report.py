"""The self-contained HTML report: well formed, offline, plots embedded, every row in the example
browser (rendered by headless Chromium), priors marked, data escaped; compact signatures."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import require

from pretty_align.experiment.config import load_config
from pretty_align.experiment.html import compact_signature, unpack_examples, write_html
from pretty_align.experiment.report import compute
from pretty_align.experiment.runner import Runner

CONFIG = """
name = "h"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[reference]
model = "fake:upper"
backend = "fake"
[task]
targets = ["deu_Latn", "zho_Hans"]
flores = "{flores}"
n = 3
[decoding]
batch_size = 2
max_new_tokens = 60
[[priors]]
strategy = "none"
[[priors]]
strategy = "pseudo"
k = [1, 2]
dictionary = "{muse}/en-{{tgt_iso1}}.txt"
[[priors]]
strategy = "gold"
k = 3
"""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    """(res, rows) of a small run: reference + none, pseudo k=1,2, gold k=3 on 2 languages x 3 examples."""
    tmp = tmp_path_factory.mktemp("html")
    cfg = tmp / "h.toml"
    cfg.write_text(CONFIG.format(store=tmp / "h.sqlite", flores=shared_data / "flores200",
                                 muse=shared_data / "dictionaries" / "muse"))
    runner = Runner(load_config(cfg))
    runner.run(progress=False)
    return compute(runner.store, "h"), runner.store.rows("h")


class Checker(HTMLParser):
    """Open/close bookkeeping, every src/href, the JSON blob's text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.links: list[str] = []
        self.counts: dict[str, int] = {}
        self.blob: str | None = None
        self._in_blob = False

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        self._in_blob = tag == "script" and ("id", "examples-data") in attrs
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        self._in_blob = False

    def handle_data(self, data):
        if self._in_blob:
            self.blob = (self.blob or "") + data


def parse(path: Path) -> tuple[Checker, str]:
    text = path.read_text(encoding="utf-8")
    checker = Checker()
    checker.feed(text)
    checker.close()
    return checker, text


def test_page_is_well_formed_offline_and_embeds_plots(run, tmp_path):
    res, rows = run
    page, text = parse(write_html(res, rows, tmp_path / "out" / "report.html"))
    assert page.errors == [] and page.stack == []          # every <script>, <table>, ... closed in order
    assert page.counts["script"] == 2                       # the examples and the code that renders them
    assert page.counts["table"] >= 1 + 2 + 3
    assert not [u for u in page.links if re.match(r"\s*(https?:)?//", u)]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|@import|url\(""", text)
    assert all(u.startswith(("#", "data:image/png;base64,")) for u in page.links)
    # % of reference, off-target, k (pseudo runs with k=1 and k=2), free-running agreement by position
    assert text.count("data:image/png;base64,") == 4
    assert 'alt="free-running agreement by position"' in text
    # the ratio plot shows the first ratio metric that has a ratio (the fake reference's BLEU may be < 1)
    shown = re.search(r'alt="% of reference (\S+) per language', text).group(1)
    assert any(c.get(f"% ref {shown}") is not None for cs in res["cells"].values() for c in cs.values())
    assert f"results stored</dt><dd>{res['complete']}</dd>" in text
    assert "n/a (ref &lt;" in text or not any(res["ratio_below_floor"].values())


def test_example_json_holds_every_row(run, tmp_path):
    res, rows = run
    page, _ = parse(write_html(res, rows, tmp_path / "report.html"))
    data = unpack_examples(page.blob)
    got = sorted((o["condition"], e["tgt"], e["id"], o["output"]) for e in data["examples"] for o in e["outputs"])
    assert got == sorted((r["condition"], r["tgt"], r["example_id"], r["output"]) for r in rows)
    assert len(data["examples"]) == len({(r["tgt"], r["example_id"]) for r in rows})
    assert data["conditions"] == res["conditions"]
    again = write_html(res, rows, tmp_path / "again.html").read_bytes()
    assert again == (tmp_path / "report.html").read_bytes()   # byte-for-byte reproducible (gzip mtime 0)


def dom(path: Path, fragment: str = "") -> str:
    """The page as headless Chromium leaves it after its scripts ran (the example cards are built
    in the browser)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(exe is not None, "Chromium is not installed (make tools installs Debian's chromium)")
    with tempfile.TemporaryDirectory() as profile:   # never the user's profile; nothing left behind
        out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                              "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri() + fragment],
                             capture_output=True, text=True, timeout=120)
    assert 'data-examples="ready"' in out.stdout, out.stderr[-2000:]
    return out.stdout


def test_the_browser_renders_every_card_and_marks_the_gold_prior(run, tmp_path):
    res, rows = run
    text = dom(write_html(res, rows, tmp_path / "report.html"))
    assert text.count('<article class="card"') == len({(r["tgt"], r["example_id"]) for r in rows})
    gold = [r for r in rows if r["condition"] == "gold k=3" and r["prior_text"]]
    assert gold
    for r in gold:
        assert r["output"].startswith(r["prior_text"])
        rest = r["output"][len(r["prior_text"]):]
        assert re.search(f"<mark[^>]*>{re.escape(escape(r['prior_text'], quote=False))}</mark>"
                         f"{re.escape(escape(rest, quote=False))}", text)
    assert not re.search(r'data-cond="none"><th scope="row">none</th><td class="out"><mark', text)


def test_the_address_filters_the_browser(run, tmp_path):
    res, rows = run
    text = dom(write_html(res, rows, tmp_path / "report.html"), "#lang=zho_Hans&cond=none")
    per_lang = len({r["example_id"] for r in rows if r["tgt"] == "zho_Hans"})
    total = len({(r["tgt"], r["example_id"]) for r in rows})
    assert f"{per_lang} of {total} examples" in text
    shown = re.findall(r'<article class="card" data-lang="(\w+)">', text)
    assert set(shown) == {"zho_Hans"} and len(shown) == per_lang
    assert text.count('<article class="card" data-lang="deu_Latn" hidden=""') == total - per_lang
    assert 'data-cond="gold k=3" hidden=""' in text and 'data-cond="none" hidden=""' not in text


def test_markup_in_data_is_escaped(run, tmp_path):
    res, rows = run
    rows = copy.deepcopy(rows)
    evil = "<script>alert(1)</script><!--<script>"
    rows[0]["output"] = rows[0]["prior_text"] + evil
    rows[1]["source"] = 'a "quoted" </textarea> & <b>bold</b>'
    path = write_html(res, rows, tmp_path / "report.html")
    page, text = parse(path)
    assert page.errors == [] and page.stack == [] and page.counts["script"] == 2
    outputs = [o["output"] for e in unpack_examples(page.blob)["examples"] for o in e["outputs"]]
    assert rows[0]["output"] in outputs                   # the blob decodes back to the raw text
    shown = dom(path)                                      # in the browser: text, never markup
    assert escape(evil, quote=False) in shown and "<script>alert" not in shown
    assert "<b>bold</b>" not in shown and escape(rows[1]["source"], quote=False) in shown
    assert shown.count("<script") == 2


def test_single_k_and_no_reference(run, tmp_path):
    """One k per strategy: the k plot is replaced by a sentence; no reference: no ratio plot or columns."""
    res, rows = run
    res = copy.deepcopy(res)
    drop = {"pseudo k=1", "reference"}
    res["conditions"] = [c for c in res["conditions"] if c not in drop]
    for d in (res["cells"], res["means"], res["condition_signatures"]):
        for c in drop:
            d.pop(c)
    for means in res["means"].values():
        for m in res["ratio_metrics"]:
            means.pop(f"% ref {m}", None)
    rows = [r for r in rows if r["condition"] not in drop]
    page, text = parse(write_html(res, rows, tmp_path / "report.html"))
    assert page.errors == []
    assert text.count("data:image/png;base64,") == 1        # the off-target plot only
    assert "single k" in text and "No reference model" in text
    assert "% ref" not in text


GEMMA = {"backend": "llamacpp", "model": "gemma3-270m", "kind": "gguf", "sha256": "a5fd3b62" + "0" * 56,
         "quantization": "gemma3 270M Q4_K - Medium", "n_batch": 512, "chat": False, "max_prompt_tokens": 1024}
DECODING = {"max_new_tokens": 200, "length_ratio": 2.5, "length_slack": 16, "stop": ["\n"], "loop_guard": True,
            "loop_max_period": 16, "loop_min_repeats": 4, "loop_min_span": 32, "loop_after": 0.5, "strategy": "greedy"}
CODE = {"pretty-align": "0.1.0", "source_sha256": "0929d038aabbccdd"}
PACKAGES = {"python": "3.11.7", "torch": "2.3.0"}
TASK = {"task": "translation", "template": "...", "template_sha256": "b95fbae98b9694fc", "split": "dev"}


def sig(model=GEMMA, prior=None, decoding=DECODING):
    out = {"role": "base" if prior else "reference", "model": model, "task": TASK, "decoding": decoding,
           "packages": PACKAGES, "code": CODE}
    return {**out, "prior": prior} if prior else out


@pytest.mark.parametrize("signature, expected", [
    (sig(prior={"strategy": "pseudo", "k": 2, "dictionary_sha256": "1a2b3c4d" + "f" * 56,
                "stopwords_sha256": "49152fb4" + "e" * 56, "skip_identity": True, "match_case": True}),
     "model:gemma3-270m|sha:a5fd3b62|backend:llamacpp|prior:pseudo|k:2|dict:1a2b3c4d|stopwords:49152fb4"
     "|dec:greedy,max200,stop\\n|code:0929d038"),
    # the reference model's own answer: no prior; an HF hub model pinned by revision, with a LoRA adapter
    (sig(model={"backend": "hf", "model": "google/gemma-3-270m", "kind": "hub", "sha256": None,
                "revision": "9b0cfec892e2bc2afd938c98eabe4e4a7b1e0ca1", "adapter_sha256": "77aa11bb" + "0" * 56,
                "dtype": "float32", "chat": True, "max_prompt_tokens": 1024}),
     "model:google/gemma-3-270m|rev:9b0cfec8|adapter:77aa11bb|backend:hf|dtype:float32|chat:yes"
     "|dec:greedy,max200,stop\\n|code:0929d038"),
    # a model prior names its model; a local path is shortened to the file name; non-default decoding shows
    (sig(model={**GEMMA, "model": "/models/base/gemma.gguf", "batch_size": 4},
         prior={"strategy": "sft", "k": 1, "model": {"backend": "llamacpp", "model": "gemma3-270m-it",
                                                    "sha256": "cafebabe" + "1" * 56},
                "decoding": DECODING, "task": TASK},
         decoding={**DECODING, "stop": ["\n", "|"], "loop_guard": False}),
     "model:gemma.gguf|sha:a5fd3b62|backend:llamacpp|batch:4|prior:sft|k:1|from:gemma3-270m-it@cafebabe"
     "|dec:greedy,max200,stop\\n,stop\\|,loop_guard=False|code:0929d038"),
    (sig(model={"backend": "openai", "model": "qwen", "revision": None, "sha256": None, "chat": False},
         prior={"strategy": "random", "k": 1, "dictionary_sha256": "deadbeef" + "2" * 56, "seed": 3}),
     "model:qwen|backend:openai|prior:random|k:1|dict:deadbeef|seed:3|dec:greedy,max200,stop\\n|code:0929d038"),
])
def test_compact_signature(signature, expected):
    assert compact_signature(signature) == expected
