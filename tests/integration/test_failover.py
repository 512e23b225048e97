"""Multi-region failover, retries and circuit breakers shared by every worker (through lighttpd)."""
import concurrent.futures
import time

import pytest

from conftest import backend_config, chat_body


def three_regions(mocks, **extra):
    return [backend_config(mocks["east"], 1, **extra), backend_config(mocks["west"], 2, **extra),
            backend_config(mocks["eu"], 3, **extra)]


@pytest.fixture
def regional(make_gateway, mocks):
    def make(backends=None, **overrides):
        return make_gateway(backends=backends or three_regions(mocks), **overrides)
    return make


def test_primary_healthy_takes_all_traffic(regional, mocks):
    gw = regional()
    for _ in range(10):
        assert gw.post("/api/chat", chat_body()).status == 200
    assert mocks["east"].stats()["requests"] == 10
    assert mocks["west"].stats()["requests"] == 0
    assert mocks["eu"].stats()["requests"] == 0
    assert {r["backend"] for r in gw.audit_rows()} == {"east"}


def test_primary_500_goes_to_secondary(regional, mocks):
    gw = regional()
    mocks["east"].set(mode="500")
    mocks["west"].set(reply="from west")
    r = gw.post("/api/chat", chat_body())
    assert r.status == 200, r
    assert r.json()["content"] == "from west"
    row = gw.audit_rows()[0]
    assert row["attempts"] == 2 and row["backend"] == "west" and row["status"] == "success"
    assert '"backend":"east","status":500' in row["attempts_detail"]
    # each region is asked for its own deployment name
    assert mocks["west"].stats()["by_path"] == {"/openai/deployments/gpt-4o-west/chat/completions": 1}


def test_deadline_hang_fails_over_on_timeout(regional, mocks):
    east = backend_config(mocks["east"], 1, timeout_s=1)
    gw = regional(backends=[east, backend_config(mocks["west"], 2)])
    mocks["east"].set(mode="hang", hang_s=5)
    t0 = time.time()
    r = gw.post("/api/chat", chat_body())
    assert r.status == 200 and time.time() - t0 < 4
    assert gw.audit_rows()[0]["backend"] == "west"


def test_closed_connection_and_malformed_answer_fail_over(regional, mocks):
    gw = regional()
    mocks["east"].set(mode="close")
    assert gw.post("/api/chat", chat_body()).status == 200
    mocks["east"].set(mode="malformed")
    assert gw.post("/api/chat", chat_body()).status == 200
    assert [r["backend"] for r in gw.audit_rows()] == ["west", "west"]


def test_breaker_opens_for_every_worker_then_half_opens_and_closes(regional, mocks):
    gw = regional(workers=8,
                  circuit_breaker={"failure_threshold": 5, "recovery_timeout_s": 2, "half_open_max_calls": 3})
    mocks["east"].down(6)  # connections refused for 6 s
    time.sleep(0.2)
    for i in range(5):
        r = gw.post("/api/chat", chat_body())
        assert r.status == 200, r
    rows = gw.audit_rows()
    assert [r["attempts"] for r in rows] == [2] * 5
    # Open now: no worker tries east any more, whichever worker takes the request.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: gw.post("/api/chat", chat_body()).status, range(24)))
    assert results == [200] * 24
    rows = gw.audit_rows()[5:]
    assert all(r["attempts"] == 1 and r["backend"] == "west" for r in rows), [r["attempts_detail"] for r in rows]
    status = gw.cli("backend", "status").stdout
    assert "east\t1\topen\t5" in status
    # East comes back; after the recovery timeout at most 3 trial calls run at once across workers.
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            mocks["east"].stats()
            break
        except OSError:
            time.sleep(0.2)
    mocks["east"].control("/_mock/reset", {})
    mocks["east"].set(expect_key="key-east-secret", latency_s=1.5)
    time.sleep(2.2)
    # Eight requests at once on eight workers, all arriving while the trials run.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: gw.post("/api/chat", chat_body()).status, range(8)))
    assert results == [200] * 8
    st = mocks["east"].stats()
    assert st["requests"] == 3, st
    assert st["max_in_flight"] == 3
    # The trials succeeded: the breaker is closed and east takes the traffic again.
    mocks["east"].set(latency_s=0)
    before = mocks["east"].stats()["requests"]
    for _ in range(5):
        assert gw.post("/api/chat", chat_body()).status == 200
    assert mocks["east"].stats()["requests"] == before + 5
    assert "east\t1\tclosed\t0" in gw.cli("backend", "status").stdout


def test_429_with_retry_after_skips_region_for_that_long(regional, mocks):
    gw = regional()
    mocks["east"].set(mode="429", retry_after=2, fail_count=1)
    r = gw.post("/api/chat", chat_body())
    assert r.status == 200 and gw.audit_rows()[0]["backend"] == "west"
    for _ in range(5):
        assert gw.post("/api/chat", chat_body()).status == 200
    assert mocks["east"].stats()["requests"] == 1
    time.sleep(2.2)
    assert gw.post("/api/chat", chat_body()).status == 200
    assert mocks["east"].stats()["requests"] == 2
    assert gw.audit_rows()[-1]["backend"] == "east"


def test_all_regions_down_gives_503_with_retry_after_and_audit_rows(regional, mocks):
    gw = regional(circuit_breaker={"failure_threshold": 1, "recovery_timeout_s": 30})
    for m in mocks.values():
        m.set(mode="500")
    statuses = [gw.post("/api/chat", chat_body()) for _ in range(4)]
    assert statuses[0].status == 502
    last = statuses[-1]
    assert last.status == 503, last
    assert last.json()["error"]["code"] == "backend_unavailable"
    assert 1 <= int(last.headers["retry-after"]) <= 30
    rows = gw.audit_rows()
    assert len(rows) == 4
    assert rows[-1]["status"] == "error" and rows[-1]["http_status"] == 503
    assert gw.get("/readyz").status == 503


def test_backend_400_passes_through_unchanged_and_is_not_retried(regional, mocks):
    gw = regional()
    mocks["east"].set(mode="400")
    r = gw.post("/api/chat", chat_body())
    assert r.status == 400
    assert r.json()["error"]["param"] == "temperature"
    assert mocks["east"].stats()["requests"] == 1
    assert mocks["west"].stats()["requests"] == 0
    row = gw.audit_rows()[0]
    assert row["attempts"] == 1 and row["http_status"] == 400


def test_backoff_honours_retry_after_when_every_region_throttles(make_gateway, mocks):
    gw = make_gateway(backends=[backend_config(mocks["east"], 1)],
                      retry={"max_attempts": 2, "base_delay_ms": 10, "max_delay_ms": 50, "deadline_s": 10})
    mocks["east"].set(mode="429", retry_after=1, fail_count=1)
    t0 = time.time()
    r = gw.post("/api/chat", chat_body())
    elapsed = time.time() - t0
    assert r.status == 200, r
    assert elapsed >= 0.95, elapsed
    assert gw.audit_rows()[0]["attempts"] == 2


def test_weights_share_traffic_within_a_priority(make_gateway, mocks):
    gw = make_gateway(backends=[backend_config(mocks["east"], 1, weight=1),
                                backend_config(mocks["west"], 1, weight=3)])
    for _ in range(80):
        assert gw.post("/api/chat", chat_body()).status == 200
    east, west = mocks["east"].stats()["requests"], mocks["west"].stats()["requests"]
    assert east + west == 80
    assert 8 <= east <= 34, (east, west)


def test_backend_probe_closes_the_breaker_of_a_recovered_region(regional, mocks):
    gw = regional(circuit_breaker={"failure_threshold": 1, "recovery_timeout_s": 300})
    mocks["east"].set(mode="500", fail_count=1)
    assert gw.post("/api/chat", chat_body()).status == 200
    assert "east\t1\topen" in gw.cli("backend", "status").stdout
    assert gw.post("/api/chat", chat_body()).json()
    assert gw.audit_rows()[-1]["backend"] == "west"
    out = gw.cli("backend", "probe").stdout
    assert "east\topen\thealthy" in out and "closed 1 breaker(s)" in out
    assert mocks["east"].stats()["by_path"].get("/openai/models") == 1  # a free call, not a completion
    assert gw.post("/api/chat", chat_body()).status == 200
    assert gw.audit_rows()[-1]["backend"] == "east"


def test_backend_reset_closes_a_breaker(regional, mocks):
    gw = regional(circuit_breaker={"failure_threshold": 1, "recovery_timeout_s": 300})
    mocks["east"].set(mode="500", fail_count=1)
    gw.post("/api/chat", chat_body())
    assert "east\t1\topen" in gw.cli("backend", "status").stdout
    assert "reset" in gw.cli("backend", "reset", "east").stdout
    assert "east\t1\tclosed\t0" in gw.cli("backend", "status").stdout
    assert gw.cli("backend", "reset", "nowhere", check=False).returncode != 0


def test_a_success_resets_the_failure_count_for_every_worker(regional, mocks):
    """The seed's rule: failures count only while consecutive. Four failures,
    a success, four failures again must leave the breaker closed; without the
    reset the fifth failure would open it."""
    gw = regional()

    def east_row():
        rows = gw.query("SELECT state, failures FROM backend_state WHERE name = 'east'")
        return rows[0] if rows else {"state": "closed", "failures": 0}

    for _ in range(2):
        mocks["east"].set(mode="500", fail_count=4)
        for _ in range(4):
            r = gw.post("/api/chat", chat_body())
            assert r.status == 200 and gw.audit_rows()[-1]["backend"] == "west", r
        assert east_row() == {"state": "closed", "failures": 4}
        r = gw.post("/api/chat", chat_body())
        assert r.status == 200 and gw.audit_rows()[-1]["backend"] == "east"
        assert east_row() == {"state": "closed", "failures": 0}
    assert mocks["east"].stats()["requests"] == 10
    assert [r["status"] for r in gw.audit_rows()] == ["success"] * 10
