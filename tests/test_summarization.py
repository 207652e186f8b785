"""Summarization task: XL-Sum / CrossSum loading, literal-string fields, errors, truncation counted."""

from __future__ import annotations

import json

import pytest

from pretty_align.errors import InputError
from pretty_align.experiment.config import load_config
from pretty_align.experiment.report import compute
from pretty_align.experiment.runner import Runner
from pretty_align.languages import get_language
from pretty_align.tasks.summarization import SummarizationTask

VIE, ENG = get_language("vie_Latn"), get_language("eng_Latn")


def xlsum_line(i, article, summary, literal=False):
    prompts = [{"text": article}]
    return json.dumps({"id": f"a{i}", "label": summary, "prompts": repr(prompts) if literal else prompts,
                       "metadata": repr({"title": f"T{i}"}) if literal else {"title": f"T{i}"}}, ensure_ascii=False)


def test_xlsum_rows_with_python_literal_fields(tmp_path):
    f = tmp_path / "vi_xlsum.jsonl"
    f.write_text(xlsum_line(1, "Bài báo một.", "Tóm tắt một.") + "\n" +
                 xlsum_line(2, "Bài báo hai.", "Tóm tắt hai.", literal=True) + "\n")
    task = SummarizationTask(data=str(tmp_path / "{tgt_iso1}_xlsum.jsonl"))
    ex = list(task.examples(VIE))
    assert [e.source for e in ex] == ["Bài báo một.", "Bài báo hai."] and ex[1].meta["title"] == "T2"
    assert ex[0].src == VIE and ex[0].reference == "Tóm tắt một." and ex[0].id == "xlsum/vi_xlsum.jsonl/a1"
    assert task.render(ex[0]) == ("Summarize the following Vietnamese article in Vietnamese.\n"
                                  "Article: Bài báo một.\nSummary:")
    assert task.clean_answer("Here is the summary:\nSummary: Một câu.\nMore", ex[0]) == "Một câu."


def test_crosssum_needs_a_source_language_and_reads_text_summary(tmp_path):
    f = tmp_path / "eng_Latn-vie_Latn.jsonl"
    f.write_text(json.dumps({"text": "An article.", "summary": "Tóm tắt."}) + "\n")
    with pytest.raises(InputError, match="task.source"):
        SummarizationTask(data=str(f), format="crosssum")
    task = SummarizationTask("eng_Latn", data=str(tmp_path / "{src}-{tgt}.jsonl"), format="crosssum")
    [ex] = task.examples(VIE)
    assert (ex.src, ex.tgt, ex.source, ex.reference) == (ENG, VIE, "An article.", "Tóm tắt.")


@pytest.mark.parametrize("content, message", [
    ("{not json\n", r"x.jsonl:1: not valid JSON"),
    (json.dumps({"id": "1", "label": "S", "prompts": []}) + "\n", r"x.jsonl:1: missing or empty article"),
    (xlsum_line(1, "A.", "S.") + "\n\n" + json.dumps({"id": "2", "label": " ", "prompts": [{"text": "B"}]}) + "\n",
     r"x.jsonl:3: missing or empty summary \(field 'label'\)"),
])
def test_bad_jsonl_names_file_line_and_field(tmp_path, content, message):
    (tmp_path / "x.jsonl").write_text(content)
    with pytest.raises(InputError, match=message):
        list(SummarizationTask(data=str(tmp_path / "x.jsonl")).examples(VIE))


def test_real_xlsum_samples_load(shared_data):
    task = SummarizationTask(data=str(shared_data / "xlsum" / "{tgt_iso1}_xlsum_100sample.jsonl"))
    for code in ("vie_Latn", "tha_Thai", "ind_Latn"):
        ex = list(task.examples(get_language(code)))
        assert len(ex) == 100 and all(e.source and e.reference for e in ex)


def test_truncated_articles_are_counted_in_the_report(tmp_path):
    (tmp_path / "vi.jsonl").write_text("".join(xlsum_line(i, "Một câu rất dài. " * (40 if i % 2 else 2), "Tóm tắt.")
                                               + "\n" for i in range(4)))
    cfg = tmp_path / "s.toml"
    cfg.write_text('name = "s"\n[base]\nmodel = "fake:echo"\nbackend = "fake"\n'
                   '[task]\nname = "summarization"\ntargets = ["vie_Latn"]\ndata = "./vi.jsonl"\nn = 4\n'
                   'max_prompt_tokens = 200\n[decoding]\nmax_new_tokens = 8\n')
    runner = Runner(load_config(cfg))
    summary = runner.run(progress=False)
    assert summary.truncated == 2
    res = compute(runner.store, "s")
    cell = res["cells"]["none"]["vie_Latn"]
    assert cell["truncated"] == 2 and "ROUGE-L" in cell and "BLEU" not in cell
    assert res["metrics"] == ["ROUGE-1", "ROUGE-2", "ROUGE-L", "off-target %"]


# -- the summarization pseudo prior -------------------------------------------------------------

from pretty_align.backends.fake import CharTokenizer  # noqa: E402
from pretty_align.boundary import encode_prompt  # noqa: E402
from pretty_align.priors import PriorItem, make_prior  # noqa: E402
from pretty_align.priors.summarization import lead  # noqa: E402

THA = get_language("tha_Thai")


def _priors(task, prior, tgt):
    tok = CharTokenizer()
    items = [PriorItem(ex, encode_prompt(tok, task.render(ex))) for ex in task.examples(tgt)]
    return prior.build(items, tok)


def test_lead_is_the_first_sentence():
    assert lead("Câu một. Câu hai.") == "Câu một."
    assert lead("第一句。第二句。") == "第一句。"
    assert lead("Line one\nLine two. More") == "Line one"
    assert lead("No end at all") == "No end at all"


def test_monolingual_pseudo_prior_skips_frequent_words_and_keeps_combining_marks(tmp_path):
    # "Các" and "người" occur in every article (document frequency 1.0 >= max_df): stop words.
    articles = ["Các người lính đã về. Sau đó.", "Các người dân vui. X.", "Người các nước họp."]
    (tmp_path / "vi.jsonl").write_text("".join(xlsum_line(i, a, "S.") + "\n" for i, a in enumerate(articles)))
    (tmp_path / "th.jsonl").write_text(xlsum_line(0, "นกกระจอกหัวมงกุฏ ร้องเพลง", "S.") + "\n")
    task = SummarizationTask(data=str(tmp_path / "{tgt_iso1}.jsonl"))
    prior = make_prior("summarization-pseudo", k=4, task=task, max_df=0.6)  # " lín": the sep counts
    got = _priors(task, prior, VIE)
    assert [p.provenance["source_word"] for p in got] == ["lính", "dân", "nước"]
    assert [p.text for p in got] == ["lín", "dân", "nướ"] and not any(p.fell_back for p in got)
    sig = prior.signature(VIE, VIE)
    assert sig["monolingual"] and sig["max_df"] == 0.6 and len(sig["df_stopwords_sha256"]) == 16
    # Thai vowel marks are part of the word, not word breaks (plain `re` split it at U+0E31)
    [th] = _priors(task, make_prior("summarization-pseudo", k=20, task=task), THA)
    assert th.provenance["source_word"] == "นกกระจอกหัวมงกุฏ"


def test_crosslingual_pseudo_prior_translates_the_leads_first_content_word(tmp_path):
    (tmp_path / "eng_Latn-vie_Latn.jsonl").write_text(
        json.dumps({"text": "The soldiers came home. Later.", "summary": "S."}) + "\n")
    (tmp_path / "en-vi.txt").write_text("soldiers lính\nhome nhà\n")
    task = SummarizationTask("eng_Latn", data=str(tmp_path / "{src}-{tgt}.jsonl"), format="crosssum")
    prior = make_prior("summarization-pseudo", k=5, task=task, dictionary=str(tmp_path / "en-{tgt_iso1}.txt"))
    [p] = _priors(task, prior, VIE)
    assert (p.provenance["source_word"], p.text) == ("soldiers", "lính")
    assert prior.signature(ENG, VIE)["strategy"] == "summarization-pseudo"


def test_summarization_pseudo_prior_refuses_other_tasks_and_bad_params():
    with pytest.raises(InputError, match="summarization task only"):
        make_prior("summarization-pseudo", k=2)
    task = SummarizationTask(data="x.jsonl")
    with pytest.raises(InputError, match="max_df"):
        make_prior("summarization-pseudo", k=2, task=task, max_df=0)
    with pytest.raises(InputError, match="takes no parameter 'maxdf'"):
        make_prior("summarization-pseudo", k=2, task=task, maxdf=0.2)
