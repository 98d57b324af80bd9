-- bench/wrk/random_series.lua: GET random existing series, deterministic.
--   WRK_KEYS=/path/keys.txt  one URL path per line (e.g. /v1/series/cpu.usage%7Bhost%3D...%7D)
--   WRK_SEED=1               seed; thread i uses WRK_SEED + i
-- Counts non-2xx responses, and those that say `Telemetryd-Partial: true` (a partitioned
-- node's answer without some partitions), and prints one machine-readable RESULT line at
-- the end (latencies in microseconds; socket_errors last, as bench/soak.sh expects).
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("WRK_KEYS") or "keys.txt"
  keys = {}
  for line in io.lines(path) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  if #keys == 0 then error("no keys in " .. path) end
  math.randomseed((tonumber(os.getenv("WRK_SEED")) or 1) + id)
  non2xx = 0
  partial = 0
end

function request()
  return wrk.format("GET", keys[math.random(#keys)])
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if (headers["Telemetryd-Partial"] or headers["telemetryd-partial"]) == "true" then partial = partial + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  local partial_total = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
    partial_total = partial_total + (t:get("partial") or 0)
  end
  local e = summary.errors
  local sock_err = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d partial=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    partial_total, bad, sock_err))
end
