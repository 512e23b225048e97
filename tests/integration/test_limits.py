"""Rate limits and token budgets, exact across every worker (through lighttpd)."""
import collections
import concurrent.futures
import os
import signal
import threading
import time

from conftest import chat_body


def keyed_gateway(make_gateway, workers=8, **overrides):
    gw = make_gateway(auth={"enabled": True}, workers=workers, **overrides)
    gw.cli("user", "add", "erin")
    key = gw.cli("key", "create", "erin").stdout.strip()
    return gw, {"api-key": key}


def wait_in_flight(mock, n):
    """Waits (up to 10 s) until the mock holds n calls open at once."""
    deadline = time.time() + 10
    while time.time() < deadline and mock.stats()["in_flight"] < n:
        time.sleep(0.02)
    assert mock.stats()["in_flight"] == n


def test_exactly_the_limit_is_admitted_by_many_workers(make_gateway, mocks):
    # 100 per hour: GCRA gives back one request every 36 s, so none refills during the test.
    gw, h = keyed_gateway(make_gateway, limits={"requests_per_window": 100, "window_s": 3600})
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: gw.post("/api/chat", chat_body(user_id="erin"), headers=h), range(500)))
    statuses = [r.status for r in responses]
    assert statuses.count(200) == 100, statuses.count(200)
    assert statuses.count(429) == 400, collections.Counter(statuses)
    refused = [r for r in responses if r.status == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    ok = [r for r in responses if r.status == 200]
    assert all(r.headers["x-ratelimit-limit-requests"] == "100" for r in ok)
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(100))
    assert mocks["east"].stats()["requests"] == 100
    rows = gw.query("SELECT status, count(*) AS n FROM audit_log GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"success": 100, "refused": 400}


def test_budget_is_never_overspent_by_racing_workers(make_gateway, mocks):
    gw, h = keyed_gateway(make_gateway, limits={"default_token_budget": 10000, "budget_period": "day"})
    # Every answer uses 400 tokens; each request reserves its prompt estimate plus max_tokens.
    mocks["east"].set(prompt_tokens=100, completion_tokens=300, latency_s=0.05)
    body = chat_body("word " * 80, user_id="erin", max_tokens=300)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: gw.post("/api/chat", body, headers=h), range(60)))
    statuses = [r.status for r in responses]
    used = gw.query("SELECT coalesce(sum(total_tokens), 0) AS t FROM audit_log WHERE status = 'success'")[0]["t"]
    assert used <= 10000
    assert statuses.count(200) >= 10000 // 700  # the budget is not refused early either
    assert statuses.count(403) == 60 - statuses.count(200)
    refused = [r.json()["error"] for r in responses if r.status == 403]
    assert all(e["code"] == "budget_exceeded" for e in refused)
    assert "resets at" in refused[0]["message"]
    budget = gw.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'erin'")[0]
    assert budget == {"used": used, "reserved": 0}
    assert len(gw.audit_rows()) == 60
    assert gw.query("SELECT count(*) AS n FROM audit_log WHERE status = 'refused' "
                    "AND error_code = 'budget_exceeded'")[0]["n"] == statuses.count(403)


def test_per_user_limits_override_the_defaults(make_gateway, mocks):
    gw, h = keyed_gateway(make_gateway, workers=2)
    gw.cli("user", "set", "erin", "--requests", "3", "--window", "3600")
    statuses = [gw.post("/api/chat", chat_body(user_id="erin"), headers=h).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    gw.cli("user", "set", "erin", "--requests", "default", "--budget", "0")
    r = gw.post("/api/chat", chat_body(user_id="erin"), headers=h)
    assert r.status == 403 and r.json()["error"]["code"] == "budget_exceeded"


def test_tokens_per_minute_limit(make_gateway, mocks):
    gw, h = keyed_gateway(make_gateway, workers=2, limits={"tokens_per_minute": 1000})
    body = chat_body(user_id="erin", max_tokens=400)
    # Admission charges the estimate; settlement keeps only what the backend used.
    mocks["east"].set(prompt_tokens=5, completion_tokens=5)
    assert [gw.post("/api/chat", body, headers=h).status for _ in range(4)] == [200] * 4
    mocks["east"].set(prompt_tokens=100, completion_tokens=300)
    statuses = [gw.post("/api/chat", body, headers=h).status for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    r = gw.post("/api/chat", body, headers=h)
    assert r.json()["error"]["code"] == "tokens_rate_limit_exceeded"
    assert r.headers["x-ratelimit-limit-tokens"] == "1000"


def test_spend_of_calls_whose_workers_died_is_never_uncounted(make_gateway, mocks):
    """Workers killed while their backends answer: the backends bill every
    call, and the budget charges at least what they billed."""
    gw, h = keyed_gateway(make_gateway, workers=2, retry={"deadline_s": 60})
    mocks["east"].set(latency_s=1.0, prompt_tokens=40, completion_tokens=60)
    n = 6
    threads = [threading.Thread(target=lambda: gw.post("/api/chat", chat_body(user_id="erin",
                                                                                max_tokens=200),
                                                        headers=h, timeout=20), daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    wait_in_flight(mocks["east"], n)
    for pid in gw.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(1.5)  # the backend finishes (and bills) every call
    gw.cli("audit", "sweep", "--older-than", "0s")
    billed = n * (40 + 60)
    used = gw.query("SELECT used, reserved FROM budget_usage")[0]
    assert used["reserved"] == 0 and used["used"] >= billed, (used, billed)
    assert [r["status"] for r in gw.audit_rows()] == ["abandoned"] * n


def test_a_settlement_after_the_sweep_abandoned_its_row_changes_nothing(make_gateway, mocks):
    """The sweep may mark a slow request abandoned (and charge its
    reservation) while its backend is still answering. Its settlement then
    finds the row no longer pending: it must fail alone, leave the row and
    the budget as the sweep left them (no second charge), and not take the
    settlements batched with it down too."""
    gw, h = keyed_gateway(make_gateway, workers=2, limits={"default_token_budget": 100000,
                                                            "budget_period": "day"})
    gw.cli("user", "add", "frank")
    hf = {"api-key": gw.cli("key", "create", "frank").stdout.strip()}
    mocks["east"].set(latency_s=1.5, prompt_tokens=40, completion_tokens=60)
    n = 4
    answers = []
    def send(headers, user):
        answers.append((user, gw.post("/api/chat", chat_body(user_id=user, max_tokens=200),
                                      headers=headers, timeout=40)))
    slow = [threading.Thread(target=send, args=(h, "erin"), daemon=True) for _ in range(n)]
    for t in slow:
        t.start()
    wait_in_flight(mocks["east"], n)
    out = gw.cli("audit", "sweep", "--older-than", "0s").stdout
    assert "marked %d request(s) abandoned" % n in out, out
    swept = gw.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'erin'")[0]
    assert swept["reserved"] == 0 and swept["used"] > 0, swept
    # Others' requests settle beside the abandoned ones meanwhile.
    others = [threading.Thread(target=send, args=(hf, "frank"), daemon=True) for _ in range(n)]
    for t in others:
        t.start()
    for t in slow + others:
        t.join(40)
    assert len(answers) == 2 * n and all(r.status == 200 for _, r in answers), answers
    rows = gw.audit_rows()
    assert sorted(r["status"] for r in rows if r["user_id"] == "erin") == ["abandoned"] * n
    assert sorted(r["status"] for r in rows if r["user_id"] == "frank") == ["success"] * n
    assert gw.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'erin'")[0] == swept
    assert gw.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'frank'")[0] == \
        {"used": n * 100, "reserved": 0}
    log = gw.error_log()
    assert log.count("cannot settle") == n, log
    # Failed alone: not as a batch that could not read its admission state.
    assert "admission state" not in log and "batch of" not in log, log


def test_killed_worker_leaves_abandoned_row_and_charges_reservation(make_gateway, mocks):
    gw, h = keyed_gateway(make_gateway, workers=2, retry={"deadline_s": 60})
    mocks["east"].set(mode="hang", hang_s=30)
    t = threading.Thread(target=lambda: gw.post("/api/chat", chat_body(user_id="erin"), headers=h, timeout=20),
                         daemon=True)
    t.start()
    deadline = time.time() + 10
    while time.time() < deadline and mocks["east"].stats()["in_flight"] == 0:
        time.sleep(0.05)
    assert gw.query("SELECT status FROM audit_log") == [{"status": "pending"}]
    assert gw.query("SELECT reserved FROM budget_usage")[0]["reserved"] > 0
    for pid in gw.worker_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    out = gw.cli("audit", "sweep", "--older-than", "0s").stdout
    assert "marked 1 request(s) abandoned" in out
    row = gw.audit_rows()[0]
    assert row["status"] == "abandoned"
    # The backend may have answered and billed: the reservation is charged.
    reserved = row["reserved_tokens"]
    assert reserved > 0 and row["total_tokens"] == reserved and "charged" in row["error"]
    assert gw.query("SELECT used, reserved FROM budget_usage")[0] == {"used": reserved, "reserved": 0}
    assert gw.query("SELECT failed, total_tokens FROM usage_daily")[0] == {"failed": 1, "total_tokens": reserved}
    mocks["east"].reset()
    # The web server brings workers back and traffic continues.
    deadline = time.time() + 10
    status = None
    while time.time() < deadline:
        try:
            status = gw.post("/api/chat", chat_body(user_id="erin"), headers=h, timeout=5).status
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert status == 200
