"""LoRA SFT builder on tiny random models: answer-only loss, training, resume, adapter round trip."""

from __future__ import annotations

import json

import pytest

import torch

from conftest import require_module

require_module("peft", "-e '.[peft]'")

from pretty_align.backends import load_backend  # noqa: E402
from pretty_align.backends.base import GenerationRequest  # noqa: E402
from pretty_align.boundary import encode_prompt  # noqa: E402
from pretty_align.decoding import Decoding  # noqa: E402
from pretty_align.errors import InputError, PrettyAlignError  # noqa: E402
from pretty_align.sft.config import SFTConfig, load_sft_config  # noqa: E402
from pretty_align.sft.data import IGNORE  # noqa: E402
from pretty_align.sft.train import Trainer, answer_loss, batch_order, build_sft, collate, merge_adapter  # noqa: E402

PAIRS = {"deu": [(f"The house number {i}.", f"Das Haus Nummer {i}.") for i in range(24)],
         "fra": [(f"The cat number {i}.", f"Le chat numéro {i}.") for i in range(24)]}


@pytest.fixture
def tatoeba(tmp_path):
    d = tmp_path / "tatoeba"
    d.mkdir()
    for code, pairs in PAIRS.items():
        (d / f"eng-{code}.eng").write_text("".join(s + "\n" for s, _ in pairs))
        (d / f"eng-{code}.{code}").write_text("".join(t + "\n" for _, t in pairs))
    return d


def make_cfg(model_dir, data_dir, out, **train) -> SFTConfig:
    settings = dict(epochs=4, batch_size=4, grad_accum=2, lr=2e-2, warmup_steps=1, eval_every=2, patience=50,
                    checkpoint_every=2, max_steps=6, threads=1)
    settings.update(train)
    return SFTConfig(name="tiny", output=str(out), base={"model": str(model_dir)},
                     data={"dir": str(data_dir), "targets": ["deu_Latn", "fra_Latn"], "per_language": 20,
                           "validation_share": 0.2},
                     lora={"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "up_proj"]},
                     train=settings)


def adapter_weights(path):
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_answer_loss_is_the_full_logit_loss_on_answer_tokens_only(tiny_model_dir, tatoeba, tmp_path):
    trainer = Trainer(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out"), progress=False)
    tok, model = trainer._load_model()
    examples = trainer.load_split(tok).train[:5]
    ids, mask, labels = collate(examples, tok.pad_token_id)
    assert (labels[mask == 0] == IGNORE).all()
    loss, n = answer_loss(model, ids, mask, labels)
    assert n == sum(e.answer_length for e in examples)
    # transformers' own loss over the full vocabulary logits (mean over the same labelled tokens)
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert float(loss.detach()) / n == pytest.approx(float(full.detach()), rel=1e-5)
    # The labels alone decide which positions carry loss: un-masking the prompt adds its positions.
    unmasked = labels.clone()
    first_answer = int((labels[0] != IGNORE).nonzero()[0])
    unmasked[0, 1:first_answer] = ids[0, 1:first_answer]
    assert answer_loss(model, ids, mask, unmasked)[1] == n + first_answer - 1


def test_batch_order_is_deterministic_bucketed_and_complete():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47, 9, 46, 10, 45]
    a = batch_order(lengths, 2, 3, seed=1, epoch=0)
    assert a == batch_order(lengths, 2, 3, seed=1, epoch=0) != batch_order(lengths, 2, 3, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(len(lengths)))
    # inside a window of 3 batches the examples are sorted by length: the spread per batch is small
    spread = sum(abs(lengths[b[0]] - lengths[b[-1]]) for b in a)
    assert spread < sum(abs(lengths[i] - lengths[j]) for i, j in zip(range(0, 12, 2), range(1, 12, 2)))


def test_tiny_model_learns_and_writes_a_model_card(tiny_model_dir, tatoeba, tmp_path):
    result = build_sft(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", max_steps=8), progress=False)
    vals = [e["val_loss"] for e in result.state.history if "val_loss" in e]
    trains = [e["train_loss"] for e in result.state.history if "train_loss" in e]
    assert len(trains) == 8 and vals[-1] < 0.9 * vals[0] and trains[-1] < trains[0]
    card = (result.adapter_dir / "README.md").read_text()
    assert "base_model:" in card and "| 8 |" in card and "validation loss" in card and "sha256" in card
    logged = [json.loads(line) for line in (result.adapter_dir / "trainer_state.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == list(range(9))
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tiny_model_dir)  # the model string, not a machine-specific cache path


class Killed(Exception):
    pass


def test_resume_after_kill_continues_at_the_same_step_with_the_same_data(tiny_model_dir, tatoeba, tmp_path):
    seen_a: list = []
    full = Trainer(make_cfg(tiny_model_dir, tatoeba, tmp_path / "a"), progress=False,
                   on_step=lambda s, g: seen_a.append((s, g))).build()

    def kill_at_5(step, group):
        if step == 5:
            raise Killed  # after step 5's update, before its checkpoint would matter: last checkpoint is 4

    cfg_b = make_cfg(tiny_model_dir, tatoeba, tmp_path / "b")
    with pytest.raises(Killed):
        Trainer(cfg_b, progress=False, on_step=kill_at_5).build()
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    seen_b: list = []
    resumed = Trainer(cfg_b, progress=False, on_step=lambda s, g: seen_b.append((s, g))).build()
    assert resumed.resumed_from == 4
    assert seen_b == seen_a[4:]                      # same steps, same batches, same order
    assert [e["step"] for e in resumed.state.history] == list(range(7))   # no duplicated history
    wa, wb = adapter_weights(full.adapter_dir), adapter_weights(resumed.adapter_dir)
    assert wa.keys() == wb.keys()
    for k in wa:   # dropout is on: equal weights need the RNG state restored too
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert [e["train_loss"] for e in resumed.state.history[5:]] == \
        pytest.approx([e["train_loss"] for e in full.state.history[5:]], rel=1e-5)


def test_resume_refuses_a_checkpoint_of_another_config(tiny_model_dir, tatoeba, tmp_path):
    Trainer(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", max_steps=2), progress=False).build()
    with pytest.raises(PrettyAlignError, match="different SFT config"):
        Trainer(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", max_steps=2, lr=1e-3), progress=False).build()
    again = Trainer(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", max_steps=2, lr=1e-3),
                    progress=False).build(restart=True)
    assert again.resumed_from is None and again.state.step == 2


def test_adapter_round_trips_through_the_hf_backend_and_merges(tiny_model_dir, tatoeba, tmp_path):
    result = build_sft(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", max_steps=8), progress=False)
    plain = load_backend("hf", str(tiny_model_dir))
    sft = load_backend("hf", str(tiny_model_dir), adapter=str(result.adapter_dir), merge_adapter=False)
    merged_dir = merge_adapter(str(tiny_model_dir), result.adapter_dir, tmp_path / "merged")
    merged = load_backend("hf", str(merged_dir))
    assert sft.signature()["adapter_sha256"] and sft.signature()["adapter_merged"] is False
    prompt = encode_prompt(plain.tokenizer, "English: The house number 3.\nGerman:")
    answer = plain.tokenizer.encode(" Das Haus Nummer 3.", add_special_tokens=False)
    # The backend's exact scoring of the adapted model is peft's forward on the trained adapter.
    s_plain, s_sft = plain.score(prompt.ids, answer), sft.score(prompt.ids, answer)
    s_merged = merged.score(prompt.ids, answer)
    assert sum(s_sft.logprobs) > sum(s_plain.logprobs) + 1.0    # it learned the pattern
    assert s_merged.logprobs == pytest.approx(s_sft.logprobs, abs=1e-4)
    request = [GenerationRequest(prompt.ids, (), 12)]
    dec = Decoding(max_new_tokens=12, batch_size=1)
    assert merged.generate(request, dec)[0].new_ids == sft.generate(request, dec)[0].new_ids


def test_sft_cli_builds_from_a_config_file(tiny_model_dir, tatoeba, tmp_path):
    from typer.testing import CliRunner

    from pretty_align.cli import app

    cfg = tmp_path / "sft.toml"
    cfg.write_text(f'name = "cli"\noutput = "./build"\n[base]\nmodel = "{tiny_model_dir}"\n'
                   f'[data]\ndir = "{tatoeba}"\ntargets = ["deu_Latn"]\nper_language = 10\n'
                   '[lora]\nr = 2\ntarget_modules = ["q_proj"]\n[train]\nmax_steps = 2\nbatch_size = 4\n'
                   'grad_accum = 1\nthreads = 1\n')
    out = CliRunner().invoke(app, ["sft", str(cfg)])   # with the progress bar
    assert out.exit_code == 0, out.output
    assert (tmp_path / "build" / "adapter" / "adapter_model.safetensors").is_file() and "2 steps" in out.output


def test_bad_sft_configs_name_the_field(tiny_model_dir, tatoeba, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "x"\noutput = "o"\n[base]\nmodel = "{tiny_model_dir}"\n'
                   f'[data]\ndir = "{tatoeba}"\ntargets = ["xx_Latn"]\n')
    with pytest.raises(InputError, match="xx_Latn"):
        load_sft_config(bad)
    bad.write_text(f'name = "x"\noutput = "o"\n[base]\nmodel = "{tiny_model_dir}"\n'
                   f'[data]\ndir = "{tmp_path / "nowhere"}"\ntargets = ["deu_Latn"]\n')
    with pytest.raises(InputError, match="nowhere: SFT data directory not found"):
        load_sft_config(bad)
    cfg = make_cfg(tiny_model_dir, tatoeba, tmp_path / "out")
    cfg.lora.target_modules = ["no_such_proj"]
    with pytest.raises(InputError, match="no_such_proj"):
        Trainer(cfg, progress=False).build()


def test_early_stopping_keeps_the_best_adapter(tiny_model_dir, tatoeba, tmp_path):
    # A learning rate this large makes the validation loss rise after the first steps.
    result = build_sft(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", lr=3.0, warmup_steps=0, eval_every=1,
                                patience=2, max_steps=12), progress=False)
    st = result.state
    vals = {e["step"]: e["val_loss"] for e in st.history if "val_loss" in e}
    assert st.stopped_early and st.step < 12 and st.bad_evals == 2
    assert st.best_val == min(vals.values()) == vals[st.best_step] and st.best_step < st.step
    assert "stopped early" in (result.adapter_dir / "README.md").read_text()
    # the adapter written is the best step's, not the last one: it reproduces the best validation loss
    trainer = Trainer(make_cfg(tiny_model_dir, tatoeba, tmp_path / "out2"), progress=False)
    tok, model = trainer._load_model()
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, adapter_weights(result.adapter_dir))
    assert trainer._evaluate(model, trainer.load_split(tok).validation, tok.pad_token_id) == \
        pytest.approx(st.best_val, rel=1e-4)


@pytest.mark.parametrize("native, resolved", [(True, "bfloat16"), (False, "float32")])
def test_dtype_auto_trains_in_bfloat16_only_where_the_cpu_has_it(tiny_model_dir, tatoeba, tmp_path, monkeypatch,
                                                                  native, resolved):
    """``dtype = "auto"`` resolves before the fingerprint is taken: a build resumes only where it
    resolves alike, and it equals the build that names that dtype."""
    import pretty_align.hardware as hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    cfg = make_cfg(tiny_model_dir, tatoeba, tmp_path / "out")
    auto = Trainer(cfg.model_copy(update={"base": cfg.base.model_copy(update={"dtype": "auto"})}), progress=False)
    named = Trainer(cfg.model_copy(update={"base": cfg.base.model_copy(update={"dtype": resolved})}), progress=False)
    assert auto.cfg.base.dtype == resolved and auto.fingerprint == named.fingerprint
    assert auto._autocast().fast_dtype == torch.bfloat16 and auto._autocast()._enabled is (resolved == "bfloat16")


def test_an_explicit_bfloat16_on_a_cpu_that_emulates_it_is_kept_with_a_warning(tiny_model_dir, tatoeba, tmp_path,
                                                                               monkeypatch, caplog):
    import pretty_align.hardware as hardware

    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    cfg = make_cfg(tiny_model_dir, tatoeba, tmp_path / "out")
    with caplog.at_level("WARNING", logger="pretty_align.hardware"):
        trainer = Trainer(cfg.model_copy(update={"base": cfg.base.model_copy(update={"dtype": "bfloat16"})}),
                          progress=False)
    assert trainer.cfg.base.dtype == "bfloat16"
    assert "emulated" in caplog.text and "SFT base.dtype" in caplog.text


def test_native_bf16_reads_the_cpu_flags_torch_reports(monkeypatch):
    import pretty_align.hardware as hardware

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert hardware.native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert hardware.native_bf16() is True


def test_bf16_builds_hold_frozen_weights_in_bf16_and_train_bit_identically(tiny_model_dir, tatoeba, tmp_path,
                                                                          monkeypatch):
    """freeze_for_autocast removes autocast's per-call casts of frozen weights, not a bit of the
    result: two bf16 builds, with and without it, give the same losses and the same adapter."""
    import pretty_align.sft.train as train

    cfg = make_cfg(tiny_model_dir, tatoeba, tmp_path / "a", max_steps=4)
    bf16 = cfg.model_copy(update={"base": cfg.base.model_copy(update={"dtype": "bfloat16"})})
    tok, model = Trainer(bf16, progress=False)._load_model()
    head = model.get_base_model().get_output_embeddings()
    embedding = model.get_base_model().get_input_embeddings()
    assert head.weight.dtype == torch.bfloat16 and embedding.weight.dtype == torch.float32   # untied, lookup in fp32
    frozen = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(w.dtype == (torch.float32 if w.requires_grad else torch.bfloat16) for w in frozen)
    assert any(w.requires_grad for w in frozen)   # the LoRA matrices stay float32 and trainable

    fast = build_sft(bf16, progress=False)
    monkeypatch.setattr(train, "freeze_for_autocast", lambda model, dtype: 0)
    plain = build_sft(bf16.model_copy(update={"output": str(tmp_path / "b")}), progress=False)
    assert [e.get("train_loss") for e in fast.state.history] == [e.get("train_loss") for e in plain.state.history]
    a, b = adapter_weights(fast.adapter_dir), adapter_weights(plain.adapter_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_adapter_config_lists_target_modules_in_a_fixed_order(tiny_model_dir, tatoeba, tmp_path):
    """peft holds target_modules as a set, serialized in the order of the per-process string hash:
    without sorting, two bit-identical builds in two processes had different adapter hashes."""
    modules = ["v_proj", "up_proj", "q_proj", "o_proj", "k_proj"]
    cfg = make_cfg(tiny_model_dir, tatoeba, tmp_path / "out", max_steps=1)
    cfg = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"target_modules": modules})})
    result = build_sft(cfg, progress=False)
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())["target_modules"]
    assert saved == sorted(modules)
