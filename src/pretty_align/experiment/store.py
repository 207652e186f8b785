"""The SQLite result store (non-negotiable 3: nothing is lost).

* ``results``: one row per (condition, example) output, keyed by the content hash of everything
  that determines it, the code included. Rows are inserted once, committed as they are produced,
  and never updated: inserting an existing key keeps the stored row (``insert_results`` returns
  the keys it found there), so two processes on one store both finish and each row is stored once.
  ``code_revision`` names the code that made a row, for reports (its source hash is in the key).
* ``generations``: a cache of raw generations keyed by (model signature, input ids, decoding), so a
  model prior reuses the reference model's answers and a killed run does not redo them.
* ``manifest``: which keys make up a named run (rewritten at each ``run``); reports join it with
  ``results``, so old rows stay in the store but never leak into a newer run's report.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import PrettyAlignError

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  key TEXT PRIMARY KEY,
  condition TEXT NOT NULL,
  tgt TEXT NOT NULL,
  example_id TEXT NOT NULL,
  source TEXT NOT NULL,
  reference TEXT,
  output TEXT NOT NULL,
  prior_text TEXT NOT NULL,
  prior_ids TEXT NOT NULL,
  prior_fell_back INTEGER NOT NULL,
  provenance TEXT NOT NULL,
  new_tokens INTEGER NOT NULL,
  stop_reason TEXT NOT NULL,
  truncated INTEGER NOT NULL,
  detected_lang TEXT NOT NULL,
  signature TEXT NOT NULL,
  created REAL NOT NULL,
  code_revision TEXT
);
CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS manifest (
  run TEXT NOT NULL, condition TEXT NOT NULL, tgt TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL,
  PRIMARY KEY (run, condition, tgt, idx)
);
CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, config TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS analysis_examples (
  key TEXT PRIMARY KEY, tgt TEXT NOT NULL, example_id TEXT NOT NULL, mode TEXT NOT NULL,
  n_positions INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS analysis_positions (
  key TEXT NOT NULL, position INTEGER NOT NULL, token_id INTEGER NOT NULL, rank_base INTEGER NOT NULL,
  rank_sft INTEGER NOT NULL, p_base REAL NOT NULL, p_sft REAL NOT NULL, kl REAL, overlap REAL NOT NULL,
  PRIMARY KEY (key, position)
);
CREATE TABLE IF NOT EXISTS analysis_manifest (
  run TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, tgt TEXT NOT NULL, PRIMARY KEY (run, idx)
);
CREATE TABLE IF NOT EXISTS analysis_runs (run TEXT PRIMARY KEY, signature TEXT NOT NULL, updated REAL NOT NULL);
"""

RESULT_FIELDS = ("key", "condition", "tgt", "example_id", "source", "reference", "output", "prior_text",
                 "prior_ids", "prior_fell_back", "provenance", "new_tokens", "stop_reason", "truncated",
                 "detected_lang", "signature", "created", "code_revision")
SYNCHRONOUS = ("NORMAL", "FULL")


class Store:
    """Durability: every batch of rows is committed before the next is generated. In WAL mode a
    killed process (even ``kill -9``) loses nothing committed. With ``synchronous="NORMAL"`` (the
    default) a power loss or OS crash may lose the last few commits (never corrupt the file);
    ``"FULL"`` makes every commit durable at the cost of an fsync per commit."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNCHRONOUS:
            raise PrettyAlignError(f"store synchronous mode '{synchronous}' is not one of {SYNCHRONOUS}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # timeout: how long a writer waits for another process's transaction (two runs on one store)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")    # a reader (report) never blocks the writer
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        with self.db:
            self.db.executescript(SCHEMA)
        with self.db:   # check and migrate under the write lock: another process may be migrating it too
            self.db.execute("BEGIN IMMEDIATE")
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
            if "code_revision" not in columns:   # a store written before rows named their code
                self.db.execute("ALTER TABLE results ADD COLUMN code_revision TEXT")

    def close(self) -> None:
        self.db.close()

    # -- results ------------------------------------------------------------------------------
    def _select(self, table: str, columns: str, keys: Iterable[str]) -> list[tuple]:
        """Rows of ``table`` whose key is in ``keys`` (queried in chunks: SQLite limits bound parameters)."""
        keys = list(keys)
        rows: list[tuple] = []
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows += self.db.execute(f"SELECT {columns} FROM {table} WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall()
        return rows

    def _present(self, table: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` exist in ``table``."""
        return {r[0] for r in self._select(table, "key", keys)}

    def existing_keys(self, keys: Iterable[str]) -> set[str]:
        return self._present("results", keys)

    def insert_results(self, rows: list[dict[str, Any]]) -> list[str]:
        """Insert and commit a batch of rows atomically. A key that is already stored (by another
        process on this store, which made the same row) keeps its row: nothing is overwritten.
        Returns those keys."""
        now = time.time()
        values = []
        for row in rows:
            row = {"code_revision": None, **row, "created": now}
            for f in ("prior_ids", "provenance", "signature"):
                if not isinstance(row[f], str):
                    row[f] = json.dumps(row[f], ensure_ascii=False, sort_keys=True)
            values.append(tuple(row[f] for f in RESULT_FIELDS))
        with self.db:   # one write transaction: the check and the inserts see the same store
            self.db.execute("BEGIN IMMEDIATE")
            present = sorted(self._present("results", [v[0] for v in values]))
            self.db.executemany(f"INSERT OR IGNORE INTO results ({','.join(RESULT_FIELDS)}) VALUES "
                                f"({','.join('?' * len(RESULT_FIELDS))})", values)
        return present

    def code_of(self, revision: str) -> dict[str, Any]:
        """The ``code`` signature of stored rows made by ``revision`` (a code revision as reports
        show it, or a prefix of at least 7 characters of its source hash). Raises, listing what the
        store holds, unless exactly one code matches."""
        found = [(rev, json.loads(code) if code else {}) for rev, code in self.db.execute(
            "SELECT DISTINCT code_revision, json_extract(signature, '$.code') FROM results "
            "WHERE code_revision IS NOT NULL")]
        hits = {json.dumps(c, sort_keys=True): c for rev, c in found
                if revision == rev or (len(revision) >= 7 and c.get("source_sha256", "").startswith(revision))}
        if len(hits) != 1:
            what = "matches several codes (give a source hash)" if hits else "matches no stored row"
            raise PrettyAlignError(f"{self.path}: revision '{revision}' {what}; stored rows come from: "
                                   + (", ".join(f"{r} (source {c.get('source_sha256')})" for r, c in found)
                                      or "no named revision"))
        return next(iter(hits.values()))

    def rows(self, run: str) -> list[dict[str, Any]]:
        """The rows of a run in manifest order (condition, tgt, idx); missing ones are skipped."""
        cur = self.db.execute(
            f"SELECT m.condition AS mcond, m.tgt AS mtgt, m.idx, {','.join('r.' + f for f in RESULT_FIELDS)} "
            "FROM manifest m JOIN results r ON r.key = m.key WHERE m.run = ? ORDER BY m.rowid", (run,))
        names = [d[0] for d in cur.description]
        out = []
        for rec in cur:
            row = dict(zip(names, rec))
            row["condition"], row["tgt"] = row.pop("mcond"), row.pop("mtgt")
            for f in ("prior_ids", "provenance", "signature"):
                row[f] = json.loads(row[f])
            out.append(row)
        return out

    def count_rows(self, run: str | None = None) -> int:
        if run is None:
            return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM manifest m JOIN results r ON r.key = m.key WHERE m.run = ?",
                               (run,)).fetchone()[0]

    # -- manifest / runs ----------------------------------------------------------------------
    def set_manifest(self, run: str, config: dict, entries: list[tuple[str, str, int, str]]) -> None:
        with self.db:
            self.db.execute("DELETE FROM manifest WHERE run = ?", (run,))
            self.db.executemany("INSERT INTO manifest (run, condition, tgt, idx, key) VALUES (?,?,?,?,?)",
                                [(run, c, t, i, k) for c, t, i, k in entries])
            self.db.execute("INSERT OR REPLACE INTO runs (run, config, updated) VALUES (?,?,?)",
                            (run, json.dumps(config, sort_keys=True, default=str), time.time()))

    def manifest_size(self, run: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM manifest WHERE run = ?", (run,)).fetchone()[0]

    def runs(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT run FROM runs ORDER BY updated")]

    def run_config(self, run: str) -> dict:
        rec = self.db.execute("SELECT config FROM runs WHERE run = ?", (run,)).fetchone()
        if rec is None:
            raise PrettyAlignError(f"{self.path}: no run named '{run}'; runs here: {', '.join(self.runs()) or 'none'}")
        return json.loads(rec[0])

    # -- decision-space analysis ----------------------------------------------------------------
    POSITION_FIELDS = ("position", "token_id", "rank_base", "rank_sft", "p_base", "p_sft", "kl", "overlap")

    def set_analysis_manifest(self, run: str, signature: dict, entries: list[tuple[str, str]]) -> None:
        """Which example keys (with their target language) make up analysis ``run``, in order."""
        with self.db:
            self.db.execute("DELETE FROM analysis_manifest WHERE run = ?", (run,))
            self.db.executemany("INSERT INTO analysis_manifest (run, idx, key, tgt) VALUES (?,?,?,?)",
                                [(run, i, k, t) for i, (k, t) in enumerate(entries)])
            self.db.execute("INSERT OR REPLACE INTO analysis_runs (run, signature, updated) VALUES (?,?,?)",
                            (run, json.dumps(signature, sort_keys=True, default=str), time.time()))

    def analysis_done(self, keys: list[str]) -> set[str]:
        """Keys of the examples whose analysis is fully stored."""
        return self._present("analysis_examples", keys)

    def insert_analysis(self, key: str, tgt: str, example_id: str, mode: str, records: list[dict]) -> bool:
        """One example's position records and its completion marker, in one transaction: an example
        is either fully stored or absent. A key that is already stored (by another process on this
        store, which analysed the same example with the same code) keeps its records: nothing is
        overwritten. Returns whether this call stored them."""
        try:
            with self.db:   # one write transaction: the check and the inserts see the same store
                self.db.execute("BEGIN IMMEDIATE")
                if self._present("analysis_examples", [key]):
                    return False
                self.db.execute("INSERT INTO analysis_examples (key, tgt, example_id, mode, n_positions, created) "
                                "VALUES (?,?,?,?,?,?)", (key, tgt, example_id, mode, len(records), time.time()))
                self.db.executemany(
                    f"INSERT INTO analysis_positions (key, {','.join(self.POSITION_FIELDS)}) VALUES "
                    f"(?,{','.join('?' * len(self.POSITION_FIELDS))})",
                    [(key, *(r[f] for f in self.POSITION_FIELDS)) for r in records])
        except sqlite3.IntegrityError as e:
            raise PrettyAlignError(f"{self.path}: invalid analysis record for example {example_id}: {e}") from e
        return True

    def analysis_positions(self, run: str) -> list[dict[str, Any]]:
        """Every stored position record of analysis ``run``, with its example's tgt and mode
        (``kl`` is None where it is undefined: text-level records)."""
        cur = self.db.execute(
            f"SELECT m.tgt, e.example_id, e.mode, {','.join('p.' + f for f in self.POSITION_FIELDS)} "
            "FROM analysis_manifest m JOIN analysis_examples e ON e.key = m.key "
            "JOIN analysis_positions p ON p.key = m.key WHERE m.run = ? ORDER BY m.idx, p.position", (run,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, rec)) for rec in cur]

    def analysis_status(self, run: str) -> tuple[int, int, dict]:
        """(examples stored, examples planned, signature) of analysis ``run``."""
        rec = self.db.execute("SELECT signature FROM analysis_runs WHERE run = ?", (run,)).fetchone()
        if rec is None:
            raise PrettyAlignError(f"{self.path}: no analysis named '{run}'")
        planned = self.db.execute("SELECT COUNT(*) FROM analysis_manifest WHERE run = ?", (run,)).fetchone()[0]
        stored = self.db.execute("SELECT COUNT(*) FROM analysis_manifest m JOIN analysis_examples e ON e.key = m.key "
                                 "WHERE m.run = ?", (run,)).fetchone()[0]
        return stored, planned, json.loads(rec[0])

    # -- generation cache ---------------------------------------------------------------------
    def get_generations(self, keys: list[str]) -> dict[str, dict]:
        return {k: json.loads(v) for k, v in self._select("generations", "key, value", keys)}

    def put_generations(self, items: dict[str, dict]) -> None:
        # The same key always maps to the same value (content hash of the inputs), so IGNORE is safe.
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO generations (key, value, created) VALUES (?,?,?)",
                                [(k, json.dumps(v), time.time()) for k, v in items.items()])
