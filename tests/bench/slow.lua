-- wrk script for the slow lane of tests/bench: POSTs one streamed chat request
-- ("stream": true, from WRK_BODY) on every connection, and counts the streams
-- that arrived whole: a 2xx answer whose body ends the stream with
-- "data: [DONE]". wrk itself counts every answer as a request, fast error
-- answers included, so its request count is no stream count.
-- WRK_BODY: the JSON body; WRK_HEADERS: header lines "Name: value" separated by "\n".
-- done() prints one line "BENCH_JSON {...}" with the totals, the stream counts
-- and the percentiles (µs; over every answer, errors included).
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

-- Each wrk thread has its own Lua state; done() (in the main state) adds up
-- the threads' counters through thread:get().
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  streams_ok = 0      -- 2xx with "data: [DONE]"
  streams_cut = 0     -- 2xx without it: the stream broke off
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    if string.find(body, "data: [DONE]", 1, true) then
      streams_ok = streams_ok + 1
    else
      streams_cut = streams_cut + 1
    end
  end
end

function done(summary, latency, requests)
  local ok, cut = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("streams_ok")
    cut = cut + t:get("streams_cut")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"streams_ok":%d,"streams_cut":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes, ok, cut,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
