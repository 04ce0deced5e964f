-- wrk script: POST the V2 JSON body read from the file named by the BODY_FILE environment variable;
-- AUTHORIZATION, when set, is sent as the Authorization header (the keyed server of `bench --keys`).
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
local authorization = os.getenv("AUTHORIZATION")
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
