-- wrk script: one ledger write per request, spread over the accounts that run.sh made.
-- KIND selects the write: "payment" (a payment to a customer) or "transfer" (a fund move
-- from a partner to one of its customers). BOOKS partners with CUSTOMERS customers each.
-- NUMBERS=dataset names the accounts as `tollbook dataset` does (P001, C001-001: numbered
-- from 1, three digits) instead of as run.sh does (P0, C0-0).
local kind = os.getenv("KIND") or "payment"
local books = tonumber(os.getenv("BOOKS") or "10")
local customers = tonumber(os.getenv("CUSTOMERS") or "10")
local key = os.getenv("ADMIN_KEY") or "bench-key"
local first, digits = 0, "%d"
if os.getenv("NUMBERS") == "dataset" then first, digits = 1, "%03d" end
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

request = function()
  counter = counter + 1
  local book = string.format(digits, counter % books + first)
  local customer = string.format(digits, math.floor(counter / books) % customers + first)
  local body
  if kind == "transfer" then
    body = string.format('{"from":"P%s","to":"C%s-%s","amount":"0.01"}', book, book, customer)
    return wrk.format(nil, "/api/v1/transfers", nil, body)
  end
  body = string.format('{"account":"C%s-%s","amount":"0.01","reference":"bench"}', book, customer)
  return wrk.format(nil, "/api/v1/payments", nil, body)
end

-- Any answer but 201 is counted, so that a run full of refusals cannot pass for a fast one.
local failures = 0
response = function(status, headers, body)
  if status ~= 201 then
    failures = failures + 1
    if failures <= 3 then io.stderr:write("unexpected " .. status .. ": " .. body .. "\n") end
  end
end
