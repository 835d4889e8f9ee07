-- swarmgate's balancer (LuaBalancer): one `upstream` for every round-robin pool. The location names
-- its pool ($swarmgate_pool); the `map` of pools gives that pool's peers ($swarmgate_peers, a list of
-- "address:port"). Each worker takes the peers in turn and, when one fails, tries the next, as many
-- times as the pool has peers (nginx's proxy_next_upstream says which failures count). The cost of
-- a request does not depend on how many pools there are: two hashed map lookups and a table read.
local balancer = require("ngx.balancer")

local parsed = {} -- peer list text -> { {address, port}, ... }; the texts come from this config only
local turn = {} -- pool -> the index of the last peer this worker gave a new request

local function peers_of(text)
    local peers = parsed[text]
    if peers == nil then
        peers = {}
        for address, port in text:gmatch("(%S+):(%d+)") do
            peers[#peers + 1] = { address, tonumber(port) }
        end
        parsed[text] = peers
    end
    return peers
end

local function balance()
    local peers = peers_of(ngx.var.swarmgate_peers)
    local n = #peers
    if n == 0 then
        ngx.log(ngx.ERR, "swarmgate: no peers for pool ", ngx.var.swarmgate_pool)
        return ngx.exit(ngx.ERROR)
    end
    local i
    if balancer.get_last_failure() == nil then
        local pool = ngx.var.swarmgate_pool
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
    local ok, err = balancer.set_current_peer(peers[i][1], peers[i][2])
    if not ok then
        ngx.log(ngx.ERR, "swarmgate: cannot use peer ", peers[i][1], ":", peers[i][2], ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

package.loaded.swarmgate_balancer = { balance = balance }
