-- wrk script: account details, spread over the customers that run.sh made.
local books = tonumber(os.getenv("BOOKS") or "10")
local customers = tonumber(os.getenv("CUSTOMERS") or "10")
local key = os.getenv("ADMIN_KEY") or "bench-key"
local counter = 0

wrk.headers["Authorization"] = "Bearer " .. key

request = function()
  counter = counter + 1
  local book = counter % books
  local customer = math.floor(counter / books) % customers
  return wrk.format("GET", string.format("/api/v1/accounts/C%d-%d", book, customer))
end

local failures = 0
response = function(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
    if failures <= 3 then io.stderr:write("unexpected " .. status .. ": " .. body .. "\n") end
  end
end
