"""``command`` prior: per-target command lines (placeholders or a table), run for real.

``tests/bin/fake_mt LANG`` stands in for an MT program: it prints "<greeting in LANG> <line>" per
input line ("Hola The cat."), so each target's output and prior ids are recognisable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import require

from pretty_align.boundary import answer_ids, cut_prior, encode_prompt
from pretty_align.errors import InputError
from pretty_align.languages import get_language
from pretty_align.priors import PriorItem, make_prior
from pretty_align.priors.command import PLACEHOLDERS, CommandPrior
from pretty_align.tasks.base import Example

BIN = Path(__file__).resolve().parent / "bin"
FAKE_MT = BIN / "fake_mt"
ENG, DEU, SPA = (get_language(c) for c in ("eng_Latn", "deu_Latn", "spa_Latn"))
SOURCES = ["The cat sits on the mat.", "The dog runs in the park."]


@pytest.fixture(autouse=True)
def _fake_mt_on_path(monkeypatch):
    """``fake_mt`` is found on PATH, as an installed MT program would be."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def items(tok, tgts=(SPA, DEU), sources=SOURCES) -> list[PriorItem]:
    """Every source for every target, interleaved so one batch mixes targets."""
    out = []
    for i, source in enumerate(sources):
        for tgt in tgts:
            prompt = encode_prompt(tok, f"English: {source}\n{tgt.name}:")
            out.append(PriorItem(Example(f"t/{i}", source, None, ENG, tgt), prompt))
    return out


def expected_ids(tok, item: PriorItem, text: str, k: int) -> list[int]:
    return cut_prior(answer_ids(tok, item.prompt, text), k)


def test_placeholders_listed():
    assert PLACEHOLDERS == ("src", "tgt", "src_iso1", "tgt_iso1", "src_iso3", "tgt_iso3")
    assert isinstance(make_prior("command", command="fake_mt es"), CommandPrior)


def test_placeholder_command_gives_each_target_its_own_output(tiny_tokenizer):
    prior = make_prior("command", k=3, command="fake_mt {tgt_iso1}")
    batch = items(tiny_tokenizer)
    results = prior.build(batch, tiny_tokenizer)
    assert len(results) == len(batch)
    for it, r in zip(batch, results):
        greeting = "Hola" if it.example.tgt is SPA else "Hallo"
        out = f"{greeting} {it.example.source}"
        assert r.provenance == {"strategy": "command", "command": f"fake_mt {it.example.tgt.iso1}", "output": out}
        assert r.ids == expected_ids(tiny_tokenizer, it, out, 3) and not r.fell_back
    # same source, different target: different prior ids
    assert results[0].ids != results[1].ids


def test_one_process_per_expanded_command(tiny_tokenizer, monkeypatch):
    prior = make_prior("command", k=2, command="fake_mt {tgt_iso1}")
    calls = []
    run = prior._run
    monkeypatch.setattr(prior, "_run", lambda line, text: calls.append(line) or run(line, text))
    prior.build(items(tiny_tokenizer), tiny_tokenizer)
    assert sorted(calls) == ["fake_mt de", "fake_mt es"]


def test_signature_holds_the_expanded_command_per_target():
    prior = make_prior("command", k=1, command="fake_mt {tgt_iso1}")
    s_es, s_de = prior.signature(ENG, SPA), prior.signature(ENG, DEU)
    assert s_es["command"] == "fake_mt es" and s_de["command"] == "fake_mt de" and s_es != s_de
    assert s_es["exe_sha256"] == s_de["exe_sha256"] and len(s_es["exe_sha256"]) == 16


def test_all_placeholders_expand():
    prior = make_prior("command", command="fake_mt es {src} {tgt} {src_iso1} {tgt_iso1} {src_iso3} {tgt_iso3}")
    assert prior.signature(ENG, SPA)["command"] == "fake_mt es eng_Latn spa_Latn en es eng spa"


def test_fixed_command_keeps_its_signature():
    """A command without placeholders keys rows as before: its expansion is itself."""
    sig = make_prior("command", k=1, command="fake_mt es").signature(ENG, SPA)
    assert sig == {"strategy": "command", "k": 1, "command": "fake_mt es", "exe_sha256": sig["exe_sha256"]}


def test_per_target_table(tiny_tokenizer):
    prior = make_prior("command", k=2, command={"spa_Latn": "fake_mt es", "deu_Latn": f"{FAKE_MT} de"})
    batch = items(tiny_tokenizer)
    results = prior.build(batch, tiny_tokenizer)
    assert [r.provenance["output"].split()[0] for r in results] == ["Hola", "Hallo", "Hola", "Hallo"]
    assert prior.signature(ENG, DEU)["command"] == f"{FAKE_MT} de"
    prior.check_languages([(ENG, SPA), (ENG, DEU)])  # a table serves several targets


def test_table_missing_target_names_the_field_and_lists_the_table(tiny_tokenizer):
    prior = make_prior("command", command={"spa_Latn": "fake_mt es", "fra_Latn": "fake_mt fr"})
    for call in (lambda: prior.check_languages([(ENG, SPA), (ENG, DEU)]),
                 lambda: prior.signature(ENG, DEU),
                 lambda: prior.build(items(tiny_tokenizer, tgts=(DEU,)), tiny_tokenizer)):
        with pytest.raises(InputError, match=r"field 'priors.command'.*deu_Latn.*fra_Latn, spa_Latn"):
            call()


def test_table_with_unknown_language_code():
    with pytest.raises(InputError, match="field 'priors.command'.*unknown language code 'es'"):
        make_prior("command", command={"es": "fake_mt es"})


def test_unknown_placeholder_is_refused_at_construction():
    with pytest.raises(InputError, match=r"field 'priors.command'.*\{tgt_lang\}.*allowed: \{src\}, \{tgt\}, "
                                         r"\{src_iso1\}, \{tgt_iso1\}, \{src_iso3\}, \{tgt_iso3\}"):
        make_prior("command", command="fake_mt {tgt_lang}")
    with pytest.raises(InputError, match=r"field 'priors.command'.*\{iso\}"):
        make_prior("command", command={"spa_Latn": "fake_mt {iso}"})


def test_missing_executable_at_construction():
    with pytest.raises(InputError, match="field 'priors.command'.*command not found: 'no-such-mt'"):
        make_prior("command", command="no-such-mt {tgt_iso1}")
    with pytest.raises(InputError, match="field 'priors.command'.*command not found: 'no-such-mt'"):
        make_prior("command", command={"spa_Latn": "fake_mt es", "deu_Latn": "no-such-mt de"})


def test_executable_named_by_a_placeholder_is_checked_when_expanded(tmp_path):
    shutil.copy(FAKE_MT, tmp_path / "mt-es")
    prior = make_prior("command", command=f"{tmp_path}/mt-{{tgt_iso1}} {{tgt_iso1}}")  # no mt-de: fine so far
    assert prior.signature(ENG, SPA)["command"] == f"{tmp_path}/mt-es es"
    with pytest.raises(InputError, match=f"field 'priors.command'.*command not found: '{re.escape(str(tmp_path))}/mt-de'"):
        prior.check_languages([(ENG, SPA), (ENG, DEU)])


def test_empty_or_unparsable_command():
    for bad in (None, "", "   ", "fake_mt 'es", {}):
        with pytest.raises(InputError, match="field 'priors.command'"):
            make_prior("command", command=bad)


def test_fixed_command_refused_for_several_targets():
    prior = make_prior("command", command="fake_mt es")
    prior.check_languages([(ENG, SPA)])  # one target: fine
    with pytest.raises(InputError, match=r"field 'priors.command'.*2 targets \(deu_Latn, spa_Latn\).*"
                                         r"\{tgt_iso1\}.*per-target table"):
        prior.check_languages([(ENG, SPA), (ENG, DEU)])
    # a source placeholder does not make it per-target
    with pytest.raises(InputError, match="field 'priors.command'"):
        make_prior("command", command="fake_mt es {src}").check_languages([(ENG, SPA), (ENG, DEU)])
    for ok in ("fake_mt {tgt_iso1}", "fake_mt es {tgt}", "fake_mt es {tgt_iso3}"):
        make_prior("command", command=ok).check_languages([(ENG, SPA), (ENG, DEU)])


def test_base_prior_check_languages_is_a_no_op():
    make_prior("none", k=0).check_languages([(ENG, SPA), (ENG, DEU)])


def test_line_count_mismatch_falls_back_to_one_process_per_source(tiny_tokenizer, monkeypatch):
    prior = make_prior("command", k=4, command="fake_mt {tgt_iso1} --split")
    sources = ["One. Two.", "Three."]  # --split prints 3 lines for these 2
    calls = []
    run = prior._run
    monkeypatch.setattr(prior, "_run", lambda line, text: calls.append(text) or run(line, text))
    results = prior.build(items(tiny_tokenizer, tgts=(SPA,), sources=sources), tiny_tokenizer)
    assert [r.provenance["output"] for r in results] == ["Hola One. Hola Two.", "Hola Three."]
    assert calls == ["One. Two.\nThree.\n", "One. Two.\n", "Three.\n"]


def test_failing_program_is_reported():
    from pretty_align.errors import PrettyAlignError

    prior = make_prior("command", command="fake_mt {tgt_iso1}")
    with pytest.raises(PrettyAlignError, match="prior command 'fake_mt it' exited with"):
        prior.translate(["x"], ENG, get_language("ita_Latn"))


def test_apertium_eng_spa(tiny_tokenizer):
    require(shutil.which("apertium") is not None,
            "apertium is not installed: apt-get install -y apertium apertium-eng-spa (make test does)")
    prior = make_prior("command", k=3, command="apertium {src_iso3}-{tgt_iso3}")
    prior.check_languages([(ENG, SPA)])
    assert prior.signature(ENG, SPA)["command"] == "apertium eng-spa"
    [r] = prior.build(items(tiny_tokenizer, tgts=(SPA,), sources=["The cat sits on the mat."]), tiny_tokenizer)
    assert r.provenance["output"].startswith("El gato") and r.provenance["command"] == "apertium eng-spa"
    assert r.ids and not r.fell_back


# ---- through the runner (fake backend) ----------------------------------------------------------

RUN_CONFIG = """
name = "cmd"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = ["spa_Latn", "deu_Latn"]
flores = "{flores}"
n = 2
[decoding]
batch_size = 2
max_new_tokens = 60
[[priors]]
strategy = "command"
k = 5
command = {command}
"""


def _config(tmp_path: Path, data: Path, command: str):
    """A two-target run config; ``command`` is TOML (a quoted string or an inline table)."""
    from pretty_align.experiment.config import load_config

    path = tmp_path / "cmd.toml"
    path.write_text(RUN_CONFIG.format(store=tmp_path / "cmd.sqlite", flores=data / "flores200", command=command))
    return load_config(path)


@pytest.mark.parametrize("command", ['"fake_mt {tgt_iso1}"', '{ spa_Latn = "fake_mt es", deu_Latn = "fake_mt de" }'])
def test_runner_gives_each_target_its_own_command(tmp_path, shared_data, command):
    from pretty_align.experiment.runner import Runner

    runner = Runner(_config(tmp_path, shared_data, command))
    runner.run(progress=False)
    db = sqlite3.connect(tmp_path / "cmd.sqlite")
    rows = db.execute("SELECT tgt, provenance, prior_text, signature FROM results").fetchall()
    assert len(rows) == 4
    for tgt, prov, prior_text, sig in rows:
        iso1 = get_language(tgt).iso1
        assert json.loads(prov)["command"] == f"fake_mt {iso1}"
        assert json.loads(sig)["prior"]["command"] == f"fake_mt {iso1}"
        assert prior_text == ("Hola" if iso1 == "es" else "Hall")


def test_runner_refuses_fixed_command_for_two_targets(tmp_path, shared_data):
    """Needs the runner to call ``prior.check_languages`` with the run's pairs."""
    from pretty_align.experiment.runner import Runner

    with pytest.raises(InputError, match="field 'priors.command'.*2 targets"):
        Runner(_config(tmp_path, shared_data, '"fake_mt es"')).run(progress=False)
    assert not (tmp_path / "cmd.sqlite").exists() or not sqlite3.connect(tmp_path / "cmd.sqlite").execute(
        "SELECT COUNT(*) FROM results").fetchone()[0]
