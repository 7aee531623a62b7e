-- wrk script: each request carries the next key from a file (round robin) in the `apikey`
-- header, and `done` prints one machine-readable RESULT line.
-- usage: wrk ... -s keys.lua URL -- KEYS_FILE [START_OFFSET] [close|keep-alive]
-- `close` asks for a new connection per request (`Connection: close`): a TLS handshake each.
-- Every request is formatted once, in `init`: formatting one per request (`wrk.format` in
-- `request`) cost the pinned wrk core so much that it, not the server, capped the reject runs.
local requests = {}
local i = 0

function init(args)
  local close = args[3] == "close"
  for line in io.lines(args[1]) do
    local headers = { apikey = line }
    if close then headers["Connection"] = "close" end
    requests[#requests + 1] = wrk.format("GET", nil, headers, nil)
  end
  i = tonumber(args[2] or "0")
end

function request()
  i = i + 1
  return requests[(i % #requests) + 1]
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
