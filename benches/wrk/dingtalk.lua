-- wrk script for `benches/inbound.rs`: DingTalk robot `/whoami` callbacks. The `sign` header
-- covers only the timestamp and the app secret (valid for an hour), so the benchmark signs
-- once in Rust and passes the headers in; each request only needs its own `msgId`, the key
-- qunfa de-duplicates on.
--
-- Arguments (after `--`): <timestamp ms> <sign> <msgId prefix>

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

local headers, prefix
local counter = 0

function init(args)
  headers = {
    ["Content-Type"] = "application/json",
    ["timestamp"] = args[1],
    ["sign"] = args[2],
  }
  prefix = args[3] .. "-" .. tostring(thread_no or 0) .. "-"
end

function request()
  counter = counter + 1
  local body = '{"conversationId":"cid-bench","chatbotCorpId":"ding-bench","chatbotUserId":"bot",'
    .. '"msgId":"' .. prefix .. counter .. '","senderNick":"Bench","isAdmin":false,'
    .. '"senderStaffId":"u-bench","conversationType":"2","conversationTitle":"bench",'
    .. '"isInAtList":true,"text":{"content":" /whoami"},"msgtype":"text","robotCode":"ding-bench"}'
  return wrk.format("POST", nil, headers, body)
end
