"""The experiment runner and store: resume after SIGKILL, content-hash keys, no overwrites."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pretty_align.experiment.config import load_config
from pretty_align.experiment.report import compute, to_markdown, write_report
from pretty_align.experiment.runner import Runner
from pretty_align.experiment.store import Store

CONFIG = """
name = "t"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
options = {{ delay = {delay}, batch_dependent = {batch_dependent} }}
[reference]
model = "fake:upper"
backend = "fake"
[task]
targets = ["deu_Latn", "zho_Hans"]
flores = "{flores}"
n = {n}
max_prompt_tokens = {max_prompt_tokens}
[decoding]
batch_size = 2
max_new_tokens = {max_new}
[[priors]]
strategy = "none"
[[priors]]
strategy = "pseudo"
k = [1, 2]
dictionary = "{muse}/en-{{tgt_iso1}}.txt"
[[priors]]
strategy = "model"
k = 2
model = "reference"
[[priors]]
strategy = "gold"
k = 3
"""


def write_config(tmp_path: Path, data: Path, store: str, *, delay=0.0, n=6, max_new=200, max_prompt_tokens=1024,
                 batch_dependent=False):
    cfg = tmp_path / f"{Path(store).stem}.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / store, delay=delay, n=n, max_new=max_new,
                                 batch_dependent=str(batch_dependent).lower(),
                                 flores=data / "flores200", muse=data / "dictionaries" / "muse",
                                 max_prompt_tokens=max_prompt_tokens))
    return cfg


def table(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT key, condition, tgt, example_id, output, prior_ids FROM results ORDER BY key").fetchall()
    assert db.execute("SELECT COUNT(DISTINCT key) FROM results").fetchone()[0] == len(rows)
    return rows


def test_full_run_and_report(tmp_path, shared_data):
    cfg = load_config(write_config(tmp_path, shared_data, "a.sqlite"))
    runner = Runner(cfg)
    summary = runner.run(progress=False)
    assert summary.total == 6 * 2 * 6 and summary.produced == summary.total  # 6 conditions x 2 langs x 6
    res = compute(runner.store, "t")
    assert res["complete"] == "72/72"
    assert res["conditions"] == ["reference", "none", "pseudo k=1", "pseudo k=2", "model k=2", "gold k=3"]
    assert res["cells"]["reference"]["deu_Latn"]["% ref chrF++"] == 100.0
    assert "tok:zh" in " ".join(res["metric_signatures"]["BLEU"])
    rows = runner.store.rows("t")
    gold = [r for r in rows if r["condition"] == "gold k=3"]
    assert all(r["output"].startswith(r["prior_text"]) and r["prior_text"] for r in gold)
    model = [r for r in rows if r["condition"] == "model k=2"]
    # same tokenizer, same plain prompt: the reference's own ids are cut (the sft path)
    assert all(r["provenance"]["path"] == "ids" for r in model)
    assert all(r["prior_ids"] == [ord(ch) + 3 for ch in " " + r["provenance"]["answer"][:1]] for r in model)
    # a second run produces nothing new
    again = Runner(cfg).run(progress=False)
    assert again.produced == 0 and again.skipped == 72
    md, _ = write_report(runner.store, "t", tmp_path / "rep")
    text = md.read_text()
    assert "## deu_Latn" in text and "Mean over languages" in text and "nrefs:1" in text


@pytest.mark.parametrize("batch_dependent", [False, True], ids=["batch-invariant", "batch-dependent"])
def test_sigkill_then_resume_gives_the_same_rows(tmp_path, shared_data, batch_dependent):
    ref_cfg = write_config(tmp_path, shared_data, "uninterrupted.sqlite", batch_dependent=batch_dependent)
    Runner(load_config(ref_cfg)).run(progress=False)
    expected = table(tmp_path / "uninterrupted.sqlite")
    if batch_dependent:
        assert any("(batch of" in row[4] for row in expected)

    # 0.04 s per request: 57 rows (2.3 s) left after the 15th, ten polls to see it and kill
    cfg = write_config(tmp_path, shared_data, "killed.sqlite", delay=0.04, batch_dependent=batch_dependent)
    cmd = [sys.executable, "-m", "pretty_align.cli", "run", str(cfg), "--no-progress", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "killed.sqlite"
    deadline = time.time() + 120
    count = 0
    while time.time() < deadline:
        time.sleep(0.2)
        if store.exists():
            try:
                count = sqlite3.connect(store).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if count >= 15:  # the 12 reference rows, then 3 into the base model's first chunk of 6
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = table(store)
    assert 15 <= len(partial) < len(expected), "the run must be killed part-way"
    assert set(partial) <= set(expected)  # what was stored before the kill is already final
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(expected) - len(partial)} results produced, {len(partial)} already stored" in resumed.stderr
    assert table(store) == expected


def test_changing_a_signature_field_makes_new_rows(tmp_path, shared_data):
    Runner(load_config(write_config(tmp_path, shared_data, "s.sqlite", n=3))).run(progress=False)
    before = table(tmp_path / "s.sqlite")
    runner = Runner(load_config(write_config(tmp_path, shared_data, "s.sqlite", n=3, max_new=50)))
    summary = runner.run(progress=False)
    assert summary.produced == 36 and summary.skipped == 0  # decoding is in every key
    after = table(tmp_path / "s.sqlite")
    assert len(after) == 2 * len(before) and set(before) <= set(after)  # old rows kept, untouched
    assert runner.store.count_rows("t") == 36  # the report sees the current run only


def test_store_never_overwrites(tmp_path):
    store = Store(tmp_path / "x.sqlite")
    row = dict(key="k1", condition="c", tgt="deu_Latn", example_id="e", source="s", reference="r", output="o",
               prior_text="", prior_ids=[], prior_fell_back=0, provenance={}, new_tokens=1, stop_reason="stop",
               truncated=0, detected_lang="de", signature={})
    assert store.insert_results([row]) == []
    assert store.insert_results([{**row, "output": "changed"}]) == ["k1"]   # kept, never overwritten
    assert store.db.execute("SELECT output FROM results").fetchall() == [("o",)]


def test_over_long_inputs_are_truncated_not_fatal(tmp_path, shared_data):
    cfg = load_config(write_config(tmp_path, shared_data, "long.sqlite", n=4, max_prompt_tokens=120))
    summary = Runner(cfg).run(progress=False)
    assert summary.produced == summary.total and summary.truncated > 0
    rows = Store(tmp_path / "long.sqlite").rows("t")
    assert any(r["truncated"] for r in rows)


def test_report_command_rerenders_from_the_store(tmp_path, shared_data):
    Runner(load_config(write_config(tmp_path, shared_data, "r.sqlite", n=2))).run(progress=False)
    out = subprocess.run([sys.executable, "-m", "pretty_align.cli", "report", str(tmp_path / "r.sqlite"),
                          "--out", str(tmp_path / "rep")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "rep" / "report.md").exists() and "(24/24 rows)" in out.stdout   # the summary, not the whole report
    assert "Results stored: 24/24" in (tmp_path / "rep" / "report.md").read_text()


def test_model_prior_from_a_chat_model_goes_through_text(tmp_path):
    from pretty_align import translate
    from pretty_align.backends import load_backend
    from pretty_align.decoding import Decoding
    from pretty_align.experiment.answerer import Answerer
    from pretty_align.priors import make_prior
    from pretty_align.tasks.translation import TranslationTask

    chat = load_backend("fake", "fake:upper", chat=True)
    answerer = Answerer(chat, TranslationTask("eng_Latn", texts=["The cat."]), Decoding())
    assert answerer.chat
    base = load_backend("fake", "fake:echo")
    [(ans, prov)] = translate(base, ["The cat."], "deu_Latn", prior=make_prior("model", k=3, answerer=answerer))
    assert prov["path"] == "text" and prov["prior"] == "TH"  # " TH": separator + 2 characters
    assert ans.text.startswith("TH")
    with pytest.raises(Exception, match="tokenizer"):
        from pretty_align.backends.fake import CharTokenizer

        class Other(CharTokenizer):   # other ids for the same text: another vocabulary
            def encode(self, text, add_special_tokens=True):
                return [i + 1 for i in super().encode(text, add_special_tokens)]

        make_prior("sft", k=1, answerer=answerer).build([], Other())


def test_language_id_can_be_restricted(tmp_path, shared_data):
    cfg = load_config(write_config(tmp_path, shared_data, "l.sqlite", n=2),
                      {"metrics.langid_langs": ["de", "en", "zh"]})
    runner = Runner(cfg)
    runner.run(progress=False)
    res = compute(runner.store, "t")
    assert res["metric_signatures"]["off-target %"] == ["langid:py3langid-0.4.0|langs:de,en,zh"]
    assert {r["detected_lang"] for r in runner.store.rows("t")} <= {"de", "en", "zh"}


@pytest.mark.parametrize("raw,clean", [
    ("Der Kater sitzt.", "Der Kater sitzt."),
    ("German: Am Montag.", "Am Montag."),
    ("日本語に翻訳すると、以下のようになります：\n\n「猫がいる。」\n\n説明...", "猫がいる。"),
    ("Here is the translation:\n\"Der Hund.\"", "Der Hund."),
    ("Note:", "Note:"),  # a lone line is kept, even ending in a colon
    ("", ""),
])
def test_translation_answer_extraction(raw, clean):
    from pretty_align.languages import get_language
    from pretty_align.tasks.base import Example
    from pretty_align.tasks.translation import TranslationTask

    task = TranslationTask(src_file="x")
    tgt = get_language("jpn_Jpan") if "日本" in raw else get_language("deu_Latn")
    assert task.clean_answer(raw, Example("e", "s", None, get_language("eng_Latn"), tgt)) == clean


@pytest.mark.parametrize("final", [
    "Der Kater sitzt.", "German: Am Montag.", "German", "Germany wins.", "\"Der Hund.\"", "\"Der Hund", "“Ja”",
    "Here is the translation:\n\"Der Hund.\"", "Note:", "A:\nB:\nDer Hund.\nMehr.", "  Der  Hund \n\nx",
    "日本語に翻訳すると、以下のようになります：\n\n「猫がいる。」\n\n説明...",
])
def test_what_a_server_streams_is_always_the_start_of_the_final_answer(final):
    # Every prefix of an output: what streamable() says is certain must begin the cleaned final answer
    # (a server streams it and cannot take it back), and the whole output gives all of it.
    from pretty_align.languages import get_language
    from pretty_align.tasks.base import Example
    from pretty_align.tasks.translation import TranslationTask

    task = TranslationTask(src_file="x")
    tgt = get_language("jpn_Jpan") if "日本" in final else get_language("deu_Latn")
    ex = Example("e", "s", None, get_language("eng_Latn"), tgt)
    answer = task.clean_answer(final, ex)
    for one_line in (False, True):
        if one_line and "\n" in final.strip():
            continue   # decoding would have stopped at the line break
        for n in range(len(final) + 1):
            safe = task.streamable(final[:n], ex, one_line=one_line)
            assert answer.startswith(safe), (final[:n], safe, answer)
    if "\n" not in final.strip():
        assert task.streamable(final, ex, one_line=True) in {answer, ""}   # "": held until the end (quotes)


def test_chat_answers_run_to_eos():
    from pretty_align.backends import load_backend
    from pretty_align.decoding import Decoding
    from pretty_align.experiment.answerer import Answerer
    from pretty_align.tasks.translation import TranslationTask

    chat = Answerer(load_backend("fake", "fake:upper", chat=True), TranslationTask(src_file="x"), Decoding())
    plain = Answerer(load_backend("fake", "fake:upper"), TranslationTask(src_file="x"), Decoding())
    assert chat.decoding.stop == () and plain.decoding.stop == ("\n",)


def test_report_keeps_each_targets_condition_signature(tmp_path, shared_data):
    """A pseudo prior's signature holds each language's dictionary hash: the report lists both."""
    runner = Runner(load_config(write_config(tmp_path, shared_data, "sigs.sqlite", n=2)))
    runner.run(progress=True)   # exercises the progress bar too
    res = compute(runner.store, "t")
    pseudo = res["condition_signatures"]["pseudo k=2"]
    assert sorted(t for e in pseudo for t in e["targets"]) == ["deu_Latn", "zho_Hans"] and len(pseudo) == 2
    assert len({e["signature"]["prior"]["dictionary_sha256"] for e in pseudo}) == 2
    assert "- pseudo k=2 (deu_Latn):" in to_markdown(res)
    assert len(res["condition_signatures"]["none"]) == 1      # same signature for both targets


def test_conditions_of_one_model_reach_the_backend_together(tmp_path, shared_data):
    """Every prior variant of an example goes to the backend in the same call as the others (so
    the HF backend can prefill the shared prompt once); the reference model gets its own calls."""
    from pretty_align.backends import load_backend

    calls: list[tuple[str, list]] = []

    def factory(name, model, **options):
        backend = load_backend(name, model, **options)
        real = backend.generate
        backend.generate = lambda reqs, dec, on_done=None: calls.append((model, list(reqs))) or real(reqs, dec, on_done)
        return backend

    runner = Runner(load_config(write_config(tmp_path, shared_data, "g.sqlite", n=5)), backend_factory=factory)
    runner.run(progress=False)
    base = [reqs for model, reqs in calls if model == "fake:echo"]
    assert len(base) == 2    # one call per language: 5 examples x 5 base conditions, under one chunk
    for reqs in base:
        assert len(reqs) == 25 and len({r.prompt_ids for r in reqs}) == 5
        assert sorted(len(r.prior_ids) for r in reqs) == sorted([0] * 5 + [1] * 5 + [2] * 5 + [2] * 5 + [3] * 5)
    assert all(len(reqs) == 5 for model, reqs in calls if model == "fake:upper")
