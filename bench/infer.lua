-- wrk script: POST the V2 JSON body read from the file named by the BODY_FILE environment variable.
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
