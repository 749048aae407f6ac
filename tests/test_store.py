"""hebbkit.store: records, convergence rows and claims shared by several processes; legacy migration."""

import json
import multiprocessing
import random
import socket
import sqlite3
import time
import warnings
from contextlib import closing

import pandas as pd
import pytest

from hebbkit.store import STALE_SECONDS, STORE_FILE, ResultStore, StoreError, StoreWarning, merge_stores

CONTEXT = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
GRID = [(method, regime, layer, seed) for method in ("hpca", "sgd") for regime in (1.0, 10.0, 100.0)
        for layer in range(1, 6) for seed in range(2)]  # 60 cells


def record(method="hpca", regime=1.0, layer=1, seed=0, settings="abc123abc123", **extra) -> dict:
    return {"method": method, "regime": regime, "layer": layer, "seed": seed, "settings": settings,
            "val_accuracy": 50.0, "history": [{"epoch": 1, "val_accuracy": 50.0}], **extra}


def curve_row(epoch, layer=1, curve="hebbian", **extra) -> dict:
    return {"curve": curve, "method": "hpca", "seed": 0, "layer": layer, "epoch": epoch, "regime": 100.0,
            "val_accuracy": float(epoch), **extra}


def test_put_done_records_round_trip(tmp_path):
    with ResultStore(tmp_path) as store:
        assert store.put(record(val_accuracy=61.5, history=[{"epoch": 3, "loss": 0.25}]))
        assert store.put(record(layer=2))
        assert not store.put(record(val_accuracy=99.0))  # same key: the first record stays
        assert store.put(record(settings="other0other0", val_accuracy=12.0))
        assert store.done("abc123abc123") == {("hpca", 1.0, 1, 0), ("hpca", 1.0, 2, 0)}
        assert store.done("other0other0") == {("hpca", 1.0, 1, 0)}
        assert store.done("missing") == set()
        first, second = store.records("abc123abc123")
        assert first == record(val_accuracy=61.5, history=[{"epoch": 3, "loss": 0.25}])
        assert second["layer"] == 2
        assert [r["val_accuracy"] for r in store.records()] == [61.5, 50.0, 12.0]
        with pytest.raises(ValueError, match="a record needs method, regime, layer, seed, settings"):
            store.put({"method": "hpca", "regime": 1.0})
    with ResultStore(tmp_path) as store:  # persisted
        assert len(store.records()) == 3


def test_curves_replace_by_key_and_empty(tmp_path):
    with ResultStore(tmp_path) as store:
        assert store.curves().empty
        store.put_curves("s1", [curve_row(1), curve_row(2), curve_row(1, curve="sgd")])
        store.put_curves("s1", [curve_row(2, val_accuracy=77.0)])  # replaces epoch 2
        store.put_curves("s2", [curve_row(1, val_accuracy=5.0)])
        curves = store.curves("s1")
        assert len(curves) == 3
        assert set(curves.columns) == {"settings", "curve", "method", "seed", "layer", "epoch", "regime",
                                       "val_accuracy"}
        assert curves.set_index(["curve", "epoch"])["val_accuracy"].to_dict() == {
            ("hebbian", 1): 1.0, ("hebbian", 2): 77.0, ("sgd", 1): 1.0}
        assert store.curves()["settings"].tolist().count("s2") == 1
        assert store.curves("s3").empty


def _write_grid(folder: str, order_seed: int, queue, barrier) -> None:
    cells = GRID[:]
    random.Random(order_seed).shuffle(cells)
    inserted = 0
    with ResultStore(folder) as store:
        barrier.wait(timeout=30)  # all start writing together
        store.put_curves("abc123abc123", [curve_row(e, layer=order_seed, writer=order_seed) for e in range(50)])
        for i, cell in enumerate(cells):
            inserted += store.put(record(*cell, writer=order_seed))
            if i % 6 == 0:  # 10 blocks of 20 rows with keys shared by all writers, between the records
                store.put_curves("abc123abc123", [curve_row(e, curve="sgd", writer=order_seed)
                                                  for e in range(i // 6 * 20, i // 6 * 20 + 20)])
    queue.put(inserted)


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    ResultStore(tmp_path).close()
    queue, barrier = CONTEXT.Queue(), CONTEXT.Barrier(3)
    workers = [CONTEXT.Process(target=_write_grid, args=(str(tmp_path), seed, queue, barrier)) for seed in range(3)]
    for worker in workers:
        worker.start()
    inserted = [queue.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sum(inserted) == len(GRID)  # each cell inserted by exactly one writer
    with ResultStore(tmp_path) as store:
        records = store.records()
        assert len(records) == len(GRID)
        assert {(r["method"], r["regime"], r["layer"], r["seed"]) for r in records} == set(GRID)
        assert store.done("abc123abc123") == set(GRID)
        curves = store.curves("abc123abc123")
        assert len(curves[curves["curve"] == "hebbian"]) == 3 * 50  # one block per writer, all kept
        assert sorted(curves[curves["curve"] == "sgd"]["epoch"]) == list(range(200))


def _claim(folder: str, units: list, queue, hold=None, barrier=None) -> None:
    """Claim ``units`` in a child process; report what it got; keep the claims (stay alive) until ``hold``."""
    with ResultStore(folder) as store:
        if barrier is not None:
            barrier.wait(timeout=30)
        got = [unit for unit in units if store.claim(unit)]
        queue.put(got)
        if barrier is not None:
            barrier.wait(timeout=30)  # no one exits (and so leaves stale claims) before all have claimed
        if hold is not None:
            hold.wait(timeout=30)


def _claim_in_child(folder, units) -> list:
    queue = CONTEXT.Queue()
    child = CONTEXT.Process(target=_claim, args=(str(folder), units, queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(timeout=30)
    return got


def test_claims_live_dead_release(tmp_path):
    queue, hold = CONTEXT.Queue(), CONTEXT.Event()
    holder = CONTEXT.Process(target=_claim, args=(str(tmp_path), ["hpca/seed0/s", "hpca/seed1/s"], queue, hold))
    holder.start()
    try:
        assert queue.get(timeout=30) == ["hpca/seed0/s", "hpca/seed1/s"]
        with ResultStore(tmp_path) as store:
            assert not store.claim("hpca/seed0/s")  # held by a live process
            assert store.claim("sgd/seed0/s")
            assert store.claim("sgd/seed0/s")  # re-claiming one's own unit refreshes it
            hold.set()
            holder.join(timeout=30)
            assert holder.exitcode == 0
            assert store.claim("hpca/seed0/s")  # its owner died without releasing: taken over
            assert _claim_in_child(tmp_path, ["hpca/seed0/s", "hpca/seed1/s"]) == ["hpca/seed1/s"]
            store.release("hpca/seed0/s")
            assert _claim_in_child(tmp_path, ["hpca/seed0/s"]) == ["hpca/seed0/s"]
    finally:
        hold.set()
        holder.join(timeout=30)


def test_claims_of_other_hosts_go_stale_without_a_heartbeat(tmp_path):
    with ResultStore(tmp_path) as store:
        with closing(sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)) as raw:
            raw.executemany("INSERT INTO claims (unit, owner, refreshed) VALUES (?, ?, ?)", [
                ("recent", "elsewhere:1", time.time() - STALE_SECONDS + 60),
                ("old", "elsewhere:1", time.time() - STALE_SECONDS - 60),
                ("garbled", f"{socket.gethostname()}:notapid", time.time())])
        assert STALE_SECONDS <= 600  # minutes, not a day
        assert not store.claim("recent")  # another host's process cannot be checked: respected while it beats
        assert store.claim("old")
        assert not store.claim("garbled")
        store.release("recent")  # not ours: nothing happens
        assert not store.claim("recent")


def test_a_claim_says_who_and_since_when_and_its_heartbeat_keeps_it_fresh(tmp_path):
    with ResultStore(tmp_path) as store:
        before = time.time()
        assert store.claim("hpca/seed0/s", worker="local job 42")
        with closing(sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)) as raw:
            raw.execute("UPDATE claims SET refreshed = refreshed - 3600, since = since - 3600")  # an hour ago
        (claim,) = store.claims().values()
        assert claim["owner"] == store.owner and claim["worker"] == "local job 42"
        assert claim["refreshed"] < before - 3000 and claim["stale"]  # no heartbeat for an hour: stale
        with store.heartbeat(every=0.05):
            time.sleep(0.5)
        claim = store.claims()["hpca/seed0/s"]
        assert claim["refreshed"] >= before and claim["since"] < before - 3000  # refreshed; since unchanged
        assert not claim["stale"]
        assert store.claim("hpca/seed0/s")  # re-claimed by its owner: since stays
        assert store.claims()["hpca/seed0/s"]["since"] < before - 3000


def test_a_store_without_the_claims_columns_gets_them(tmp_path):
    ResultStore(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)) as raw:  # as hebbkit 0.1 left it
        raw.execute("ALTER TABLE claims DROP COLUMN since")
        raw.execute("ALTER TABLE claims DROP COLUMN worker")
        raw.execute("INSERT INTO claims VALUES ('u', 'elsewhere:1', ?)", (time.time(),))
    before = (tmp_path / STORE_FILE).read_bytes()
    with ResultStore(tmp_path) as store:  # opened and read: unchanged (a committed store stays as it is)
        assert store.claims()["u"]["since"] == store.claims()["u"]["refreshed"]
        assert store.claims()["u"]["worker"] is None
    assert (tmp_path / STORE_FILE).read_bytes() == before
    with ResultStore(tmp_path) as store:
        assert store.claim("v", worker="slurm job 7_1")
        assert store.claims()["v"]["worker"] == "slurm job 7_1"


def test_racing_processes_get_disjoint_claims(tmp_path):
    units = [f"u{i}" for i in range(20)]
    ResultStore(tmp_path).close()
    queue, barrier = CONTEXT.Queue(), CONTEXT.Barrier(2)
    workers = [CONTEXT.Process(target=_claim, args=(str(tmp_path), order, queue, None, barrier))
               for order in (units, units[::-1])]
    for worker in workers:
        worker.start()
    first, second = (set(queue.get(timeout=30)) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    assert first.isdisjoint(second)
    assert first | second == set(units)


def test_corrupt_record_is_warned_about_deleted_and_recomputed(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(record(layer=1))
        with closing(sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)) as raw:
            raw.execute("INSERT INTO records (id, method, regime, layer, seed, settings, record) "
                        "VALUES (17, 'hpca', 1.0, 2, 0, 'abc123abc123', '{\"method\": \"hp')")
            raw.execute("INSERT INTO records (id, method, regime, layer, seed, settings, record) "
                        "VALUES (18, 'hpca', 1.0, 3, 0, 'abc123abc123', '{\"method\": \"hpca\"}')")
        with pytest.warns(StoreWarning) as caught:
            assert store.records() == [record(layer=1)]
        messages = sorted(str(w.message) for w in caught)
        assert messages[0].startswith(f"{tmp_path / STORE_FILE} row 17: unreadable record")
        assert messages[0].endswith("skipped, it will be recomputed")
        assert messages[1].startswith(f"{tmp_path / STORE_FILE} row 18: unreadable record (KeyError('regime'))")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # deleted: no second warning
            assert store.done("abc123abc123") == {("hpca", 1.0, 1, 0)}
        assert store.put(record(layer=2))  # the cell can be stored again


def test_migrates_legacy_files_once(tmp_path):
    lines = [json.dumps(record(layer=1, val_accuracy=40.0)), json.dumps(record(layer=2)),
             json.dumps(record(layer=1, val_accuracy=41.0)), "{garbage", ""]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    pd.DataFrame([curve_row(1), curve_row(2)]).to_csv(tmp_path / "convergence.csv", index=False)
    with pytest.warns(StoreWarning, match=f"{tmp_path / 'results.jsonl'} line 4: unreadable record"):
        store = ResultStore(tmp_path)
    with store:
        assert [(r["layer"], r["val_accuracy"]) for r in store.records("abc123abc123")] == [(1, 40.0), (2, 50.0)]
        assert store.curves("abc123abc123")["epoch"].tolist() == [1, 2]
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "convergence.csv").exists()
    assert (tmp_path / "results.jsonl.migrated").read_text() == "\n".join(lines) + "\n"
    assert (tmp_path / "convergence.csv.migrated").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ResultStore(tmp_path) as store:
            assert len(store.records()) == 2 and len(store.curves()) == 2


GARBAGE = {  # line -> what the warning says about it
    "not json at all": "Expecting value",
    "123": "a record needs method, regime, layer, seed, settings",
    "null": "a record needs method",
    "[1, 2]": "a record needs method",
    '{"method": "hpca"}': "a record needs method",
    json.dumps(record(layer="x")): "a record needs method",
    "[" * 100_000: "maximum recursion depth exceeded",
    json.dumps(record(layer=10**30)): "too large to convert to SQLite INTEGER",
    "\x00\x01\x02": "Expecting value",
}


def test_legacy_results_with_garbage_lines_import_the_good_ones(tmp_path):
    good = [json.dumps(record(layer=layer)) for layer in (1, 2, 3)]
    lines = [good[0], *GARBAGE, good[1], "", good[2]]
    (tmp_path / "results.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe not UTF-8\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ResultStore(tmp_path) as store:
            assert [r["layer"] for r in store.records()] == [1, 2, 3]
    said = [str(w.message) for w in caught if w.category is StoreWarning]
    expected = [(number, message) for number, message in enumerate(GARBAGE.values(), 2)]
    expected.append((len(lines) + 1, "Expecting value"))  # the undecodable bytes
    assert len(said) == len(expected)
    for text, (number, message) in zip(said, expected):
        assert text.startswith(f"{tmp_path / 'results.jsonl'} line {number}: unreadable record (") and message in text
        assert text.endswith("; skipped") and "\n" not in text
    assert (tmp_path / "results.jsonl.migrated").exists() and not (tmp_path / "results.jsonl").exists()


def test_legacy_curves_without_a_single_settings_stay_in_place(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps(record()) + "\n" + json.dumps(record(settings="x")) + "\n")
    pd.DataFrame([curve_row(1)]).to_csv(tmp_path / "convergence.csv", index=False)
    with pytest.warns(StoreWarning, match="convergence.csv: not imported .*2 settings values"):
        store = ResultStore(tmp_path)
    with store:
        assert len(store.records()) == 2 and store.curves().empty
    assert (tmp_path / "convergence.csv").exists() and (tmp_path / "results.jsonl.migrated").exists()


def test_not_a_store_is_a_clear_error(tmp_path):
    a_file = tmp_path / "results"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"{a_file} is a file"):
        ResultStore(a_file)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / STORE_FILE).write_bytes(b"not a database, just text " * 100)
    with pytest.raises(ValueError, match=f"{tmp_path / 'garbage' / STORE_FILE} is not a hebbkit results store"):
        ResultStore(tmp_path / "garbage")
    (tmp_path / "foreign").mkdir()
    with closing(sqlite3.connect(tmp_path / "foreign" / STORE_FILE, isolation_level=None)) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(ValueError, match="not a hebbkit results store \\(SQLite\\): it holds other tables"):
        ResultStore(tmp_path / "foreign")


def test_records_without_val_accuracy_or_history_are_skipped_with_a_warning(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(record(layer=1))
        no_accuracy = {k: v for k, v in record(layer=2).items() if k != "val_accuracy"}
        no_history = {k: v for k, v in record(layer=3).items() if k != "history"}
        store.put(no_accuracy)
        store.put(no_history)
        store.put(record(layer=4, val_accuracy="high"))
        with pytest.warns(StoreWarning) as caught:
            assert store.records() == [record(layer=1)]
        said = " ".join(str(w.message) for w in caught)
        assert "KeyError('val_accuracy')" in said and "KeyError('history')" in said and "not a number" in said
        assert store.done("abc123abc123") == {("hpca", 1.0, 1, 0)}  # to be recomputed


def _one_line(error: pytest.ExceptionInfo, path) -> str:
    text = str(error.value)
    assert "\n" not in text and str(path) in text
    return text


def test_a_folder_named_results_sqlite_is_one_line(tmp_path):
    (tmp_path / STORE_FILE).mkdir()
    with pytest.raises(StoreError) as error:
        ResultStore(tmp_path)
    assert "is a folder" in _one_line(error, tmp_path / STORE_FILE)


def test_a_full_disk_is_one_line_naming_the_store_and_keeps_what_was_stored(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(record(layer=1))
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk had no room left
        with pytest.raises(StoreError) as error:
            store.put(record(layer=2, history=[{"epoch": e, "pad": "x" * 500} for e in range(200)]))
        assert "disk is full" in _one_line(error, tmp_path / STORE_FILE)
    with ResultStore(tmp_path) as store:
        assert [r["layer"] for r in store.records()] == [1]


def test_a_store_locked_by_another_process_is_one_line(tmp_path):
    ResultStore(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / STORE_FILE, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError) as error:
            with ResultStore(tmp_path, timeout=0.2) as store:
                store.put(record())
        other.execute("ROLLBACK")
    assert "locked by another process" in _one_line(error, tmp_path / STORE_FILE)


def test_a_store_damaged_past_its_header_is_one_line_when_read(tmp_path):
    with ResultStore(tmp_path) as store:
        for layer in range(300):
            store.put(record(layer=layer, history=[{"epoch": 1, "pad": "y" * 300}]))
    path = tmp_path / STORE_FILE
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 8 * page
    data[2 * page: len(data) - page] = bytes(random.Random(0).getrandbits(8) for _ in range(len(data) - 3 * page))
    path.write_bytes(bytes(data))
    with ResultStore(tmp_path) as store:  # the header and the schema are intact: it opens
        with pytest.raises(StoreError) as error:
            store.records()
    assert " is damaged (database disk image is malformed); move it away" in _one_line(error, path)


# ------------------------------------------------------------------------------------------- merging


def _filled(folder, cells, **extra):
    with ResultStore(folder) as store:
        for layer in cells:
            store.put(record(layer=layer, **extra))
        store.put_curves("abc123abc123", [curve_row(layer) for layer in cells])


def test_merge_joins_two_stores_and_agreeing_duplicates_count_once(tmp_path):
    _filled(tmp_path / "a", [1, 2, 3], worker="host-a:1", seconds=3.0)
    _filled(tmp_path / "b", [3, 4], worker="host-b:9", seconds=7.0)  # cell 3 twice: same numbers, other timing
    added, curves = merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert (added, curves) == (4, 4)
    with ResultStore(tmp_path / "out") as store:
        assert sorted(r["layer"] for r in store.records()) == [1, 2, 3, 4]
        assert {r["worker"] for r in store.records() if r["layer"] == 3} == {"host-a:1"}  # the first folder's
        assert sorted(store.curves()["epoch"]) == [1, 2, 3, 4]
    assert merge_stores([tmp_path / "b"], tmp_path / "out") == (0, 0)  # again: nothing new
    with ResultStore(tmp_path / "a") as store:  # sources unchanged
        assert len(store.records()) == 3


def test_merge_refuses_a_conflict_and_writes_nothing_unless_keep_first(tmp_path):
    _filled(tmp_path / "a", [1, 2])
    _filled(tmp_path / "b", [2, 3], val_accuracy=51.0)  # cell 2 disagrees
    with pytest.raises(StoreError) as error:
        merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    text = _one_line(error, tmp_path / "a")
    assert "conflict" in text and "hpca/1.0/2/0/abc123abc123" in text and str(tmp_path / "b") in text
    assert not (tmp_path / "out" / STORE_FILE).exists()
    assert merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "out", keep_first=True) == (3, 3)
    with ResultStore(tmp_path / "out") as store:
        assert {r["layer"]: r["val_accuracy"] for r in store.records()} == {1: 50.0, 2: 50.0, 3: 51.0}


def test_merge_command_line(tmp_path, capsys):
    from hebbkit.cli import main

    _filled(tmp_path / "a", [1])
    _filled(tmp_path / "b", [2])
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    assert "2 records and 2 curve rows added, 2 records in all" in capsys.readouterr().out
    _filled(tmp_path / "c", [2], val_accuracy=1.0)
    assert main(["merge", str(tmp_path / "c"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hebbkit merge: error: conflict") and err.count("\n") == 1
    assert main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'nowhere' / STORE_FILE} does not exist" in capsys.readouterr().err
    (tmp_path / "odd" / STORE_FILE).mkdir(parents=True)
    assert main(["merge", str(tmp_path / "odd"), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'odd' / STORE_FILE} is a folder" in capsys.readouterr().err
