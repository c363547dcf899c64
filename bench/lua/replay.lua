-- wrk script for `make bench` (bench/run-bench.sh).
--
-- BENCH_REQUESTS=FILE.lua (written by bench/presign.py): a Lua table of pre-signed
-- requests {method, path, headers, body}; each wrk thread formats them once in init()
-- and rotates through them, so the generator does the same work against the proxy and
-- against nginx. Without BENCH_REQUESTS wrk sends its own request (the URL, -H headers),
-- e.g. GET /ping with "Connection: close" for new-connections-per-second.
--
-- done() prints one line "BENCH_JSON {...}" with the rate, the error counts and the
-- latency percentiles (microseconds) that run-bench.sh collects.

local file = os.getenv("BENCH_REQUESTS")

if file ~= nil and file ~= "" then
  local formatted = {}
  local n, i = 0, 0

  function init(args)
    for _, r in ipairs(dofile(file)) do
      n = n + 1
      formatted[n] = wrk.format(r.method, r.path, r.headers, r.body)
    end
    if n == 0 then error("replay.lua: no requests in " .. file) end
    i = math.random(n) - 1
  end

  function request()
    i = i % n + 1
    return formatted[i]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
