-- wrk script: POST /v1/devices/<device>/messages with an API key, spreading requests over DEVICES
-- devices. Usage: DROVER_KEY=drk_... wrk -t2 -c32 -d20s -s loadtest/wrk/submit.lua http://127.0.0.1:8080
local key = os.getenv("DROVER_KEY") or ""
local devices = tonumber(os.getenv("DEVICES") or "1000")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"believerGuarantee":"RECEIPT_CONFIRMATION","command":"digitalWrite","data":{"pinNumber":13,"pinValue":true}}'

request = function()
  n = n + 1
  return wrk.format(nil, "/v1/devices/bench-" .. (n % devices) .. "/messages")
end

done = function(summary, latency, requests)
  io.write(string.format("requests %d, errors connect %d read %d write %d status %d timeout %d\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%g %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
