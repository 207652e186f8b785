"""Result keys cover the code: a run by changed code never takes the rows of other code for its
own, unless asked with --reuse-from, and the report then says so (issue: stale rows)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import pretty_align
from pretty_align.experiment import signature

PACKAGE = Path(pretty_align.__file__).resolve().parent

CONFIG = """
name = "c"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = ["deu_Latn"]
flores = "{flores}"
n = 4
[[priors]]
strategy = "none"
[[priors]]
strategy = "gold"
k = 2
"""


def copy_package(root: Path, edit: tuple[str, str, str] | None = None) -> Path:
    """A copy of the running pretty_align package under ``root``, with one source edit
    (file, old text, new text) applied."""
    dest = root / "pretty_align"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        name, old, new = edit
        text = (dest / name).read_text()
        assert old in text, f"{name} no longer holds {old!r}: update the test's edit"
        (dest / name).write_text(text.replace(old, new))
    return root


def run_with(code: Path, cfg: Path, *args: str) -> str:
    """``pretty-align run`` in a fresh process importing the package copy at ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run([sys.executable, "-m", "pretty_align.cli", "run", str(cfg), "--no-progress", "--quiet",
                           *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def outputs(store: Path, run: str = "c") -> list[tuple[str, str]]:
    db = sqlite3.connect(store)
    return db.execute("SELECT r.condition, r.output FROM manifest m JOIN results r ON r.key = m.key "
                      "WHERE m.run = ? ORDER BY m.rowid", (run,)).fetchall()


# An output-affecting change to the stopping rule: every row ends after at most 5 new tokens.
STOP_RULE = ("decoding.py", 'return "length" if len(self.new) >= self.budget else None',
             'return "length" if len(self.new) >= min(self.budget, 5) else None')


def test_changed_code_makes_new_rows_and_reuse_is_explicit(tmp_path, shared_data):
    cfg = tmp_path / "c.toml"
    store = tmp_path / "c.sqlite"
    cfg.write_text(CONFIG.format(store=store, flores=shared_data / "flores200"))
    old = copy_package(tmp_path / "old")
    new = copy_package(tmp_path / "new", STOP_RULE)
    assert "8 results produced, 0 already stored" in run_with(old, cfg)
    assert "0 results produced, 8 already stored" in run_with(old, cfg)   # the same code: nothing to do
    before = outputs(store)

    err = run_with(new, cfg)
    assert "8 results produced, 0 already stored" in err   # nothing of the old code is taken
    after = outputs(store)
    assert after != before and all(len(o) <= len(b) for (_, o), (_, b) in zip(after, before))
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 16   # old rows kept
    report = (tmp_path / "runs" / "c" / "report.md").read_text()
    assert "made by other code" not in report

    # Asked explicitly, a third code takes the old code's rows, and the report names them.
    third = copy_package(tmp_path / "third", ("tasks/base.py", '"""Task contract', '"""The task contract'))
    old_rev, sig = sqlite3.connect(store).execute(
        "SELECT code_revision, signature FROM results ORDER BY rowid LIMIT 1").fetchone()
    revision = json.loads(sig)["code"]["source_sha256"]
    assert old_rev.endswith("+src." + revision[:12])   # a copy outside git is named by its source hash
    err = run_with(third, cfg, "--reuse-from", old_rev)
    assert "0 results produced, 0 already stored, 8 reused from" in err
    assert outputs(store) == before
    report = (tmp_path / "runs" / "c" / "report.md").read_text()
    assert "8 rows were made by other code than this run's" in report and "reuse-from" in report


def test_unknown_reuse_revision_is_refused(tmp_path, shared_data):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "c.sqlite", flores=shared_data / "flores200"))
    proc = subprocess.run([sys.executable, "-m", "pretty_align.cli", "run", str(cfg), "--no-progress", "--quiet",
                           "--reuse-from", "deadbeef"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "revision 'deadbeef' matches no stored row" in proc.stderr


def test_source_hash_changes_with_any_source_file(tmp_path):
    root = copy_package(tmp_path / "a") / "pretty_align"
    first = signature.source_sha256(root)
    assert first == signature.source_sha256(PACKAGE)
    (root / "priors" / "pseudo.py").write_text((root / "priors" / "pseudo.py").read_text() + "\n# edited\n")
    assert signature.source_sha256(root) != first


def test_generation_cache_keys_name_the_code(monkeypatch):
    from pretty_align.backends import load_backend
    from pretty_align.backends.base import GenerationRequest
    from pretty_align.decoding import Decoding
    from pretty_align.experiment import answerer as answerer_module
    from pretty_align.tasks.translation import TranslationTask

    a = answerer_module.Answerer(load_backend("fake", "fake:echo"), TranslationTask(texts=["x"]), Decoding())
    req = GenerationRequest((1, 2, 3), (), 10)
    key = a._gen_key(req)
    monkeypatch.setattr(answerer_module, "code_signature", lambda: {"pretty-align": "0.1.0", "source_sha256": "x"})
    assert a._gen_key(req) != key


@pytest.mark.parametrize("field", ["code", "packages"])
def test_result_signatures_hold_the_code(tmp_path, shared_data, field):
    from pretty_align.experiment.config import load_config
    from pretty_align.experiment.runner import Runner

    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "c.sqlite", flores=shared_data / "flores200"))
    runner = Runner(load_config(cfg))
    sig = runner.conditions[0].signature(runner.targets[0])
    assert field in sig
    if field == "code":
        assert sig["code"] == signature.code_signature() and len(sig["code"]["source_sha256"]) == 16
