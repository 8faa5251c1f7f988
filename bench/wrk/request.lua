-- wrk script for bench/serve.py and bench/peers.py: POST the body in file $WRK_BODY (GET when
-- unset) as $WRK_CONTENT_TYPE (default application/json),
-- then print one line "RESULT {json}" with counts, errors and latency percentiles (us).
local body_file = os.getenv("WRK_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  local content_type = os.getenv("WRK_CONTENT_TYPE")
  if not content_type or content_type == "" then content_type = "application/json" end
  wrk.headers["Content-Type"] = content_type
  f:close()
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
