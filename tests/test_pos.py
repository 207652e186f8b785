"""POS task: treebank paths, display words, references, accuracy on malformed answers, end to end."""

from __future__ import annotations

import pytest

from pretty_align.errors import InputError
from pretty_align.experiment.config import load_config
from pretty_align.experiment.report import compute
from pretty_align.experiment.runner import Runner
from pretty_align.languages import get_language
from pretty_align.metrics.pos import POSAccuracy
from pretty_align.tasks.pos import POSTask

FRA, VIE = get_language("fra_Latn"), get_language("vie_Latn")
REF = "Il/PRON parle/VERB de/ADP le/DET chat/NOUN ./PUNCT"


def test_accuracy_counts_every_failure_as_wrong():
    acc = POSAccuracy()
    hyps = [REF, "Il/PRON parle/VB de/ADP le chat/NOUN", "I cannot do that", ""]
    score = acc.corpus_score(hyps, [REF] * 4, FRA)
    # 6 + 3 (parle invalid, le garbled, . missing) + 0 + 0 correct of 24
    assert score.value == pytest.approx(100 * 9 / 24)
    assert score.extra["tokens"] == 24 and score.extra["garbled"] >= 4 and score.extra["invalid"] == 1
    assert score.extra["confusion"]["VERB>-"] == 3 and score.extra["confusion"]["NOUN>NOUN"] == 2
    tags_only = acc.corpus_score(["PRON VERB ADP DET NOUN"], ["PRON VERB ADP DET NOUN PUNCT"], FRA)
    assert tags_only.value == pytest.approx(100 * 5 / 6)


def test_real_treebanks_give_examples_with_display_words(shared_data):
    task = POSTask(data=str(shared_data / "ud-2.5"), n=5)
    ex = list(task.examples(VIE))
    assert len(ex) == 5 and ex[0].src == VIE and ex[0].id.startswith("ud/xglue/test/")
    assert all(" " not in w for e in ex for w in e.meta["words"])          # "sinh viên" -> "sinh_viên"
    assert any("_" in w for e in list(POSTask(data=str(shared_data / "ud-2.5"), n=50).examples(VIE))
               for w in e.meta["words"])
    assert ex[0].reference.split()[0].rsplit("/", 1)[1] in ex[0].meta["tags"]
    pud = list(POSTask(data=str(shared_data / "ud-2.5"), treebank="pud", n=2).examples(get_language("zho_Hans")))
    assert len(pud) == 2
    prompt = task.render(ex[0])
    assert prompt.startswith("Tag each word of the following Vietnamese sentence") and prompt.endswith("Tagged:")


def test_bad_pos_settings_are_named(tmp_path):
    with pytest.raises(InputError, match="task.data"):
        POSTask()
    with pytest.raises(InputError, match="no XGLUE POS treebank for swh_Latn"):
        list(POSTask(data=str(tmp_path)).examples(get_language("swh_Latn")))
    with pytest.raises(InputError, match="CoNLL-U file not found"):
        list(POSTask(data=str(tmp_path)).examples(FRA))
    with pytest.raises(InputError, match="answer_format"):
        POSTask(data=str(tmp_path), answer_format="json")
    with pytest.raises(InputError, match=r"task\.template.*unknown placeholder\(s\) \['sentence'\]"):
        POSTask(data=str(tmp_path), template="Tag {sentence}: {words}")


def test_pos_runs_end_to_end_with_accuracy_in_the_report(tmp_path):
    conllu = tmp_path / "fr.conllu"
    conllu.write_text("# sent_id = s1\n# text = Il parle.\n1\tIl\til\tPRON\t_\t_\t2\tnsubj\t_\t_\n"
                      "2\tparle\tparler\tVERB\t_\t_\t0\troot\t_\tSpaceAfter=No\n3\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_\n\n")
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'name = "p"\n[base]\nmodel = "fake:echo"\nbackend = "fake"\n[task]\nname = "pos"\n'
                   f'targets = ["fra_Latn"]\ndata = "{tmp_path}/{{tgt_iso1}}.conllu"\n[decoding]\nmax_new_tokens = 40\n')
    runner = Runner(load_config(cfg))
    runner.run(progress=False)
    res = compute(runner.store, "p")
    assert res["metrics"] == ["accuracy"]
    # fake:echo repeats the words without tags: every token is wrong, nothing crashes
    assert res["cells"]["none"]["fra_Latn"]["accuracy"] == 0.0
    from pretty_align.experiment.report import per_tag_accuracy, to_markdown

    assert per_tag_accuracy(res) == {"none": {"PRON": 0.0, "PUNCT": 0.0, "VERB": 0.0}}
    assert "## Per-tag accuracy" in to_markdown(res)


def test_pos_priors_from_another_split(shared_data):
    from pretty_align.boundary import encode_prompt
    from pretty_align.backends.fake import CharTokenizer
    from pretty_align.priors import make_prior
    from pretty_align.priors.base import PriorItem

    task = POSTask(data=str(shared_data / "ud-2.5"), n=20)
    tok = CharTokenizer()
    items = [PriorItem(ex, encode_prompt(tok, task.render(ex))) for ex in task.examples(FRA)]
    gold = [ex.meta["tags"] for ex in (it.example for it in items)]
    for name in ("pos-pseudo", "pos-refined"):
        prior = make_prior(name, k=1000, task=task)     # k large: the whole predicted answer
        results = prior.build(items, tok)
        predicted = [prior.predict(prior._model(FRA), it.example.meta["words"])[0] for it in items]
        assert results[0].provenance["predicted"].startswith(results[0].text.strip()[:20])
        acc = sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs)) / sum(map(len, gold))
        assert acc > 0.8, (name, acc)   # trained on the dev split, scored on test sentences
        assert results[0].provenance["trained_on"] == "fr_gsd-ud-dev.conllu"
        assert prior.signature(FRA, FRA)["trained_on_sha256"]
    short = make_prior("pos-pseudo", k=3, task=task).build(items[:1], tok)[0]
    assert len(short.ids) == 3            # cut to k base tokens like every prior
    with pytest.raises(InputError, match="evaluation file itself"):
        make_prior("pos-pseudo", k=1, task=POSTask(data=str(shared_data / "ud-2.5"), split="dev")).signature(FRA, FRA)
    with pytest.raises(InputError, match="pos task only"):
        make_prior("pos-pseudo", k=1)


def test_demonstrations_come_from_another_split(shared_data):
    task = POSTask(data=str(shared_data / "ud-2.5"), n=1, shots=2)
    [ex] = task.examples(FRA)
    prompt = task.render(ex)
    assert prompt.count("Words: ") == 3 and prompt.count("Tagged: ") == 2 and prompt.endswith("Tagged:")
    demo_words = prompt.split("Words: ")[1].split("\n")[0].split()
    assert len(demo_words) <= 12 and "/" in prompt.split("Tagged: ")[1]
    assert POSTask(data=str(shared_data / "ud-2.5"), n=1).render(ex).count("Words: ") == 1   # zero-shot default
    assert task.signature()["shots"] == 2
    with pytest.raises(InputError, match="evaluated file"):
        POSTask(data=str(shared_data / "ud-2.5"), split="dev", shots=1).render(ex)
    with pytest.raises(InputError, match="{demos}"):
        POSTask(data=str(shared_data / "ud-2.5"), shots=1, template="Words: {words}\nTagged:")
