#!/usr/bin/env python3
"""Soak: a bounded run of mixed traffic through nginx + `aigw serve` while workers are killed.

Usage: /usr/bin/python3 tests/soak.py [--seconds 60] [--clients 12] [--workers 4] [--kill-every 3]

Sends chat, streamed and invalid requests from several clients for a fixed
time, SIGKILLs a random worker every few seconds, then checks that nothing
was lost: every answered request has exactly one audit row, no row is left
pending once the sweep has run, the budget's used tokens equal the audited
tokens, nothing is reserved, and workers' memory did not grow. Prints one
summary and exits non-zero on any violation. Everything runs on 127.0.0.1.
"""
import argparse
import collections
import http.client
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))
import conftest  # noqa: E402

AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def pss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def client(gw, key, stop, stats, lock):
    rnd = random.Random()
    conn = None
    while not stop.is_set():
        kind = rnd.choice(["chat", "chat", "chat", "stream", "invalid"])
        if kind == "chat":
            path, body = "/api/chat", conftest.chat_body("soak " * rnd.randint(1, 50), user_id="soak")
        elif kind == "stream":
            path, body = AZ, {"messages": [{"role": "user", "content": "stream please"}], "stream": True}
        else:
            path, body = "/api/chat", conftest.chat_body(user_id="soak", temperature=7)
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", "api-key": key})
            resp = conn.getresponse()
            data = resp.read()
            rid = resp.getheader("x-request-id")
            ok_stream = kind != "stream" or data.rstrip().endswith(b"data: [DONE]")
            with lock:
                stats["status"][resp.status] += 1
                if rid:
                    stats["ids"].append((rid, resp.status, ok_stream))
        except (OSError, http.client.HTTPException):
            with lock:
                stats["transport_errors"] += 1
            conn = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kill-every", type=float, default=3)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="aigw-soak-")
    regions = {n: conftest.MockRegion(n, tmp) for n in ("east", "west")}
    for r in regions.values():
        r.reset()
        r.set(prompt_tokens=20, completion_tokens=10, stream_delay_s=0.01)
    cfg = conftest.base_config(tmp, [conftest.backend_config(regions["east"], 1),
                                     conftest.backend_config(regions["west"], 2)],
                               auth={"enabled": True}, retry={"deadline_s": 10})
    gw = conftest.Gateway(tmp, cfg, server="nginx", workers=args.workers)
    failures = []
    try:
        gw.start()
        gw.cli("user", "add", "soak", "--budget", "1000000000")
        key = gw.cli("key", "create", "soak").stdout.strip()
        workers = gw.serve_workers()
        survivor = workers[-1]
        mem_before = pss_kb(survivor)
        stats = {"status": collections.Counter(), "ids": [], "transport_errors": 0}
        lock = threading.Lock()
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(gw, key, stop, stats, lock)) for _ in range(args.clients)]
        for t in threads:
            t.start()
        kills = 0
        t_end = time.time() + args.seconds
        while time.time() < t_end:
            time.sleep(min(args.kill_every, max(0, t_end - time.time())))
            victims = [p for p in gw.serve_workers() if p != survivor]
            if victims and time.time() < t_end:
                os.kill(random.choice(victims), signal.SIGKILL)
                kills += 1
        stop.set()
        for t in threads:
            t.join(30)
        time.sleep(0.5)
        mem_after = pss_kb(survivor)
        gw.cli("audit", "sweep", "--older-than", "0s")

        rows = {r["request_id"]: r for r in gw.audit_rows()}
        answered = [(rid, st, ok) for rid, st, ok in stats["ids"] if st != 401]
        missing = [rid for rid, _, _ in answered if rid not in rows]
        if missing:
            failures.append(f"{len(missing)} answered request(s) have no audit row, e.g. {missing[:3]}")
        pending = [r for r in rows.values() if r["status"] == "pending"]
        if pending:
            failures.append(f"{len(pending)} audit row(s) still pending after the sweep")
        broken = [rid for rid, st, ok in answered if st == 200 and not ok and rows.get(rid, {}).get("status") == "success"]
        if broken:
            failures.append(f"{len(broken)} stream(s) ended without [DONE] but were audited as success")
        budget = gw.query("SELECT coalesce(sum(used), 0) AS used, coalesce(sum(reserved), 0) AS reserved "
                          "FROM budget_usage WHERE user_id = 'soak'")[0]
        audited = gw.query("SELECT coalesce(sum(total_tokens), 0) AS t FROM audit_log "
                           "WHERE status IN ('success', 'error')")[0]["t"]
        if budget["used"] != audited:
            failures.append(f"budget used {budget['used']} != audited tokens {audited}")
        if budget["reserved"] != 0:
            failures.append(f"{budget['reserved']} tokens still reserved")
        by_status = collections.Counter(r["status"] for r in rows.values())
        grew = None if mem_before is None or mem_after is None else mem_after - mem_before
        if grew is not None and grew > 2048:
            failures.append(f"a worker's memory grew by {grew} KiB")
        total = sum(stats["status"].values())
        cut = sum(1 for rid, st, ok in answered if st == 200 and not ok)
        print(f"soak: {args.seconds:.0f}s, {args.clients} clients, {args.workers} workers, {kills} workers killed")
        print(f"soak: {total} answers {dict(stats['status'])}, {cut} streams cut short by kills, "
              f"{stats['transport_errors']} connections lost")
        print(f"soak: {len(rows)} audit rows {dict(by_status)}; budget used {budget['used']} = audited "
              f"{audited}, reserved {budget['reserved']}")
        print(f"soak: surviving worker Pss {mem_before} KiB before, {mem_after} KiB after")
    finally:
        gw.stop()
        for r in regions.values():
            r.stop()
    if failures:
        print("soak: FAILED\n  " + "\n  ".join(failures))
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
