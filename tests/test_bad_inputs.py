"""Every bad input named in DEVELOPERS.md rule 4 gets a clear error naming file/line/field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pretty_align.backends import load_backend
from pretty_align.errors import InputError, UnknownLanguageError
from pretty_align.experiment.config import load_config
from pretty_align.languages import get_language
from pretty_align.priors import make_prior
from pretty_align.priors.dictionary import BilingualDictionary
from pretty_align.tasks.translation import TranslationTask


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretty_align.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_missing_flores_directory(tmp_path):
    task = TranslationTask(flores=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere: FLORES directory not found"):
        list(task.examples(get_language("deu_Latn")))


def test_missing_language_file(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "eng_Latn.dev").write_text("Hello.\n")
    task = TranslationTask(flores=str(tmp_path))
    with pytest.raises(InputError, match=r"deu_Latn\.dev: reference file not found"):
        list(task.examples(get_language("deu_Latn")))


def test_empty_source_line_names_file_and_line(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("One.\n\nThree.\n")
    task = TranslationTask(src_file=str(src))
    with pytest.raises(InputError, match=r"src\.txt:2: empty line"):
        list(task.examples(get_language("deu_Latn")))


def test_misaligned_files(tmp_path):
    (tmp_path / "s.txt").write_text("One.\nTwo.\n")
    (tmp_path / "r.txt").write_text("Eins.\n")
    task = TranslationTask(src_file=str(tmp_path / "s.txt"), ref_file=str(tmp_path / "r.txt"))
    with pytest.raises(InputError, match="r.txt: reference has 1 lines but the source"):
        list(task.examples(get_language("deu_Latn")))


def test_unknown_language_code_lists_known_ones():
    with pytest.raises(UnknownLanguageError, match="unknown language code 'deu'.*deu_Latn"):
        get_language("deu")


def test_unknown_language_in_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name="x"\n[base]\nmodel="fake:echo"\nbackend="fake"\n[task]\ntargets=["xx_Latn"]\nflores="."\n')
    with pytest.raises(InputError, match=r"c\.toml.*task\.targets.*unknown language code 'xx_Latn'"):
        load_config(cfg)


def test_unknown_config_field_is_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name="x"\n[base]\nmodel="fake:echo"\nbakend="fake"\n[task]\ntargets=["deu_Latn"]\n')
    with pytest.raises(InputError, match=r"field 'base\.bakend'"):
        load_config(cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "none.toml")


@pytest.mark.parametrize("spec", ["./no/such/model.gguf", "/abs/missing-dir", "~/nothing/here"])
def test_model_path_that_does_not_exist(spec):
    with pytest.raises(InputError, match="does not exist"):
        load_backend("hf", spec)


def test_model_file_that_is_not_gguf(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a .gguf file"):
        load_backend("hf", str(f))


def test_unknown_backend_and_prior_list_choices():
    with pytest.raises(KeyError, match="available: fake, hf"):
        load_backend("vllmx", "m")
    with pytest.raises(KeyError, match="available:.*pseudo"):
        make_prior("psuedo")


def test_malformed_dictionary_line_strict(tmp_path):
    d = tmp_path / "d.txt"
    d.write_text("cat\tKatze\nbroken-line-without-target\n")
    with pytest.raises(InputError, match=r"d\.txt:2"):
        BilingualDictionary.load(d, strict=True)
    lenient = BilingualDictionary.load(d)
    assert lenient.malformed_count == 1 and lenient.malformed_lines == [2]


def test_missing_command_for_command_prior():
    with pytest.raises(InputError, match="command not found: 'apertium-nonexistent'"):
        make_prior("command", k=1, command="apertium-nonexistent eng-spa")


def test_cli_reports_errors_without_traceback(tmp_path):
    out = cli("translate", "--to", "xx_Latn", "--model", "fake:echo", "--backend", "fake", "Hello.")
    assert out.returncode == 2 and "unknown language code 'xx_Latn'" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_empty_stdin_line(tmp_path):
    out = cli("translate", "--to", "deu_Latn", "--model", "fake:echo", "--backend", "fake", stdin="Hello.\n\nBye.\n")
    assert out.returncode == 2 and "<stdin>:2: empty source text" in out.stderr


def test_cli_translate_with_fake_backend():
    out = cli("translate", "--to", "deu_Latn", "--model", "fake:upper", "--backend", "fake", stdin="Hello.\nBye.\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["HELLO.", "BYE."]


def test_hub_datasets_need_the_extra(monkeypatch):
    from pretty_align.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    task = TranslationTask(hub="openlanguagedata/flores_plus")
    with pytest.raises(MissingDependencyError, match=r"pip install 'pretty-align\[datasets\]'"):
        list(task.examples(get_language("deu_Latn")))


def test_template_placeholders_are_checked():
    with pytest.raises(InputError, match=r"task\.template.*unknown placeholder\(s\) \['lang'\]"):
        TranslationTask(src_file="x", template="Translate {source} into {lang}:")


def test_cli_run_backend_option_overrides_the_config(tmp_path, shared_data):
    cfg = tmp_path / "b.toml"
    cfg.write_text(f'name = "b"\nstore = "./b.sqlite"\n[base]\nmodel = "fake:echo"\nbackend = "hf"\n'
                   f'[task]\ntargets = ["deu_Latn"]\nflores = "{shared_data / "flores200"}"\nn = 2\n')
    out = cli("run", str(cfg), "--backend", "nope", "--no-progress", "--quiet")
    assert out.returncode == 2 and "nope" in out.stderr and "fake" in out.stderr and "Traceback" not in out.stderr
    out = cli("run", str(cfg), "--backend", "fake", "--no-progress", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "2 results produced" in out.stdout + out.stderr
    assert "|backend:fake|" in (tmp_path / "runs" / "b" / "report.md").read_text()   # the signature names it
    assert '"backend": "fake"' in (tmp_path / "runs" / "b" / "report.json").read_text()   # in full
