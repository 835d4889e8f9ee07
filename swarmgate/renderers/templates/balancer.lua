-- swarmgate's balancer (LuaBalancer): one `upstream` for every round-robin pool. The location names
-- its pool ($swarmgate_pool); the `map` of pools gives that pool's peers ($swarmgate_peers, a list of
-- "address:port"). Each worker takes the peers in turn and, when one fails, tries the next, as many
-- times as the pool has peers (nginx's proxy_next_upstream says which failures count). The cost of
-- a request does not depend on how many pools there are: two hashed map lookups and a table read.
-- A change of peers only (a scale, a roll, a task restarted) needs no reload: the agent writes the
-- new map to PEERS_FILE, stamped with /proc/uptime, and every worker started before that stamp reads
-- it within half a second. A worker started after it (a reload) has those peers in its own map.
-- A pool's list may start with its connect timeout (`failover=1500ms`), applied from two peers on: a
-- peer whose SYNs go unanswered then costs that long before the next one is tried, not the location's
-- proxy_connect_timeout. It lives in the list so that a scale 1 -> 2 stays a change of peers only.
local balancer = require("ngx.balancer")

-- The agent's SWARMGATE_PEERS_FILE, where nginx passes it on (`env`; a test does), else the agent's default.
local PEERS_FILE = os.getenv("SWARMGATE_PEERS_FILE") or "/var/run/swarmgate-peers"
local parsed = {} -- peer list text -> { {address, port}, ... }
local turn = {} -- pool -> the index of the last peer this worker gave a new request
local changed = nil -- pool -> peer list text, from the agent's file; nil: this config's own map
local started, seen = math.huge, nil

local function uptime()
    local f = io.open("/proc/uptime")
    if f == nil then
        return nil
    end
    local now = f:read("*n")
    f:close()
    return now
end

local function peers_of(text)
    local peers = parsed[text]
    if peers == nil then
        peers = {}
        for address, port in text:gmatch("(%S+):(%d+)") do
            peers[#peers + 1] = { address:match("^%[(.*)%]$") or address, tonumber(port) }
        end
        local ms = text:match("^failover=(%d+)ms ")
        peers.failover = ms and tonumber(ms) / 1000
        parsed[text] = peers
    end
    return peers
end

-- The agent's file: its stamp on the first line, then the peers map's lines (`POOL "PEERS";  # tasks`).
local function refresh(premature)
    if premature then
        return
    end
    local f = io.open(PEERS_FILE)
    if f == nil then
        return
    end
    local stamp = f:read("*n")
    if stamp == nil or stamp == seen or stamp < started then
        f:close()
        return
    end
    local pools = {}
    for line in f:lines() do
        local pool, text = line:match('^%s*(%S+) "([^"]*)";')
        if pool ~= nil then
            pools[pool] = text
        end
    end
    f:close()
    seen, changed, parsed = stamp, pools, {}
    ngx.log(ngx.NOTICE, "swarmgate: peers changed without a reload (", PEERS_FILE, " at ", stamp, ")")
end

local function start()
    started = uptime() or 0
    local ok, err = ngx.timer.every(0.5, refresh)
    if not ok then
        ngx.log(ngx.ERR, "swarmgate: no timer for peer changes: ", err)
    end
end

local function balance()
    local pool = ngx.var.swarmgate_pool
    local peers = peers_of(changed and changed[pool] or ngx.var.swarmgate_peers)
    local n = #peers
    if n == 0 then
        ngx.log(ngx.ERR, "swarmgate: no peers for pool ", pool)
        return ngx.exit(ngx.ERROR)
    end
    local i
    if balancer.get_last_failure() == nil then
        i = (turn[pool] or 0) % n + 1
        turn[pool] = i
        if n > 1 then
            balancer.set_more_tries(n - 1)
            ngx.ctx.swarmgate_peer = i
        end
    else
        i = ngx.ctx.swarmgate_peer % n + 1
        ngx.ctx.swarmgate_peer = i
    end
    -- At each try: it then holds whether lua-nginx-module keeps it for the request or for one try.
    if n > 1 and peers.failover then
        local ok, err = balancer.set_timeouts(peers.failover)
        if not ok then
            ngx.log(ngx.ERR, "swarmgate: cannot set the connect timeout of pool ", pool, ": ", err)
        end
    end
    local ok, err = balancer.set_current_peer(peers[i][1], peers[i][2])
    if not ok then
        ngx.log(ngx.ERR, "swarmgate: cannot use peer ", peers[i][1], ":", peers[i][2], ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

package.loaded.swarmgate_balancer = { balance = balance, start = start }
