-- wrk script: each request carries the next key from a file (round robin) in the `apikey`
-- header, and `done` prints one machine-readable RESULT line.
-- usage: wrk ... -s keys.lua URL -- KEYS_FILE [START_OFFSET]
local keys = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    keys[#keys + 1] = line
  end
  i = tonumber(args[2] or "0")
end

function request()
  i = i + 1
  return wrk.format("GET", nil, { apikey = keys[(i % #keys) + 1] }, nil)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.4f,"p99_ms":%.4f,"p999_ms":%.4f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
