"""Several gateway hosts, one PostgreSQL: limits, budgets, breakers and the
audit trail stay exact across hosts, and a database that goes away costs
refusals, never unrecorded answers.

Each "host" is an independent stack: nginx in front of `aigw serve`, with its
own configuration, its own host-local files (writer lock, epochs page) and its
own workers, sharing nothing with the other but the database. The tests run
on PostgreSQL whatever AIGW_TEST_STORE says.
"""
import collections
import datetime
import concurrent.futures
import itertools
import os
import signal
import threading
import time

import pytest

from conftest import Gateway, backend_config, base_config, chat_body, pg_database_config, postgres


@pytest.fixture
def two_hosts(tmp_path, mocks):
    """make(**overrides) -> (host_a, host_b) on one new PostgreSQL database."""
    started = []

    def make(backends=None, workers=2, **overrides):
        if backends is None:
            backends = [backend_config(mocks["east"], 1)]
        hosts = []
        pg_database_config(str(tmp_path))  # the database both hosts use
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            # The same database for both; host-local files in each host's own directory.
            db = pg_database_config(str(d), same_as=str(tmp_path))
            cfg = base_config(str(d), backends, **overrides)
            cfg["database"] = db
            gw = Gateway(str(d), cfg, server="nginx", workers=workers)
            started.append(gw)
            hosts.append(gw.start())
        return hosts

    yield make
    for gw in started:
        gw.stop()
    problems = [line for gw in started for line in gw.sanitizer_reports()]
    assert not problems, "sanitizer reports in worker logs:\n" + "\n".join(problems)


def keyed(a, user, *args):
    """A user and a key made on host a; the key works on both hosts."""
    a.cli("user", "add", user, *args)
    return {"api-key": a.cli("key", "create", user).stdout.strip()}


def alternate(hosts, n, send, threads=32):
    """Sends n requests, request i to hosts[i % 2], from threads clients at once."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda i: send(hosts[i % len(hosts)]), range(n)))


def test_clients_alternating_between_hosts_are_admitted_exactly_up_to_the_limit(two_hosts, mocks):
    a, b = two_hosts(auth={"enabled": True}, limits={"requests_per_window": 60, "window_s": 3600})
    h = keyed(a, "erin")
    t0 = time.time()
    responses = alternate([a, b], 300, lambda gw: gw.post("/api/chat", chat_body(user_id="erin"), headers=h))
    statuses = collections.Counter(r.status for r in responses)
    print(f"\ntwo hosts, limit 60 of 300 requests: {dict(statuses)} in {time.time() - t0:.2f} s")
    assert statuses == {200: 60, 429: 240}, statuses
    admitted_by = collections.Counter(i % 2 for i, r in enumerate(responses) if r.status == 200)
    assert admitted_by[0] and admitted_by[1], "both hosts admitted some: the limit is shared, not split"
    assert mocks["east"].stats()["requests"] == 60
    rows = a.query("SELECT status, count(*) AS n FROM audit_log GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"success": 60, "refused": 240}


def test_a_budget_raced_from_both_hosts_is_never_overspent(two_hosts, mocks):
    a, b = two_hosts(auth={"enabled": True}, limits={"default_token_budget": 8000, "budget_period": "day"})
    h = keyed(a, "erin")
    mocks["east"].set(prompt_tokens=100, completion_tokens=300, latency_s=0.05)
    body = chat_body("word " * 80, user_id="erin", max_tokens=300)
    responses = alternate([a, b], 60, lambda gw: gw.post("/api/chat", body, headers=h))
    statuses = collections.Counter(r.status for r in responses)
    used = a.query("SELECT coalesce(sum(total_tokens), 0) AS t FROM audit_log WHERE status = 'success'")[0]["t"]
    print(f"\ntwo hosts, budget 8000: {dict(statuses)}, {used} tokens used")
    assert used <= 8000
    assert statuses[200] >= 8000 // 700  # not refused early either
    assert statuses[200] + statuses[403] == 60, statuses
    budget = a.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'erin'")[0]
    assert budget == {"used": used, "reserved": 0}


def test_a_breaker_opened_through_one_host_is_seen_by_the_other(two_hosts, mocks):
    a, b = two_hosts(backends=[backend_config(mocks["east"], 1), backend_config(mocks["west"], 2)],
                     circuit_breaker={"failure_threshold": 3, "recovery_timeout_s": 60,
                                      "half_open_max_calls": 1})
    mocks["east"].set(mode="500")
    for _ in range(3):
        assert a.post("/api/chat", chat_body()).status == 200  # east fails, west answers
    assert "east\t1\topen\t3" in b.cli("backend", "status").stdout
    # Host b caches breaker rows for at most a second: after that it skips east too.
    time.sleep(1.2)
    before = mocks["east"].stats()["requests"]
    for _ in range(6):
        r = b.post("/api/chat", chat_body())
        assert r.status == 200, r
    assert mocks["east"].stats()["requests"] == before, "host b still calls the open backend"
    rows = b.query("SELECT backend, attempts FROM audit_log ORDER BY id")[-6:]
    assert all(r["backend"] == "west" and r["attempts"] == 1 for r in rows), rows


def test_killing_one_hosts_workers_loses_no_audit_row(two_hosts, mocks):
    a, b = two_hosts(workers=2, auth={"enabled": True}, limits={"budget_period": "total"})
    h = keyed(a, "soak", "--budget", "100000000")
    mocks["east"].set(prompt_tokens=10, completion_tokens=20, latency_s=0.2)
    answers, lock, stop = [], threading.Lock(), threading.Event()

    def client(gw):
        while not stop.is_set():
            try:
                r = gw.post("/api/chat", chat_body(user_id="soak"), headers=h, timeout=15)
                with lock:
                    answers.append((r.headers.get("x-request-id"), r.status))
            except OSError:
                with lock:
                    answers.append((None, None))

    threads = [threading.Thread(target=client, args=(gw,), daemon=True)
               for gw in itertools.islice(itertools.cycle([a, b]), 16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    killed = a.serve_workers()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(20)
    for gw in (a, b):
        gw.stop()
    # What the killed workers left pending is released, as any host's sweep would.
    sweep = b.cli("audit", "sweep", "--older-than", "0s").stdout
    rows = {r["request_id"]: r for r in a.query("SELECT * FROM audit_log WHERE user_id = 'soak'")}
    statuses = collections.Counter(st for _, st in answers)
    print(f"\ntwo hosts, {len(killed)} workers of host a killed: {len(answers)} answers {dict(statuses)}, "
          f"{len(rows)} audit rows {dict(collections.Counter(r['status'] for r in rows.values()))}; "
          f"{sweep.strip()}")
    assert killed, "host a had no workers to kill"
    assert statuses[200] > 20
    # Every answer aigw gave has its row, with the outcome it answered.
    missing = [rid for rid, st in answers if rid and rid not in rows]
    assert not missing, f"{len(missing)} answers without an audit row"
    wrong = [rid for rid, st in answers if rid and st == 200 and rows[rid]["status"] != "success"]
    assert not wrong, wrong
    assert not [r for r in rows.values() if r["status"] == "pending"], "pending rows left after the sweep"
    # No token is uncounted: the budget holds what the rows charge.
    charged = sum(r["total_tokens"] or 0 for r in rows.values())
    budget = a.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'soak'")[0]
    assert budget == {"used": charged, "reserved": 0}, (budget, charged)


def test_postgresql_stopped_mid_load_refuses_then_recovers_by_itself(two_hosts, mocks):
    """The server stops under load: new requests get 503 store_unavailable
    with a Retry-After, answers already under way keep trying to record their
    outcome until it is back (never an answer without its audit row), and the
    same workers serve again without a restart."""
    a, b = two_hosts(workers=2)
    mocks["east"].set(latency_s=0.05)
    pg = postgres()
    answers, lock, stop = [], threading.Lock(), threading.Event()

    def client(gw):
        while not stop.is_set():
            try:
                r = gw.post("/api/chat", chat_body(), timeout=20)
                with lock:
                    answers.append((time.time(), r))
            except OSError:
                pass

    threads = [threading.Thread(target=client, args=(gw,), daemon=True) for gw in (a, b) * 4]
    for t in threads:
        t.start()
    probes = []
    # A fast shutdown writes a checkpoint of every dirty page first; start
    # from a clean one so that the outage is the two seconds below, well
    # inside the 15 s an answered request keeps trying to record its outcome.
    pg.query("postgres", "CHECKPOINT", role="postgres")
    try:
        time.sleep(1.0)
        stop_at = time.time()
        pg.stop(mode="fast")
        down_at = time.time()
        # New requests while it is down: the clients above may be waiting
        # for their settlement, which keeps trying until the server is back.
        time.sleep(0.5)
        while time.time() < down_at + 2.0:
            for gw in (a, b):
                probes.append(gw.post("/api/chat", chat_body(), timeout=10))
            time.sleep(0.05)
        pg.start()
        up_at = time.time()
        time.sleep(3.0)
    finally:
        if not pg.running():
            pg.start()
        stop.set()
        for t in threads:
            t.join(30)
    after = [r for t, r in answers if t > up_at + 2.0]
    print(f"\nPostgreSQL stopping {down_at - stop_at:.1f} s, down {up_at - down_at:.1f} s: "
          f"{len(answers)} answers under load, "
          f"{collections.Counter(r.status for r in probes)} to new requests while down, "
          f"{collections.Counter(r.status for r in after)} from 2 s after it came back")
    assert probes and all(r.status == 503 for r in probes), collections.Counter(r.status for r in probes)
    assert all(r.json()["error"]["code"] == "store_unavailable" and int(r.headers["retry-after"]) >= 1
               for r in probes)
    assert after and all(r.status == 200 for r in after), collections.Counter(r.status for r in after)
    # Every 200 has its success row; nothing was served unrecorded.
    rows = {r["request_id"]: r["status"] for r in a.query("SELECT request_id, status FROM audit_log")}
    served = [r.headers["x-request-id"] for _, r in answers if r.status == 200]
    assert all(rows.get(rid) == "success" for rid in served), \
        [(rid, rows.get(rid)) for rid in served if rows.get(rid) != "success"][:5]


def test_db_copy_moves_a_sqlite_gateway_to_postgresql_with_nothing_lost(tmp_path, mocks):
    """aigw db copy: the same users, keys, budgets and audit rows, the same
    reports, and a key made on SQLite still works on PostgreSQL."""
    old_dir, new_dir = tmp_path / "sqlite", tmp_path / "pg"
    old_dir.mkdir()
    new_dir.mkdir()
    backends = [backend_config(mocks["east"], 1)]
    cfg = base_config(str(old_dir), backends, auth={"enabled": True})
    cfg["database"] = {"path": str(old_dir / "aigw.db")}
    old = Gateway(str(old_dir), cfg, server="nginx", workers=1)
    new = None
    try:
        old.start()
        old.cli("user", "add", "erin", "--budget", "5000", "--period", "total")
        key = old.cli("key", "create", "erin").stdout.strip()
        mocks["east"].set(prompt_tokens=10, completion_tokens=20)
        for _ in range(5):
            assert old.post("/api/chat", chat_body(user_id="erin"), headers={"api-key": key}).status == 200
        assert old.post("/api/chat", chat_body(user_id="nobody"), headers={"api-key": "aigw_bad"}).status == 401
        old.stop()
        reports = {r: old.cli("report", r, "--since", "30d", "--format", "csv").stdout
                   for r in ("usage", "budget", "errors", "latency", "refusals")}

        cfg_new = base_config(str(new_dir), backends, auth={"enabled": True})
        cfg_new["database"] = pg_database_config(str(new_dir))
        new = Gateway(str(new_dir), cfg_new, server="nginx", workers=1)
        new.migrate()
        out = new.cli("db", "copy", "--from", str(old_dir / "aigw.db")).stdout
        assert "audit_log" in out and "copied" in out, out
        assert new.query("SELECT count(*) AS n FROM audit_log")[0]["n"] == \
            old.query("SELECT count(*) AS n FROM audit_log")[0]["n"] == 5
        for r, text in reports.items():
            assert new.cli("report", r, "--since", "30d", "--format", "csv").stdout == text, r
        # A second copy is refused: the destination is no longer empty, and nothing changes.
        again = new.cli("db", "copy", "--from", str(old_dir / "aigw.db"), check=False)
        assert again.returncode != 0 and "already has" in again.stderr and "nothing was copied" in again.stderr
        assert new.query("SELECT count(*) AS n FROM audit_log")[0]["n"] == 5
        new.start()
        r = new.post("/api/chat", chat_body(user_id="erin"), headers={"api-key": key})
        assert r.status == 200, r
        assert new.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'erin'")[0] == \
            {"used": 180, "reserved": 0}
        ids = [row["id"] for row in new.audit_rows()]
        assert ids == sorted(ids) and len(ids) == 6
        # The timestamp text is the same on both: copied as SQLite computed
        # it, and written by PostgreSQL's INSERT for the new row.
        q = "SELECT request_id, ts_ms, timestamp FROM audit_log ORDER BY id"
        copied, written = new.query(q)[:5], new.query(q)[5]
        assert copied == old.query(q)
        t = datetime.datetime.fromtimestamp(written["ts_ms"] / 1000, datetime.timezone.utc)
        assert written["timestamp"] == t.strftime("%Y-%m-%dT%H:%M:%S.") + \
            "%03dZ" % (written["ts_ms"] % 1000), written
    finally:
        old.stop()
        if new:
            new.stop()


def test_audit_bodies_written_to_postgresql_are_compressed_with_lz4(two_hosts, mocks):
    """Migration 009: a response body large enough to be compressed is
    compressed with lz4 (several times cheaper for the server than pglz)."""
    a, _ = two_hosts()
    reply = " ".join("word%d" % i for i in range(1500))  # ~12 kB, well over TOAST's 2 kB
    mocks["east"].set(reply=reply)
    r = a.post("/api/chat", chat_body())
    assert r.status == 200, r
    rows = a.query("SELECT length(response_body) AS n, pg_column_compression(response_body) AS c"
                   " FROM audit_log WHERE status = 'success'")
    assert len(rows) == 1 and rows[0]["n"] > len(reply), rows
    assert rows[0]["c"] == "lz4", rows
