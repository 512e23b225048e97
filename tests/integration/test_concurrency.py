"""Exact limits and budgets under many truly concurrent clients, and nothing lost when workers die.

aigw behind nginx + `aigw serve`: every client is a Python thread with its own
http.client connection; the clients connect first, wait at a barrier, and
then all send at once. These tests hold whatever the workers do inside
(one request at a time, or a pool of threads with group-committed
admissions and settlements): the rate limit admits exactly its number, a
budget is never overspent, and when workers are SIGKILLed every answer a
client saw has its audit row, nothing stays pending after the sweep and the
budget's used tokens equal the audited ones.
"""
import collections
import http.client
import json
import os
import random
import re
import resource
import subprocess
import sys
import threading
import time

import pytest

from conftest import chat_body

AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"

# --- test 1 and 2: one burst of clients ---------------------------------------
BURST_CLIENTS = 1024
RATE_LIMIT = 100                 # requests per RATE_WINDOW_S: none refills during the test
RATE_WINDOW_S = 3600
BUDGET_REQUESTS = 30             # the budget holds exactly this many requests
BUDGET_MAX_TOKENS = 100
BACKEND_LATENCY_S = 0.2          # the mock answers slowly so that admissions overlap
BURST_WORKERS = 4

# --- test 3: soak with worker kills ------------------------------------------
SOAK_CLIENTS = 256
SOAK_SECONDS = 20.0
SOAK_WORKERS = 4
KILL_EVERY_S = 2.0
SOAK_PROMPT_TOKENS = 20
SOAK_COMPLETION_TOKENS = 10

# Every wait in this file is bounded by one of these.
CONNECT_TIMEOUT_S = 20.0         # all clients connected and at the barrier
REQUEST_TIMEOUT_S = 40.0         # one client's socket timeout (send + answer)
BURST_DEADLINE_S = 45.0          # the whole burst, from the barrier to the last answer
SOAK_REQUEST_TIMEOUT_S = 10.0
CLIENT_STACK_BYTES = 512 * 1024  # 1,024 threads with the default 8 MiB stacks is 8 GiB of address space


@pytest.fixture(autouse=True, scope="module")
def enough_file_descriptors():
    """1,024 client sockets here, and as many in nginx (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def nginx_client_capacity(gw):
    """How many concurrent clients the generated nginx.conf can hold.

    Each proxied request holds two of an nginx worker's worker_connections
    (the client's and the one to `aigw serve`), and each worker spends one on
    its listening socket. nginx does not balance connections between its
    workers (accept_mutex is off by default, EPOLLEXCLUSIVE wakes whichever
    worker it likes), so only what one worker can hold by itself is safe."""
    conf = open(os.path.join(gw.tmpdir, "nginx.conf")).read()
    m = re.search(r"worker_connections\s+(\d+)\s*;", conf)
    assert m, "no worker_connections in the generated nginx.conf"
    return (int(m.group(1)) - 1) // 2


def burst_clients(gw):
    """The burst size, once the generated nginx.conf is known to hold it: the
    test is about aigw, so nginx must never be what refuses a client."""
    assert nginx_client_capacity(gw) >= BURST_CLIENTS, "nginx.conf cannot hold the burst"
    return BURST_CLIENTS


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Answer {self.status} {self.body[:200]!r}>"


def race(gw, n, path, body, headers):
    """n clients, each on its own connection, connected first and released
    together by a barrier, send one request each. Returns (answers, seconds
    from the release to the last answer); an answer is an Answer or the
    exception that client got."""
    payload = json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **headers}
    answers = [None] * n
    barrier = threading.Barrier(n + 1)

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=REQUEST_TIMEOUT_S)
        try:
            try:
                conn.connect()
            except OSError as e:
                answers[i] = e
            try:
                barrier.wait(CONNECT_TIMEOUT_S)
            except threading.BrokenBarrierError as e:
                answers[i] = answers[i] or e
                return
            if answers[i] is not None:
                return
            conn.request("POST", path, payload, hdrs)
            resp = conn.getresponse()
            answers[i] = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        except (OSError, http.client.HTTPException) as e:
            answers[i] = e
        finally:
            conn.close()

    old_stack = threading.stack_size(CLIENT_STACK_BYTES)
    try:
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
    finally:
        threading.stack_size(old_stack)
    barrier.wait(CONNECT_TIMEOUT_S)
    t0 = time.monotonic()
    deadline = t0 + BURST_DEADLINE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    stuck = sum(t.is_alive() for t in threads)
    assert stuck == 0, f"{stuck} of {n} clients still waiting after {BURST_DEADLINE_S:.0f} s"
    return answers, elapsed


def statuses_of(answers):
    return collections.Counter(a.status if isinstance(a, Answer) else type(a).__name__ for a in answers)


def assert_openai_error(answer, status, code):
    assert answer.status == status, answer
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    err = answer.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err


def keyed_user(gw, user, *options):
    gw.cli("user", "add", user, *options)
    return {"api-key": gw.cli("key", "create", user).stdout.strip()}


def test_thousand_clients_against_a_limit_of_100_admit_exactly_100(make_gateway, mocks):
    gw = make_gateway(server="nginx", workers=BURST_WORKERS, auth={"enabled": True},
                      limits={"requests_per_window": RATE_LIMIT, "window_s": RATE_WINDOW_S})
    h = keyed_user(gw, "erin")
    mocks["east"].set(latency_s=BACKEND_LATENCY_S, prompt_tokens=5, completion_tokens=5)
    n = burst_clients(gw)
    answers, elapsed = race(gw, n, "/api/chat", chat_body(user_id="erin"), h)
    print(f"\n{n} clients against a limit of {RATE_LIMIT}: {elapsed:.1f} s, {dict(statuses_of(answers))}")

    statuses = statuses_of(answers)
    assert statuses == {200: RATE_LIMIT, 429: n - RATE_LIMIT}, statuses
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert all(a.json()["content"] == "Hello from east" for a in ok)
    assert sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok) == list(range(RATE_LIMIT))
    for a in refused:
        assert_openai_error(a, 429, "rate_limit_exceeded")
        assert a.json()["error"]["type"] == "rate_limit_error"
        assert int(a.headers["retry-after"]) >= 1
    assert mocks["east"].stats()["requests"] == RATE_LIMIT

    rows = gw.audit_rows()
    assert len(rows) == n
    assert collections.Counter(r["status"] for r in rows) == {"success": RATE_LIMIT, "refused": n - RATE_LIMIT}
    assert all(r["error_code"] == "rate_limit_exceeded" and r["http_status"] == 429
               for r in rows if r["status"] == "refused")
    # Each answer is the one its row records.
    by_id = {r["request_id"]: r for r in rows}
    assert len(by_id) == n
    answered = {a.headers["x-request-id"]: a.status for a in answers}
    assert len(answered) == n
    assert {rid: by_id.get(rid, {}).get("http_status") for rid in answered} == answered


def test_budget_raced_by_a_thousand_clients_is_never_overspent(make_gateway, mocks):
    gw = make_gateway(server="nginx", workers=BURST_WORKERS, auth={"enabled": True},
                      limits={"budget_period": "total"})
    body = chat_body("Hello", user_id="erin", max_tokens=BUDGET_MAX_TOKENS)
    h = keyed_user(gw, "erin")
    # The reservation (prompt estimate + max_tokens) as the gateway computes it,
    # read from the audit row of one calibration request with the same body.
    mocks["east"].set(prompt_tokens=3, completion_tokens=4)
    r = gw.post("/api/chat", body, headers=h)
    assert r.status == 200, r
    calibration = gw.audit_rows()
    assert len(calibration) == 1 and calibration[0]["total_tokens"] == 7, calibration
    estimate = calibration[0]["reserved_tokens"]
    assert estimate > BUDGET_MAX_TOKENS, estimate
    # Every answer now uses exactly its reservation, so the budget holds exactly
    # BUDGET_REQUESTS more requests whatever the order of admissions and settlements.
    budget = 7 + BUDGET_REQUESTS * estimate + estimate // 2
    gw.cli("user", "set", "erin", "--budget", str(budget))
    mocks["east"].set(latency_s=BACKEND_LATENCY_S, prompt_tokens=estimate - BUDGET_MAX_TOKENS,
                      completion_tokens=BUDGET_MAX_TOKENS)
    n = burst_clients(gw)
    answers, elapsed = race(gw, n, "/api/chat", body, h)
    print(f"\n{n} clients against a budget of {budget} tokens ({estimate} per request): "
          f"{elapsed:.1f} s, {dict(statuses_of(answers))}")

    statuses = statuses_of(answers)
    assert statuses == {200: BUDGET_REQUESTS, 403: n - BUDGET_REQUESTS}, statuses
    for a in answers:
        if a.status == 403:
            assert_openai_error(a, 403, "budget_exceeded")
            assert a.json()["error"]["type"] == "insufficient_quota"
    all_rows = gw.query("SELECT * FROM audit_log WHERE user_id = 'erin'")
    rows = [r for r in all_rows if r["request_id"] != calibration[0]["request_id"]]
    assert len(all_rows) == n + 1 and len(rows) == n
    assert collections.Counter(r["status"] for r in rows) == {"success": BUDGET_REQUESTS,
                                                              "refused": n - BUDGET_REQUESTS}
    assert all(r["error_code"] == "budget_exceeded" for r in rows if r["status"] == "refused")
    assert all(r["total_tokens"] == estimate for r in rows if r["status"] == "success")
    usage = gw.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'erin'")
    assert len(usage) == 1, usage
    used, reserved = usage[0]["used"], usage[0]["reserved"]
    assert used <= budget
    assert reserved == 0
    assert used == sum(r["total_tokens"] for r in all_rows) == 7 + BUDGET_REQUESTS * estimate
    assert {a.headers["x-request-id"] for a in answers} == {r["request_id"] for r in rows}


# SIGKILLs a random child of `aigw serve` (argv[1]) every argv[2] seconds until
# the time argv[3]; prints each victim's pid.
KILLER = r"""
import os, random, signal, subprocess, sys, time
master, every, until = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
rnd = random.Random(4)
def children():
    try:
        return [int(p) for p in open(f"/proc/{master}/task/{master}/children").read().split()]
    except OSError:
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
while True:
    time.sleep(every)
    if time.time() >= until:
        break
    kids = children()
    if kids:
        victim = rnd.choice(kids)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        print(victim, flush=True)
"""


def soak_client(gw, key, t_end, rnd, out, lock):
    """Mixed requests until t_end on a keep-alive connection (a new one after
    every error). Records (request id, status, stream?, complete?) for every
    answer whose headers arrived, and counts the requests that got none."""
    conn = None
    while time.time() < t_end:
        stream = rnd.random() < 0.4
        if stream:
            path, body = AZ, {"messages": [{"role": "user", "content": "stream " * rnd.randint(1, 20)}],
                              "stream": True}
        else:
            path, body = "/api/chat", chat_body("soak " * rnd.randint(1, 50), user_id="soak")
        rid = status = None
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=SOAK_REQUEST_TIMEOUT_S)
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", "api-key": key})
            resp = conn.getresponse()
            rid, status = resp.getheader("x-request-id"), resp.status
            data = resp.read()
            complete = data.rstrip().endswith(b"data: [DONE]") if stream else bool(json.loads(data))
        except (OSError, http.client.HTTPException, ValueError):
            complete = False
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            if status is None:
                out["no_answer"] += 1
            else:
                out["answers"].append((rid, status, stream, complete))
    if conn is not None:
        conn.close()


def test_soak_with_worker_kills_at_256_clients_loses_nothing(make_gateway, mocks):
    # The mock region is a Python server: under 256 streams it sometimes lets a
    # stream time out, and five such in a row would open the breaker for the
    # rest of the soak. This test is about kills, not breakers.
    gw = make_gateway(server="nginx", workers=SOAK_WORKERS, auth={"enabled": True},
                      retry={"deadline_s": 10}, limits={"budget_period": "total"},
                      circuit_breaker={"failure_threshold": 1000})
    key = keyed_user(gw, "soak", "--budget", "1000000000")["api-key"]
    mocks["east"].set(prompt_tokens=SOAK_PROMPT_TOKENS, completion_tokens=SOAK_COMPLETION_TOKENS,
                      latency_s=0.02, stream_delay_s=0.01)
    assert nginx_client_capacity(gw) >= SOAK_CLIENTS, "nginx.conf cannot hold the soak's clients"
    n = SOAK_CLIENTS

    out = {"answers": [], "no_answer": 0}
    lock = threading.Lock()
    t_start = time.time()
    t_end = t_start + SOAK_SECONDS
    old_stack = threading.stack_size(CLIENT_STACK_BYTES)
    try:
        clients = [threading.Thread(target=soak_client, args=(gw, key, t_end, random.Random(i), out, lock),
                                    daemon=True) for i in range(n)]
        for t in clients:
            t.start()
    finally:
        threading.stack_size(old_stack)

    # The killer is a process of its own: 256 busy client threads would starve
    # a thread of this one of the GIL, and kills would come late or not at all.
    killer = subprocess.Popen([sys.executable, "-c", KILLER, str(gw.proc.serve.pid), str(KILL_EVERY_S),
                               str(t_end)], stdout=subprocess.PIPE, text=True)
    try:
        kills = killer.communicate(timeout=SOAK_SECONDS + 10)[0].split()
    finally:
        if killer.poll() is None:
            killer.kill()
            killer.wait()
    for t in clients:
        t.join(max(0.0, t_end + SOAK_REQUEST_TIMEOUT_S + 5 - time.time()))
    assert not any(t.is_alive() for t in clients), "clients still running after the soak's deadline"
    elapsed = time.time() - t_start

    # The master replaced the killed workers and the gateway still answers.
    deadline = time.time() + 10
    while time.time() < deadline and len(gw.serve_workers()) < SOAK_WORKERS:
        time.sleep(0.1)
    workers_after = gw.serve_workers()
    after = gw.post("/api/chat", chat_body(user_id="soak"), headers={"api-key": key}, timeout=10)
    out["answers"].append((after.headers.get("x-request-id"), after.status, False, after.status == 200))

    # Stop the gateway (in-flight requests finish or are cut), then release
    # what killed workers left pending, as the periodic sweep would.
    gw.stop()
    sweep = gw.cli("audit", "sweep", "--older-than", "0s").stdout
    rows = {r["request_id"]: r for r in gw.query("SELECT * FROM audit_log WHERE user_id = 'soak'")}
    answers = out["answers"]
    statuses = collections.Counter(st for _, st, _, _ in answers)
    by_status = collections.Counter(r["status"] for r in rows.values())
    ok = [(rid, stream) for rid, st, stream, complete in answers if st == 200 and complete]
    cut = [rid for rid, st, _, complete in answers if st == 200 and not complete]
    print(f"\nsoak: {elapsed:.1f} s, {n} clients, {len(kills)} workers killed; {len(answers)} answers "
          f"{dict(statuses)}, {len(cut)} cut short, {out['no_answer']} without an answer; "
          f"{len(rows)} audit rows {dict(by_status)}; {sweep.strip()}")

    assert len(kills) >= SOAK_SECONDS / KILL_EVERY_S / 2, kills
    assert len(workers_after) >= SOAK_WORKERS, workers_after
    assert after.status == 200, after
    assert len(ok) >= 2 * n, f"only {len(ok)} complete answers in {SOAK_SECONDS:.0f} s"
    # Every answer aigw gave has its row (nginx's own 502/503 when a worker died
    # have no X-Request-Id: no request of aigw's answered them).
    aigw_answers = [(rid, st) for rid, st, _, _ in answers if rid]
    assert all(st in (200, 502, 503) for _, st, _, _ in answers), statuses
    missing = [rid for rid, st in aigw_answers if rid not in rows]
    assert not missing, f"{len(missing)} answered request(s) have no audit row, e.g. {missing[:3]}"
    assert len({rid for rid, _ in aigw_answers}) == len(aigw_answers), "a request id answered twice"
    # A complete answer is a settled success with all its tokens.
    wrong = [(rid, rows[rid]["status"], rows[rid]["total_tokens"]) for rid, _ in ok
             if rows[rid]["status"] != "success"
             or rows[rid]["total_tokens"] != SOAK_PROMPT_TOKENS + SOAK_COMPLETION_TOKENS]
    assert not wrong, f"{len(wrong)} complete answers not settled as success with their tokens, e.g. {wrong[:3]}"
    # A stream cut short is abandoned (its worker was killed before the
    # settlement), an error (the mock region, a Python server under 256
    # streams, timed out mid-stream: the gateway says so), or, when a kill
    # fell between the settlement's commit and the final [DONE] (held until
    # the row is settled, so no answered request goes uncounted), a success
    # with every token the backend reported. Never a success with part of
    # them, never pending.
    bad_cut = [(rid, rows[rid]["status"], rows[rid]["total_tokens"]) for rid in cut if rid
               and not (rows[rid]["status"] == "abandoned"
                        or (rows[rid]["status"] == "error" and rows[rid]["error_code"] == "backend_error")
                        or (rows[rid]["status"] == "success"
                            and rows[rid]["total_tokens"] == SOAK_PROMPT_TOKENS + SOAK_COMPLETION_TOKENS))]
    assert not bad_cut, f"streams cut by a kill recorded as {bad_cut[:3]}"
    assert by_status["pending"] == 0, f"{by_status['pending']} rows still pending after the sweep"
    budget = gw.query("SELECT coalesce(sum(used), 0) AS used, coalesce(sum(reserved), 0) AS reserved "
                      "FROM budget_usage WHERE user_id = 'soak'")[0]
    assert budget["reserved"] == 0
    assert budget["used"] == sum(r["total_tokens"] for r in rows.values())
