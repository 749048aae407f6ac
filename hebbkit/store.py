"""A results store on one host, which several processes on that host share (one per GPU, or one parent
sending units to workers).

``ResultStore(out)`` opens ``out/results.sqlite`` (SQLite in WAL mode; writers wait up to 60 s for each
other, and every write is one short transaction). WAL mode needs shared memory, so the file must live on a
disk of the host whose processes open it, not on a network file system: machines elsewhere (a SLURM cluster's
nodes) send their results back to one process that writes them (:mod:`hebbkit.launch`), and stores filled on
two hosts are joined by :func:`merge_stores`. It holds:

* records: one per (method, regime, layer, seed, settings) — the first writer wins, so nothing is duplicated;
  a corrupt one, or one without its ``val_accuracy`` and ``history``, is reported with a :class:`StoreWarning`
  and deleted, so that the next run recomputes it;
* Hebbian-convergence rows keyed by (settings, curve, method, seed, layer, epoch) — a later write replaces;
* claims on work units (``"hpca/seed0/<settings>"``): who holds it (``host:pid``, and the worker that runs it)
  and since when, refreshed by a heartbeat while the unit runs (:meth:`ResultStore.heartbeat`); a claim whose
  owner died on this host, or whose heartbeat is over :data:`STALE_SECONDS` old, may be taken over.

Errors of the file itself (locked by another process for too long, a full disk, a folder in its place, not a
store, damaged) are a one-line :class:`StoreError` naming the file, whenever they show.

Migration: a folder from an older hebbkit holds ``results.jsonl`` and ``convergence.csv``. On open they are
imported (duplicate records collapse to one; unreadable lines are skipped with a warning naming the line), the
convergence rows under the settings of the folder's records when those hold exactly one settings value (else
the file is left in place, with a warning), and each imported file is renamed ``*.migrated``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import socket
import sqlite3
import threading
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import pandas as pd

STORE_FILE = "results.sqlite"
LEGACY_RESULTS, LEGACY_CONVERGENCE = "results.jsonl", "convergence.csv"
KEY = ("method", "regime", "layer", "seed", "settings")
CURVE_KEY = ("curve", "method", "seed", "layer", "epoch")
STALE_SECONDS = 300  # a claim whose heartbeat is older than this may be taken over
HEARTBEAT_SECONDS = 60  # how often a running unit's claim is refreshed
TIMING = frozenset({"seconds", "cpu_seconds", "threads", "worker", "pretrain_seconds"})  # how a result was made
APPLICATION_ID = 0x48656262  # "Hebb", in the SQLite header: tells our files from other SQLite files
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, method TEXT NOT NULL, regime REAL NOT NULL,
    layer INTEGER NOT NULL, seed INTEGER NOT NULL, settings TEXT NOT NULL, record TEXT NOT NULL,
    UNIQUE (method, regime, layer, seed, settings));
CREATE TABLE IF NOT EXISTS curves (settings TEXT NOT NULL, curve TEXT NOT NULL, method TEXT NOT NULL,
    seed INTEGER NOT NULL, layer INTEGER NOT NULL, epoch REAL NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (settings, curve, method, seed, layer, epoch));
CREATE TABLE IF NOT EXISTS claims (unit TEXT PRIMARY KEY, owner TEXT NOT NULL, refreshed REAL NOT NULL,
    since REAL, worker TEXT);
"""
T = TypeVar("T")


class StoreWarning(UserWarning):
    """Something in a results store (or a legacy results file) was unreadable and has been skipped."""


class StoreError(ValueError):
    """A results store cannot be used: one line naming its file and why."""


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


def _check_record(record: dict) -> tuple:
    """The (method, regime, layer, seed) of a stored record that a table can use: it has them, a numeric
    ``val_accuracy`` and a list ``history`` (else ``KeyError``/``ValueError``/``TypeError``)."""
    key = _key(record, KEY[:4])
    accuracy, history = record["val_accuracy"], record["history"]
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
        raise TypeError(f"val_accuracy is {accuracy!r:.40}, not a number")
    if not isinstance(history, list):
        raise TypeError(f"history is {history!r:.40}, not a list")
    return key


def _explain(path: object, error: sqlite3.Error, timeout: float) -> str:
    """One line naming the store's file and what is wrong with it."""
    text = str(error)
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another process (waited {timeout:g} s); try again when that process finishes"
    if "full" in text:
        return f"{path} cannot be written: the disk is full ({text}); free some space and run again (stored results are kept)"
    if "unable to open" in text and Path(str(path)).is_dir():
        return f"{path} is a folder; a results store is a file of that name: move the folder away"
    if "malformed" in text or "corrupt" in text:
        return (f"{path} is damaged ({text}); move it away (its results are recomputed) or restore a copy "
                f"(`sqlite3 {path} .recover` may save part of it)")
    if "not a database" in text or "other tables" in text:
        return f"{path} is not a hebbkit results store (SQLite): {text}"
    if "readonly" in text or "read-only" in text:
        return f"{path} cannot be written (read-only): {text}"
    return f"{path}: the results store failed ({type(error).__name__}: {text})"


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """``method`` with SQLite's errors turned into a :class:`StoreError` naming the file."""
    @functools.wraps(method)
    def wrapper(self: ResultStore, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise StoreError(_explain(self.path, error, self.timeout)) from None
    return wrapper


class ResultStore:
    """The results of one output folder, in ``folder/results.sqlite`` (``None``: in memory, for one process);
    a context manager."""

    def __init__(self, folder: str | Path | None, timeout: float = 60.0):
        self.timeout = timeout
        if folder is None:
            self.folder, self.path = None, ":memory:"
        else:
            folder = Path(folder)
            if folder.is_file():
                raise ValueError(f"{folder} is a file; ResultStore wants the output folder that holds {STORE_FILE}")
            folder.mkdir(parents=True, exist_ok=True)
            self.folder, self.path = folder, folder / STORE_FILE
        try:
            self._open()
        except StoreError:
            if hasattr(self, "_db"):
                self._db.close()
            raise
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    @_guarded
    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(claims)")}
            self._claims_say_who = {"since", "worker"} <= columns  # else a store from before they did: added
            # on the first claim, so that opening and reading a store changes nothing in it

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
            with suppress(sqlite3.Error):  # a full disk can fail the rollback too; the first error is the one
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

    @_guarded
    def put(self, record: dict) -> bool:
        """Store ``record``; ``False`` (nothing written) if its (method, regime, layer, seed, settings) is there."""
        with self._transaction():
            return self._insert(record)

    def _select(self, what: str, settings: str | None, order: str) -> list[tuple]:
        where, args = ("", ()) if settings is None else ("WHERE settings = ?", (settings,))
        return self._db.execute(f"SELECT {what} {where} ORDER BY {order}", args).fetchall()

    @_guarded
    def _valid(self, settings: str | None, prune: bool = True) -> list[tuple[tuple, dict]]:
        """(key, record) of each readable record; unreadable ones are warned about and (``prune``) deleted."""
        valid, bad = [], []
        for row_id, text in self._select("id, record FROM records", settings, "id"):
            try:
                record = json.loads(text)
                valid.append((_check_record(record), record))
            except (ValueError, KeyError, TypeError) as error:
                warnings.warn(f"{self.path} row {row_id}: unreadable record ({error!r}); skipped, it will be "
                              f"recomputed", StoreWarning, stacklevel=4)
                bad.append((row_id,))
        if bad and prune:
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

    @_guarded
    def put_curves(self, settings: str, rows: list[dict]) -> None:
        """Store rows with curve, method, seed, layer, epoch under ``settings``; each replaces one of the same key."""
        with self._transaction():
            self._insert_curves(settings, rows)

    @_guarded
    def curves(self, settings: str | None = None) -> pd.DataFrame:
        """The convergence rows under ``settings`` (all when ``None``), with a ``settings`` column."""
        rows = self._select("settings, row FROM curves", settings, "settings, method, seed, curve, layer, epoch")
        return pd.DataFrame([{"settings": key, **json.loads(row)} for key, row in rows])

    @property
    def owner(self) -> str:
        """This process, as a claim's owner: ``hostname:pid``."""
        return f"{socket.gethostname()}:{os.getpid()}"

    @_guarded
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

    @_guarded
    def claim(self, unit: str, worker: str | None = None) -> bool:
        """Claim (or refresh this process's claim on) ``unit``, run by ``worker`` (a description: ``"local job
        123"``; ``None``: this process); ``False`` while another live process holds it. A claim is stale when
        its owner is a dead process on this host, or its heartbeat is over :data:`STALE_SECONDS` old."""
        with self._transaction():
            if not self._claims_say_who:
                for column in ("since REAL", "worker TEXT"):
                    with suppress(sqlite3.OperationalError):  # another process added it first
                        self._db.execute(f"ALTER TABLE claims ADD COLUMN {column}")
                self._claims_say_who = True
            held = self._db.execute("SELECT owner, refreshed, since FROM claims WHERE unit = ?", (unit,)).fetchone()
            if held is not None and held[0] != self.owner and not _stale(*held[:2]):
                return False
            now = time.time()
            since = held[2] if held is not None and held[0] == self.owner and held[2] is not None else now
            self._db.execute("INSERT OR REPLACE INTO claims (unit, owner, refreshed, since, worker) "
                             "VALUES (?, ?, ?, ?, ?)", (unit, self.owner, now, since, worker))
            return True

    @_guarded
    def release(self, unit: str) -> None:
        """Drop this process's claim on ``unit`` (nothing if it holds none)."""
        with self._transaction():
            self._db.execute("DELETE FROM claims WHERE unit = ? AND owner = ?", (unit, self.owner))

    @_guarded
    def claims(self) -> dict[str, dict]:
        """Every claim, by unit: ``owner``, ``worker``, ``since`` and ``refreshed`` (epoch seconds) and ``stale``."""
        columns = "worker, since" if self._claims_say_who else "NULL, NULL"
        rows = self._db.execute(f"SELECT unit, owner, {columns}, refreshed FROM claims ORDER BY unit").fetchall()
        return {unit: {"owner": owner, "worker": worker, "since": since if since is not None else refreshed,
                       "refreshed": refreshed, "stale": _stale(owner, refreshed)}
                for unit, owner, worker, since, refreshed in rows}

    @contextmanager
    def heartbeat(self, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Refresh this process's claims every ``every`` seconds (a daemon thread with its own connection) until
        the block ends, so that a long unit's claim never looks stale while this process lives."""
        if self.folder is None:  # in memory: no other process can see the claims
            yield
            return
        stop, owner = threading.Event(), self.owner

        def beat() -> None:
            with suppress(sqlite3.Error):  # a failing store shows in the main thread's next write
                connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                try:
                    while not stop.wait(every):
                        with suppress(sqlite3.Error):
                            connection.execute("UPDATE claims SET refreshed = ? WHERE owner = ?", (time.time(), owner))
                finally:
                    connection.close()

        thread = threading.Thread(target=beat, name="hebbkit-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _migrate(self) -> None:
        """Import a legacy results.jsonl / convergence.csv from the folder, then rename them ``*.migrated``."""
        if self.folder is None:
            return
        jsonl, csv = self.folder / LEGACY_RESULTS, self.folder / LEGACY_CONVERGENCE
        if not (jsonl.exists() or csv.exists()):
            return
        try:
            imported = self._import_legacy(jsonl, csv)
        except sqlite3.Error as error:
            raise StoreError(_explain(self.path, error, self.timeout)) from None
        for path in imported:
            with suppress(FileNotFoundError):  # another process renamed it first
                path.replace(path.with_name(path.name + ".migrated"))

    def _import_legacy(self, jsonl: Path, csv: Path) -> list[Path]:
        imported = []
        with self._transaction():  # the import is idempotent, so a second process repeating it does no harm
            if jsonl.exists():
                for number, line in enumerate(jsonl.read_text(errors="replace").splitlines(), 1):
                    try:
                        if line.strip():
                            self._insert(json.loads(line))
                    except (ValueError, RecursionError, OverflowError) as error:  # too deeply nested, too large
                        warnings.warn(f"{jsonl} line {number}: unreadable record ({error}); skipped",
                                      StoreWarning, stacklevel=4)
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
                    warnings.warn(f"{csv}: not imported ({error}); left in place", StoreWarning, stacklevel=4)
        return imported

    @_guarded
    def _curve_rows(self) -> list[tuple[str, dict]]:
        """(settings, row) of every convergence row, as stored."""
        return [(settings, json.loads(row)) for settings, row in self._select("settings, row FROM curves", None, "rowid")]

    @_guarded
    def merge(self, records: list[dict], curves: list[tuple[str, dict]]) -> tuple[int, int]:
        """Add ``records`` and ``(settings, row)`` curves in one transaction (records already here stay, curves
        replace); return how many records and curve rows were new."""
        with self._transaction():
            added = sum(self._insert(record) for record in records)
            before = self._db.execute("SELECT count(*) FROM curves").fetchone()[0]
            for settings, row in curves:
                self._insert_curves(settings, [row])
            return added, self._db.execute("SELECT count(*) FROM curves").fetchone()[0] - before


def _stale(owner: str, refreshed: float) -> bool:
    """Whether a claim may be taken over: a dead process on this host, or no heartbeat for STALE_SECONDS."""
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


# ------------------------------------------------------------------------------------------- merging


def _content(value: object) -> object:
    """``value`` without the fields that say how or where it was computed (:data:`TIMING`), at any depth."""
    if isinstance(value, dict):
        return {key: _content(item) for key, item in value.items() if key not in TIMING}
    if isinstance(value, (list, tuple)):
        return [_content(item) for item in value]
    return value


def _same(a: object, b: object) -> bool:
    """Equal content, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def merge_stores(sources: Sequence[str | Path], out: str | Path, keep_first: bool = False) -> tuple[int, int]:
    """Join the results stores of the folders ``sources`` (filled on different hosts, say) into ``out``'s
    store (created, or added to); return how many records and curve rows were added.

    A cell (method, regime, layer, seed, settings) or a curve row held by several stores must hold the same
    numbers in each (timings and the worker's name may differ): two runs of the same settings that disagree
    are a conflict, and nothing is written (a :class:`StoreError` names the cell and the two folders), unless
    ``keep_first``: then the copy of the first folder in the order ``out``, ``sources`` is kept. Claims are
    not merged; unreadable records are skipped with a warning, and no source is changed.
    """
    out = Path(out)
    chosen: dict[tuple, tuple[dict, Path]] = {}
    chosen_curves: dict[tuple, tuple[tuple[str, dict], Path]] = {}
    folders = list(dict.fromkeys(Path(source) for source in sources))
    reading = [out] if (out / STORE_FILE).exists() and out.resolve() not in {f.resolve() for f in folders} else []
    for folder in folders:
        if not (folder / STORE_FILE).exists():
            raise StoreError(f"{folder / STORE_FILE} does not exist: each source must be an output folder with a store")
    for folder in reading + folders:
        with ResultStore(folder) as store:
            records = [record for _, record in store._valid(None, prune=False)]
            rows = store._curve_rows()
        for items, table, describe in (
                ([(_key(r, KEY), r) for r in records], chosen, "record"),
                ([((settings, *_key(row, CURVE_KEY)), (settings, row)) for settings, row in rows], chosen_curves,
                 "curve row")):
            for key, value in items:
                if key not in table:
                    table[key] = (value, folder)
                elif not _same(_content(table[key][0]), _content(value)) and not keep_first:
                    raise StoreError(
                        f"conflict: the {describe} {'/'.join(map(str, key))} differs between {table[key][1]} and "
                        f"{folder} (two runs of the same settings disagree); nothing written. Keep the first "
                        f"folder's copies with --keep-first, or re-run that cell")
    with ResultStore(out) as store:
        return store.merge([value for value, _ in chosen.values()],
                           [value for value, _ in chosen_curves.values()])


def merge_command(args: argparse.Namespace) -> int:
    """``hebbkit merge``: join stores; print what was added."""
    records, curves = merge_stores(args.sources, args.out, keep_first=args.keep_first)
    with ResultStore(args.out) as store:
        total = len(store.records())
    print(f"merged {len(set(map(Path, args.sources)))} stores into {Path(args.out) / STORE_FILE}: {records} records and {curves} "
          f"curve rows added, {total} records in all")
    return 0
