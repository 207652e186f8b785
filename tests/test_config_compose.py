"""Configs compose: ``extends`` names shared configs (paths relative to each file), tables merge
key by key, arrays and values are replaced, the file itself and then --set win."""

from __future__ import annotations

import pytest

from pretty_align.errors import InputError
from pretty_align.experiment.config import load_config, merge


def test_merge_tables_and_replace_the_rest():
    base = {"task": {"n": 50, "targets": ["deu_Latn"]}, "priors": [{"strategy": "none"}], "name": "a"}
    top = {"task": {"n": 10}, "priors": [{"strategy": "gold"}]}
    assert merge(base, top) == {"task": {"n": 10, "targets": ["deu_Latn"]}, "priors": [{"strategy": "gold"}],
                                "name": "a"}
    assert base["task"]["n"] == 50   # inputs untouched


def test_a_later_file_that_changes_the_backend_drops_the_earlier_backends_options(tmp_path, shared_data):
    """Options belong to a backend: llama.cpp's ``n_threads`` must not reach an hf model (which refuses
    it); the same backend keeps merging its options key by key."""
    llama = {"model": "m", "backend": "llamacpp", "options": {"n_threads": 1, "n_ctx": 2048}}
    assert merge({"base": llama}, {"base": {"backend": "hf", "dtype": "auto"}}) == \
        {"base": {"model": "m", "backend": "hf", "dtype": "auto"}}
    assert merge({"base": llama}, {"base": {"backend": "hf", "options": {"prepack": True}}})["base"]["options"] == \
        {"prepack": True}
    assert merge({"base": llama}, {"base": {"backend": "llamacpp", "options": {"n_ctx": 512}}})["base"]["options"] == \
        {"n_threads": 1, "n_ctx": 512}
    assert merge({"base": llama}, {"base": {"options": {"n_ctx": 512}}})["base"]["options"] == \
        {"n_threads": 1, "n_ctx": 512}   # no backend named: the same backend
    (tmp_path / "llama.toml").write_text('[base]\nmodel = "fake:echo"\nbackend = "llamacpp"\n'
                                         'options = { n_threads = 1 }\n')
    (tmp_path / "exp.toml").write_text(f'extends = "llama.toml"\nname = "x"\n[base]\nbackend = "fake"\n[task]\n'
                                       f'targets = ["deu_Latn"]\nflores = "{shared_data / "flores200"}"\nn = 2\n')
    assert load_config(tmp_path / "exp.toml").base.options == {}


def test_a_preset_extends_shared_files_with_paths_relative_to_each(tmp_path, shared_data):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "models.toml").write_text('[base]\nmodel = "fake:echo"\nbackend = "fake"\n'
                                        '[decoding]\nmax_new_tokens = 64\nbatch_size = 4\n')
    (shared / "data.toml").write_text(f'[task]\ntargets = ["deu_Latn", "zho_Hans"]\nflores = "{shared_data / "flores200"}"\n'
                                      'n = 20\n[[priors]]\nstrategy = "pseudo"\nk = 2\n'
                                      'dictionary = "./dicts/en-{tgt_iso1}.txt"\n')
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "quick.toml").write_text('extends = ["../shared/models.toml", "../shared/data.toml"]\nname = "quick"\n'
                                        '[task]\nn = 5\n[decoding]\nbatch_size = 2\n')
    cfg = load_config(presets / "quick.toml", {"task.n": 3})
    assert (cfg.name, cfg.base.model, cfg.task.targets, cfg.task.n) == ("quick", "fake:echo", ["deu_Latn", "zho_Hans"], 3)
    assert (cfg.decoding.max_new_tokens, cfg.decoding.batch_size) == (64, 2)
    # the shared file's relative path is relative to the shared file, not to the preset
    assert cfg.priors[0].dictionary == str((shared / "dicts" / "en-{tgt_iso1}.txt").resolve())
    assert cfg.store_path == presets / "runs" / "quick.sqlite"


def test_extends_errors_name_the_file_and_field(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(InputError, match="field 'extends'.*cycle"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(InputError, match=r"c.toml, field 'extends'.*missing.toml, does not exist"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('extends = 3\n')
    with pytest.raises(InputError, match="field 'extends'.*a config path"):
        load_config(tmp_path / "d.toml")


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    from pretty_align.serve import load_serve_config
    from pretty_align.sft.config import load_sft_config

    loaded = []
    for path in sorted([*configs.glob("*.toml"), *configs.glob("presets/*.toml")]):
        if path.name.startswith("sft-gemma"):
            loaded.append(load_sft_config(path))
        elif path.name == "serve.toml":
            loaded.append(load_serve_config(path)[0])
        elif "[reproduce]" not in path.read_text(encoding="utf-8"):   # presets load through load_preset
            loaded.append(load_config(path))
    assert len(loaded) >= 6
    evals = [load_config(configs / f"{n}.toml") for n in ("sft-eval", "pos", "xlsum")]
    assert {c.reference.adapter for c in evals} == {str((configs.parent / "runs/sft/gemma3-270m-mt/adapter").resolve())}
