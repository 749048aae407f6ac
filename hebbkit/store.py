"""A results store that several processes (one per GPU, or one per host on a shared disk) can share.

``ResultStore(out)`` opens ``out/results.sqlite`` (SQLite in WAL mode; writers wait up to 60 s for each
other, and every write is one short transaction). It holds:

* records: one per (method, regime, layer, seed, settings) — the first writer wins, so nothing is duplicated;
  a corrupt one is reported with a :class:`StoreWarning` and deleted, so that the next run recomputes it;
* Hebbian-convergence rows keyed by (settings, curve, method, seed, layer, epoch) — a later write replaces;
* claims on work units (``"hpca/seed0/<settings>"``), so that processes split a grid between them.

Migration: a folder from an older hebbkit holds ``results.jsonl`` and ``convergence.csv``. On open they are
imported (duplicate records collapse to one; unreadable lines are skipped with a warning naming the line), the
convergence rows under the settings of the folder's records when those hold exactly one settings value (else
the file is left in place, with a warning), and each imported file is renamed ``*.migrated``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import pandas as pd

STORE_FILE = "results.sqlite"
LEGACY_RESULTS, LEGACY_CONVERGENCE = "results.jsonl", "convergence.csv"
KEY = ("method", "regime", "layer", "seed", "settings")
CURVE_KEY = ("curve", "method", "seed", "layer", "epoch")
STALE_SECONDS = 24 * 3600  # a claim not refreshed for this long may be taken over from any host
APPLICATION_ID = 0x48656262  # "Hebb", in the SQLite header: tells our files from other SQLite files
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, method TEXT NOT NULL, regime REAL NOT NULL,
    layer INTEGER NOT NULL, seed INTEGER NOT NULL, settings TEXT NOT NULL, record TEXT NOT NULL,
    UNIQUE (method, regime, layer, seed, settings));
CREATE TABLE IF NOT EXISTS curves (settings TEXT NOT NULL, curve TEXT NOT NULL, method TEXT NOT NULL,
    seed INTEGER NOT NULL, layer INTEGER NOT NULL, epoch REAL NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (settings, curve, method, seed, layer, epoch));
CREATE TABLE IF NOT EXISTS claims (unit TEXT PRIMARY KEY, owner TEXT NOT NULL, refreshed REAL NOT NULL);
"""


class StoreWarning(UserWarning):
    """Something in a results store (or a legacy results file) was unreadable and has been skipped."""


def _dumps(value: object) -> str:
    """JSON text; numpy scalars become Python numbers."""
    def native(item):
        if hasattr(item, "item"):
            return item.item()
        raise TypeError(f"{type(item).__name__} is not JSON serialisable")
    return json.dumps(value, sort_keys=True, default=native)


def _key(record: dict, fields: tuple[str, ...]) -> tuple:
    """``record``'s values of ``fields``, typed (``KeyError``/``ValueError``/``TypeError`` if unusable)."""
    types = {"method": str, "curve": str, "settings": str, "regime": float, "epoch": float}
    return tuple(types.get(field, int)(record[field]) for field in fields)


class ResultStore:
    """The results of one output folder, in ``folder/results.sqlite`` (``None``: in memory, for one process);
    a context manager."""

    def __init__(self, folder: str | Path | None, timeout: float = 60.0):
        if folder is None:
            self.folder, self.path = None, ":memory:"
        else:
            folder = Path(folder)
            if folder.is_file():
                raise ValueError(f"{folder} is a file; ResultStore wants the output folder that holds {STORE_FILE}")
            folder.mkdir(parents=True, exist_ok=True)
            self.folder, self.path = folder, folder / STORE_FILE
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, and no fsync per commit
            with self._transaction():
                tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if self._db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                    if tables:
                        raise sqlite3.DatabaseError("it holds other tables")
                    self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                for statement in SCHEMA.split(";")[:-1]:
                    self._db.execute(statement)
        except sqlite3.DatabaseError as error:
            if hasattr(self, "_db"):
                self._db.close()
            if "locked" in str(error):  # another process held it for longer than ``timeout``
                raise
            raise ValueError(f"{self.path} is not a hebbkit results store (SQLite): {error}") from error
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``) so that read-then-write is race-free."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _insert(self, record: dict) -> bool:
        try:
            key = _key(record, KEY)
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"a record needs {', '.join(KEY)}; got {record!r:.200} ({error!r})") from error
        cursor = self._db.execute("INSERT OR IGNORE INTO records (method, regime, layer, seed, settings, record) "
                                  "VALUES (?, ?, ?, ?, ?, ?)", (*key, _dumps(record)))
        return cursor.rowcount == 1

    def put(self, record: dict) -> bool:
        """Store ``record``; ``False`` (nothing written) if its (method, regime, layer, seed, settings) is there."""
        with self._transaction():
            return self._insert(record)

    def _select(self, what: str, settings: str | None, order: str) -> list[tuple]:
        where, args = ("", ()) if settings is None else ("WHERE settings = ?", (settings,))
        return self._db.execute(f"SELECT {what} {where} ORDER BY {order}", args).fetchall()

    def _valid(self, settings: str | None) -> list[tuple[tuple, dict]]:
        """(key, record) of each readable record; unreadable ones are warned about and deleted."""
        valid, bad = [], []
        for row_id, text in self._select("id, record FROM records", settings, "id"):
            try:
                record = json.loads(text)
                valid.append((_key(record, KEY[:4]), record))
            except (ValueError, KeyError, TypeError) as error:
                warnings.warn(f"{self.path} row {row_id}: unreadable record ({error!r}); skipped, it will be "
                              f"recomputed", StoreWarning, stacklevel=3)
                bad.append((row_id,))
        if bad:
            with self._transaction():
                self._db.executemany("DELETE FROM records WHERE id = ?", bad)
        return valid

    def done(self, settings: str) -> set[tuple[str, float, int, int]]:
        """(method, regime, layer, seed) of each readable record under ``settings``."""
        return {key for key, _ in self._valid(settings)}

    def records(self, settings: str | None = None) -> list[dict]:
        """The readable records under ``settings`` (all when ``None``), oldest first."""
        return [record for _, record in self._valid(settings)]

    def _insert_curves(self, settings: str, rows: list[dict]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(settings, *_key(row, CURVE_KEY), _dumps(row)) for row in rows])

    def put_curves(self, settings: str, rows: list[dict]) -> None:
        """Store rows with curve, method, seed, layer, epoch under ``settings``; each replaces one of the same key."""
        with self._transaction():
            self._insert_curves(settings, rows)

    def curves(self, settings: str | None = None) -> pd.DataFrame:
        """The convergence rows under ``settings`` (all when ``None``), with a ``settings`` column."""
        rows = self._select("settings, row FROM curves", settings, "settings, method, seed, curve, layer, epoch")
        return pd.DataFrame([{"settings": key, **json.loads(row)} for key, row in rows])

    @property
    def owner(self) -> str:
        """This process, as a claim's owner: ``hostname:pid``."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def rekey(self, old: str, method: str, new: str) -> int:
        """Move ``method``'s records and curves from settings ``old`` to ``new`` (a migration of keys; where
        ``new`` already holds a cell, that record stays and the old one is dropped); return how many moved."""
        with self._transaction():
            moved = self._db.execute(
                "UPDATE OR IGNORE records SET settings = ?, record = json_set(record, '$.settings', ?) "
                "WHERE settings = ? AND method = ?", (new, new, old, method)).rowcount
            self._db.execute("DELETE FROM records WHERE settings = ? AND method = ?", (old, method))
            self._db.execute("UPDATE OR IGNORE curves SET settings = ? WHERE settings = ? AND method = ?",
                             (new, old, method))
            self._db.execute("DELETE FROM curves WHERE settings = ? AND method = ?", (old, method))
        return moved

    def claim(self, unit: str) -> bool:
        """Claim (or refresh this process's claim on) ``unit``; ``False`` while another live process holds it.
        A claim is stale when its owner is a dead process on this host, or it is over 24 h old."""
        with self._transaction():
            held = self._db.execute("SELECT owner, refreshed FROM claims WHERE unit = ?", (unit,)).fetchone()
            if held is not None and held[0] != self.owner and not _stale(*held):
                return False
            self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (unit, self.owner, time.time()))
            return True

    def release(self, unit: str) -> None:
        """Drop this process's claim on ``unit`` (nothing if it holds none)."""
        with self._transaction():
            self._db.execute("DELETE FROM claims WHERE unit = ? AND owner = ?", (unit, self.owner))

    def _migrate(self) -> None:
        """Import a legacy results.jsonl / convergence.csv from the folder, then rename them ``*.migrated``."""
        if self.folder is None:
            return
        jsonl, csv = self.folder / LEGACY_RESULTS, self.folder / LEGACY_CONVERGENCE
        if not (jsonl.exists() or csv.exists()):
            return
        imported = []
        with self._transaction():  # the import is idempotent, so a second process repeating it does no harm
            if jsonl.exists():
                for number, line in enumerate(jsonl.read_text(errors="replace").splitlines(), 1):
                    try:
                        if line.strip():
                            self._insert(json.loads(line))
                    except (ValueError, RecursionError, OverflowError) as error:  # too deeply nested, too large
                        warnings.warn(f"{jsonl} line {number}: unreadable record ({error}); skipped",
                                      StoreWarning, stacklevel=3)
                imported.append(jsonl)
            if csv.exists():
                found = [s for (s,) in self._db.execute("SELECT DISTINCT settings FROM records")]
                try:
                    if len(found) != 1:
                        raise ValueError(f"its rows have no settings, and the folder's records hold {len(found)} "
                                         f"settings values, not exactly 1")
                    self._insert_curves(found[0], pd.read_csv(csv).to_dict("records"))  # all rows or none
                    imported.append(csv)
                except (ValueError, KeyError, TypeError) as error:
                    warnings.warn(f"{csv}: not imported ({error}); left in place", StoreWarning, stacklevel=3)
        for path in imported:
            with suppress(FileNotFoundError):  # another process renamed it first
                path.replace(path.with_name(path.name + ".migrated"))


def _stale(owner: str, refreshed: float) -> bool:
    """Whether a claim may be taken over: a dead process on this host, or not refreshed for 24 h."""
    if time.time() - refreshed > STALE_SECONDS:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        pass
    return False
