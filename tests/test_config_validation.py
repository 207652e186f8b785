"""Every config field has a range or a set of values, unknown keys are refused everywhere, and the
CLI answers nonsense with exit code 2 and a message naming the field, before any model is loaded."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pretty_align.cli import app

CONFIG = """
name = "v"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = ["deu_Latn"]
flores = "{flores}"
n = 2
{prior}
"""
GOOD_PRIOR = '[[priors]]\nstrategy = "none"'

# (--set override, the field the message must name, a fragment of the message)
BAD_SETS = [
    ("decoding.max_new_tokens=-5", "decoding.max_new_tokens", "greater than or equal to 1"),
    ("decoding.max_new_tokens=0", "decoding.max_new_tokens", "greater than or equal to 1"),
    ("decoding.length_ratio=0", "decoding.length_ratio", "greater than 0"),
    ("decoding.length_slack=-1", "decoding.length_slack", "greater than or equal to 0"),
    ("decoding.batch_size=0", "decoding.batch_size", "greater than or equal to 1"),
    ("decoding.loop_max_period=0", "decoding.loop_max_period", "greater than or equal to 1"),
    ("decoding.loop_min_repeats=1", "decoding.loop_min_repeats", "greater than or equal to 2"),
    ("decoding.loop_min_span=0", "decoding.loop_min_span", "greater than or equal to 1"),
    ('decoding.stop=[""]', "decoding.stop.0", "at least 1 character"),
    ('decoding.loop_guard="maybe"', "decoding.loop_guard", "valid boolean"),
    ("decoding.temperature=0.7", "decoding.temperature", "Extra inputs are not permitted"),
    ("task.n=0", "task.n", "greater than or equal to 1"),
    ("task.offset=-1", "task.offset", "greater than or equal to 0"),
    ("task.max_prompt_tokens=0", "task.max_prompt_tokens", "greater than or equal to 16"),
    ("task.targets=[]", "task.targets", "at least 1 item"),
    ('task.targets=["deu_Latn","deu_Latn"]', "task.targets", "listed twice"),
    ('task.targets=["xx_Yyyy"]', "task.targets", "xx_Yyyy"),
    ("task.split=train2", "task.split", "'dev', 'devtest', 'test' or 'train'"),
    ("task.format=json", "task.format", "'xlsum' or 'crosssum'"),
    ("task.treebank=ewt", "task.treebank", "'xglue' or 'pud'"),
    ("task.answer_format=json", "task.answer_format", "'word/tag' or 'tags'"),
    ("task.shots=-1", "task.shots", "greater than or equal to 0"),
    ("task.shots_split=devtest", "task.shots_split", "'dev', 'test' or 'train'"),
    ("task.name=parsing", "task.name", "unknown task 'parsing'; available:"),
    ("task.bogus=1", "task.bogus", "Extra inputs are not permitted"),
    ("task.treebank=pud", "task.treebank", "task 'translation' takes no field 'treebank'"),
    ("base.backend=tensorflow", "base.backend", "unknown backend 'tensorflow'; available:"),
    ("base.dtype=int8", "base.dtype", "'float32', 'bfloat16', 'float16' or 'auto'"),
    ('base.model=""', "base.model", "at least 1 character"),
    ("base.temperature=1", "base.temperature", "Extra inputs are not permitted"),
    ("base.options.temperature=1", "base.options", "the fake backend takes no option 'temperature'; its options:"),
    ("analysis.top_k=0", "analysis.top_k", "greater than or equal to 1"),
    ("analysis.priors=[-1]", "analysis.priors.0", "greater than or equal to 0"),
    ("analysis.batch_size=0", "analysis.batch_size", "greater than or equal to 1"),
    ("analysis.n=0", "analysis.n", "greater than or equal to 1"),
    ("analysis.mode=fast", "analysis.mode", "'auto' or 'exact'"),
    ("metrics.ratio_floor=-1", "metrics.ratio_floor", "greater than or equal to 0"),
    ('metrics.langid_langs=["Deutsch"]', "metrics.langid_langs.0", "match pattern"),
    ("store_synchronous=OFF", "store_synchronous", "'NORMAL' or 'FULL'"),
    ('name="a/b"', "name", "match pattern"),
    ("colour=red", "colour", "Extra inputs are not permitted"),
]

BAD_PRIORS = [
    ('strategy = "telepathy"', "priors.0.strategy", "unknown prior strategy 'telepathy'"),
    ('strategy = "gold"\nk = -1', "priors.0.k.0", "greater than or equal to 0"),
    ('strategy = "gold"\nk = []', "priors.0.k", "at least 1 item"),
    ('strategy = "gold"\nk = [1, 1]', "priors.0.k", "listed twice"),
    ('strategy = "gold"\nk = 1.5', "priors.0.k.0", "valid integer"),
    ('strategy = "model"\nbackend = "tensorflow"', "priors.0.backend", "unknown backend"),
    ('strategy = "model"\ndtype = "int4"', "priors.0.dtype", "'float32', 'bfloat16', 'float16' or 'auto'"),
    ('strategy = "gold"\nname = ""', "priors.0.name", "at least 1 character"),
    ('strategy = "gold"\nsmoothing = 1', "priors.0.smoothing", "Extra inputs are not permitted"),
    ('strategy = "command"\ncommand = ""', "priors.0.command", "at least 1 character"),
    ('strategy = "gold"\nparams = { temperature = 1 }', "priors.temperature", "takes no parameter 'temperature'"),
]


def invoke(tmp_path, shared_data, args=(), prior=GOOD_PRIOR):
    cfg = tmp_path / "v.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "v.sqlite", flores=shared_data / "flores200", prior=prior))
    return CliRunner().invoke(app, ["run", str(cfg), "--no-progress", "--quiet", *args])


def test_the_valid_config_runs(tmp_path, shared_data):
    result = invoke(tmp_path, shared_data)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("override,field,message", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_each_field_refuses_nonsense(tmp_path, shared_data, override, field, message):
    result = invoke(tmp_path, shared_data, ["--set", override])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())     # rich wraps long lines
    assert f"field '{field}'" in text and message in text, text
    assert not (tmp_path / "v.sqlite").exists() or "takes no field" in text   # refused before any work


@pytest.mark.parametrize("prior,field,message", BAD_PRIORS, ids=[b[0].replace("\n", " ") for b in BAD_PRIORS])
def test_each_prior_field_refuses_nonsense(tmp_path, shared_data, prior, field, message):
    result = invoke(tmp_path, shared_data, prior="[[priors]]\n" + prior)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"field '{field}'" in text and message in text, text


def test_tasks_refuse_unknown_keywords():
    from pretty_align.tasks.translation import TranslationTask

    with pytest.raises(TypeError, match="treebank"):
        TranslationTask(texts=["a"], treebank="pud")


def test_a_strategy_the_task_does_not_have_is_refused_before_any_work(tmp_path):
    """``refined`` is a translation and a POS prior; a summarization config asking for it is refused
    at load, naming the strategies summarization has (it used to fail after the models loaded)."""
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'name = "s"\nstore = "{tmp_path / "s.sqlite"}"\n[base]\nmodel = "fake:echo"\nbackend = "fake"\n'
                   '[task]\nname = "summarization"\ntargets = ["vie_Latn"]\ndata = "x/{tgt_iso1}.jsonl"\n'
                   '[[priors]]\nstrategy = "none"\n[[priors]]\nstrategy = "refined"\nk = 2\n')
    result = CliRunner().invoke(app, ["run", str(cfg), "--no-progress"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "field 'priors.1.strategy'" in text, text
    assert "'refined' is not a summarization prior" in text and "pseudo" in text
    assert not (tmp_path / "s.sqlite").exists()
