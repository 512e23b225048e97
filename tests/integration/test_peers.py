"""The failure modes other gateways' users report (shared/PEERS.md), reproduced against aigw.

Each test names the peer's issue it reproduces; aigw must not have the failure.
Several more live beside the feature they belong to: exact limits with many
workers (test_limits), budgets never overspent (test_limits), breakers shared
by workers (test_failover), broken streams ending in an error event
(test_stream), streamed usage counted (test_stream, test_clients).
"""
import concurrent.futures
import threading
import time

from conftest import backend_config, chat_body

AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def test_parallel_first_requests_of_a_new_user_cannot_pass_a_tiny_budget(make_gateway, mocks):
    """LiteLLM #40095: eight parallel first requests of a new user all pass a near-zero budget."""
    gw = make_gateway(workers=8, limits={"default_token_budget": 1200})
    mocks["east"].set(prompt_tokens=10, completion_tokens=290, latency_s=0.2)
    body = chat_body("hello", user_id="newcomer", max_tokens=290)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: gw.post("/api/chat", body).status, range(8)))
    # each reservation is the prompt estimate (≥ 10) plus 290: at most 4 fit in 1200
    assert 1 <= statuses.count(200) <= 4, statuses
    assert statuses.count(403) == 8 - statuses.count(200)
    used = gw.query("SELECT used, reserved FROM budget_usage WHERE user_id = 'newcomer'")[0]
    assert used["used"] <= 1200 and used["reserved"] == 0


def test_stream_usage_on_a_chunk_that_still_has_choices_is_counted(gateway, mocks):
    """LiteLLM #36168: usage dropped when the final chunk has a non-empty choices."""
    import test_stream
    mocks["east"].set(usage_on_finish_chunk=True, prompt_tokens=12, completion_tokens=8)
    _, events = test_stream.stream_events(gateway, AZ, {"messages": [{"role": "user", "content": "hi"}],
                                                        "stream": True})
    datas = test_stream.data_of(events)
    assert datas[-1] == "[DONE]"
    assert not any(isinstance(d, dict) and "usage" in d for d in datas)  # not asked for: stripped
    assert test_stream.text_of(datas[:-1]) == "Hello from east"
    row = gateway.audit_rows()[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (12, 8, 20)


def test_answer_with_a_null_id_is_still_audited_and_charged(gateway, mocks):
    """LiteLLM #39749: spend logs dropped when the provider returns id: null."""
    mocks["east"].set(null_id=True, prompt_tokens=5, completion_tokens=6)
    for path, body in (("/api/chat", chat_body()), (AZ, {"messages": [{"role": "user", "content": "x"}]})):
        assert gateway.post(path, body).status == 200
    rows = gateway.audit_rows()
    assert [r["total_tokens"] for r in rows] == [11, 11]
    assert gateway.query("SELECT sum(used) AS used FROM budget_usage")[0]["used"] == 22


def test_the_last_failed_retry_is_in_the_audit_row(make_gateway, mocks):
    """Kong #6820: the last failed retry is missing from the logs."""
    gw = make_gateway(backends=[backend_config(mocks["east"], 1), backend_config(mocks["west"], 2)],
                      retry={"max_attempts": 4, "base_delay_ms": 10, "max_delay_ms": 20})
    for m in ("east", "west"):
        mocks[m].set(mode="500")
    assert gw.post("/api/chat", chat_body()).status == 502
    import json
    row = gw.audit_rows()[0]
    detail = json.loads(row["attempts_detail"])
    assert row["attempts"] == len(detail) == 4
    assert [a["backend"] for a in detail] == ["east", "west", "east", "west"]
    assert all(a["status"] == 500 and a["error"] for a in detail)


def test_a_locked_database_delays_settlement_but_loses_nothing(make_gateway, mocks):
    """LiteLLM #35531: spend dropped when the database commit fails."""
    gw = make_gateway(workers=2)
    mocks["east"].set(latency_s=0.5, prompt_tokens=3, completion_tokens=4)
    result = []
    t = threading.Thread(target=lambda: result.append(gw.post("/api/chat", chat_body())))
    t.start()
    time.sleep(0.2)  # admitted, waiting for the backend
    with gw.writer_lock_held():
        time.sleep(1.5)  # the worker tries to settle meanwhile and waits
    t.join(15)
    assert result and result[0].status == 200
    row = gw.audit_rows()[0]
    assert row["status"] == "success" and row["total_tokens"] == 7
    assert gw.query("SELECT used, reserved FROM budget_usage")[0] == {"used": 7, "reserved": 0}


def test_a_database_that_stays_locked_refuses_instead_of_serving_unrecorded(make_gateway, mocks):
    """No audit row, no answer: admission fails closed when the database cannot be written."""
    gw = make_gateway(workers=1, database={"busy_timeout_ms": 300, "statement_timeout_ms": 300})
    with gw.writer_lock_held():
        r = gw.post("/api/chat", chat_body())
    assert r.status == 503 and r.json()["error"]["code"] == "store_unavailable", r
    assert int(r.headers["retry-after"]) >= 1
    assert mocks["east"].stats()["requests"] == 0
    assert gw.post("/api/chat", chat_body()).status == 200
