-- One connection per thread (-t N -c N): each thread alternates decide and the outcome of its
-- own last decision on its keep-alive connection.
local pending = nil
local tasks = {"chat", "code", "math"}
local i = 0
request = function()
  if pending then
    local body = '{"decision_id":"' .. pending .. '","quality":1.0,"cost_usd":0.001,"latency_ms":500}'
    pending = nil
    return wrk.format("POST", "/v1/outcome", {["Content-Type"] = "application/json"}, body)
  end
  i = i + 1
  return wrk.format("POST", "/v1/decide", {["Content-Type"] = "application/json"},
                    '{"context":{"task_type":"' .. tasks[(i % 3) + 1] .. '","tenant":"acme"}}')
end
response = function(status, headers, body)
  if status ~= 200 then return end
  local id = body:match('"id":"([^"]+)"')
  if id then pending = id end
end
