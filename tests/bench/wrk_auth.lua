-- wrk script of the reads scenario (scripts/bench): every request carries
-- the bench organization's token, taken from BULKREG_TOKEN.
local token = os.getenv("BULKREG_TOKEN")
if token == nil or token == "" then
   error("BULKREG_TOKEN is not set")
end
wrk.headers["Authorization"] = "Bearer " .. token
