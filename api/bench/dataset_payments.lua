-- wrk script: payments of 0.01 to the customers of the standard data set (`tollbook
-- dataset`, 100 partners x 100 customers: numbers C001-001 to C100-100), in turn.
local key = os.getenv("ADMIN_KEY") or "bench-key"
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

request = function()
  counter = counter + 1
  local partner = counter % 100 + 1
  local customer = math.floor(counter / 100) % 100 + 1
  local body = string.format('{"account":"C%03d-%03d","amount":"0.01","reference":"bench"}', partner, customer)
  return wrk.format(nil, "/api/v1/payments", nil, body)
end
