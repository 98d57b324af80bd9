-- bench/wrk/constant_rate.lua: random_series.lua at a target request rate.
-- wrk has no rate option and h2load's --rate paces connection setup, not requests, so
-- each connection waits an exponentially distributed think time (mean
-- connections / WRK_RATE seconds) before each request: an open-loop-like Poisson load
-- of WRK_RATE requests/s as long as the server answers well within the mean think time.
-- Latency is wrk's (send to response), not including the think time.
--   WRK_RATE=60000 WRK_CONNS=256 (must equal wrk -c)
dofile((os.getenv("WRK_LUA_DIR") or "bench/wrk") .. "/random_series.lua")
local mean_ms = 1000 * (tonumber(os.getenv("WRK_CONNS")) or 64) / (tonumber(os.getenv("WRK_RATE")) or 10000)
function delay()
  return math.floor(-mean_ms * math.log(1 - math.random()) + 0.5)
end
