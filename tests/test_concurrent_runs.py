"""Two ``pretty-align run`` processes on one store, with overlapping plans, both finish and every
row is stored exactly once (non-negotiable 3)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from pretty_align.experiment.store import Store

CONFIG = """
name = "{name}"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
options = {{ delay = 0.05 }}
[task]
targets = ["deu_Latn", "zho_Hans"]
flores = "{flores}"
n = {n}
[decoding]
batch_size = 2
[[priors]]
strategy = "none"
[[priors]]
strategy = "gold"
k = [1, 2]
"""


def test_two_processes_on_overlapping_plans_both_finish(tmp_path, shared_data):
    store = tmp_path / "shared.sqlite"
    procs = []
    for name, n in (("a", 8), ("b", 12)):   # b's plan holds all of a's (same keys) and more
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(CONFIG.format(name=name, store=store, flores=shared_data / "flores200", n=n))
        procs.append(subprocess.Popen([sys.executable, "-m", "pretty_align.cli", "run", str(cfg), "--no-progress",
                                       "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    db = sqlite3.connect(store)
    keys = [k for (k,) in db.execute("SELECT key FROM results")]
    assert len(keys) == len(set(keys)) == 3 * 2 * 12           # the union of both plans, once each
    s = Store(store)
    assert s.count_rows("a") == 3 * 2 * 8 and s.count_rows("b") == 3 * 2 * 12
    # both processes worked on the shared rows at the same time: one of them found some stored first
    assert any("stored first by another process" in err or "already stored" in err for _, err in outs), outs


def test_a_row_stored_by_another_writer_is_kept_not_overwritten(tmp_path):
    store = Store(tmp_path / "x.sqlite")
    other = Store(tmp_path / "x.sqlite")      # a second connection: another process
    row = dict(key="k1", condition="c", tgt="deu_Latn", example_id="e", source="s", reference="r", output="o",
               prior_text="", prior_ids=[], prior_fell_back=0, provenance={}, new_tokens=1, stop_reason="stop",
               truncated=0, detected_lang="de", signature={})
    assert other.insert_results([row]) == []
    assert store.insert_results([{**row, "output": "changed"}, {**row, "key": "k2"}]) == ["k1"]
    assert store.db.execute("SELECT key, output FROM results ORDER BY key").fetchall() == [("k1", "o"), ("k2", "o")]


def test_an_analysis_stored_by_another_writer_is_kept_and_both_finish(tmp_path):
    # Two analyses of one plan on one store: both read "not done" before either stores the example;
    # the second to store it must go on (it raised), keeping the first one's records.
    store, other = Store(tmp_path / "a.sqlite"), Store(tmp_path / "a.sqlite")
    assert store.analysis_done(["k"]) == other.analysis_done(["k"]) == set()
    rec = dict(position=0, token_id=5, rank_base=1, rank_sft=0, p_base=0.5, p_sft=0.9, kl=0.1, overlap=0.7)
    assert other.insert_analysis("k", "deu_Latn", "e", "tokens", [rec]) is True
    assert store.insert_analysis("k", "deu_Latn", "e", "tokens", [{**rec, "rank_base": 7}, rec]) is False
    assert store.db.execute("SELECT rank_base FROM analysis_positions WHERE key = 'k'").fetchall() == [(1,)]
    assert store.analysis_done(["k"]) == {"k"}


def test_two_processes_migrating_an_old_store_both_open_it(tmp_path):
    # A store from before rows named their code lacks a column that opening it adds. While another
    # process adds it (not yet committed), a second opener must wait and find it, not add it again
    # ("duplicate column name").
    import threading

    path = tmp_path / "old.sqlite"
    Store(path).close()
    other = sqlite3.connect(str(path), timeout=60, isolation_level=None)
    other.execute("ALTER TABLE results DROP COLUMN code_revision")   # the old schema
    other.execute("BEGIN IMMEDIATE")
    other.execute("ALTER TABLE results ADD COLUMN code_revision TEXT")   # the first opener, mid-migration
    errors: list[BaseException] = []

    def second_opener() -> None:
        try:
            Store(path).close()
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=second_opener)
    t.start()
    t.join(timeout=1.0)      # it waits for the first opener's lock
    other.execute("COMMIT")
    t.join(timeout=60)
    assert not t.is_alive() and errors == []
    assert "code_revision" in {r[1] for r in other.execute("PRAGMA table_info(results)")}


def test_full_synchronous_mode_is_applied(tmp_path):
    assert Store(tmp_path / "f.sqlite", synchronous="FULL").db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert Store(tmp_path / "n.sqlite").db.execute("PRAGMA synchronous").fetchone()[0] == 1
