-- wrk script for `benches/inbound.rs`: Standard Webhooks `/whoami` callbacks, each with a
-- unique `webhook-id` (qunfa de-duplicates on it) and so its own HMAC-SHA256 signature.
-- wrk's LuaJIT has no crypto, so SHA-256, HMAC and base64 are written out here with the
-- `bit` library; the benchmark checks the result against Rust's hmac crate before measuring.
--
-- Arguments (after `--`): <hex key> <id prefix> [fixed <unix seconds>]
-- "fixed" sends one constant request (id "msg_selftest") for that check.

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local lshift, rshift, ror, tobit = bit.lshift, bit.rshift, bit.ror, bit.tobit
local byte, char, rep, concat = string.byte, string.char, string.rep, table.concat

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
local IV = {
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
}
for i = 1, 8 do IV[i] = tobit(IV[i]) end
for i = 1, 64 do K[i] = tobit(K[i]) end

local W = {}

-- One 64-byte block of `s` starting after byte `offset`, folded into the state `H`.
local function compress(H, s, offset)
  for i = 0, 15 do
    local a, b, c, d = byte(s, offset + i * 4 + 1, offset + i * 4 + 4)
    W[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  for i = 16, 63 do
    local w15, w2 = W[i - 15], W[i - 2]
    local s0 = bxor(ror(w15, 7), ror(w15, 18), rshift(w15, 3))
    local s1 = bxor(ror(w2, 17), ror(w2, 19), rshift(w2, 10))
    W[i] = tobit(W[i - 16] + s0 + W[i - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for i = 0, 63 do
    local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = h + S1 + ch + K[i + 1] + W[i]
    local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    h, g, f, e, d, c, b = g, f, e, tobit(d + t1), c, b, a
    a = tobit(t1 + S0 + maj)
  end
  H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
  H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

local function to_bytes(H)
  local out = {}
  for i = 1, 8 do
    local w = H[i]
    out[i] = char(band(rshift(w, 24), 255), band(rshift(w, 16), 255), band(rshift(w, 8), 255), band(w, 255))
  end
  return concat(out)
end

-- The digest of (whatever `state` has absorbed: `prefix_len` bytes, a multiple of 64) .. msg.
local function finish(state, prefix_len, msg)
  local H = { state[1], state[2], state[3], state[4], state[5], state[6], state[7], state[8] }
  local total = prefix_len + #msg
  local bits = total * 8
  local high, low = math.floor(bits / 4294967296), bits % 4294967296
  local padded = msg .. "\128" .. rep("\0", (55 - total) % 64)
    .. char(band(rshift(high, 24), 255), band(rshift(high, 16), 255), band(rshift(high, 8), 255), band(high, 255))
    .. char(band(rshift(low, 24), 255), band(rshift(low, 16), 255), band(rshift(low, 8), 255), band(low, 255))
  for offset = 0, #padded - 64, 64 do
    compress(H, padded, offset)
  end
  return to_bytes(H)
end

local function sha256(msg)
  return finish(IV, 0, msg)
end

-- HMAC with the padded key blocks absorbed once: each request then costs the message blocks
-- plus one block for the outer hash.
local function hmac_sha256(key)
  if #key > 64 then key = sha256(key) end
  key = key .. rep("\0", 64 - #key)
  local inner_block, outer_block = {}, {}
  for i = 1, 64 do
    local k = byte(key, i)
    inner_block[i] = char(bxor(k, 0x36))
    outer_block[i] = char(bxor(k, 0x5c))
  end
  local inner = { unpack(IV) }
  local outer = { unpack(IV) }
  compress(inner, concat(inner_block), 0)
  compress(outer, concat(outer_block), 0)
  return function(msg)
    return finish(outer, 64, finish(inner, 64, msg))
  end
end

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1, c2 = rshift(n, 18), band(rshift(n, 12), 63)
    local c3, c4 = band(rshift(n, 6), 63), band(n, 63)
    out[#out + 1] = ALPHABET:sub(c1 + 1, c1 + 1) .. ALPHABET:sub(c2 + 1, c2 + 1)
      .. (b and ALPHABET:sub(c3 + 1, c3 + 1) or "=") .. (c and ALPHABET:sub(c4 + 1, c4 + 1) or "=")
  end
  return concat(out)
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

local sign, prefix, fixed_ts
local counter = 0

function init(args)
  local key = args[1]:gsub("..", function(h) return char(tonumber(h, 16)) end)
  sign = hmac_sha256(key)
  prefix = args[2] .. "-" .. tostring(thread_no or 0) .. "-"
  if args[3] == "fixed" then fixed_ts = args[4] end
end

local function body(id, ts)
  return '{"type":"message","timestamp":"' .. os.date("!%Y-%m-%dT%H:%M:%SZ", tonumber(ts))
    .. '","data":{"chat":"bench","user":"u-bench","user_name":"Bench","text":"/whoami","message_id":"'
    .. id .. '"}}'
end

function request()
  local id, ts
  if fixed_ts then
    id, ts = "msg_selftest", fixed_ts
  else
    counter = counter + 1
    id, ts = prefix .. counter, tostring(os.time())
  end
  local payload = body(id, ts)
  local headers = {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = id,
    ["webhook-timestamp"] = ts,
    ["webhook-signature"] = "v1," .. base64(sign(id .. "." .. ts .. "." .. payload)),
  }
  return wrk.format("POST", nil, headers, payload)
end
