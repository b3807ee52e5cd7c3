-- How attempts end, shared by the complete and settle scripts: success,
-- failure (retried or final), or cancel.
--
-- `v` holds 12 values per outcome: id, claim, cancelled ("1"/"0"), result?,
-- error code?, error message, error type, retry_at ("" for none), progress
-- percent ("" for none), progress message, current, total. An outcome whose
-- claim no longer holds its task is skipped (fencing).

-- Returns the changed records.
local function complete_outcomes(now_s, v)
  reserve_tickets(#v / 12)
  local out = {}
  for i = 1, #v, 12 do
    local e = open(v[i])
    local r = e.r
    if r[F.state] == '2' and r[F.claim] == v[i + 1] then
      if v[i + 8] ~= '' then
        put(e, 'progress_percent', v[i + 8])
        put(e, 'progress_message', v[i + 9])
        put(e, 'progress_current', v[i + 10])
        put(e, 'progress_total', v[i + 11])
      end
      local code = opt(v[i + 4])
      if v[i + 2] == '1' or r[F.cancel_requested] == '1' then
        finish(e, '5', now_s)
      elseif not code then
        local result = opt(v[i + 3])
        if result then put(e, 'result', result) else remove(e, 'result') end
        remove(e, 'error_code')
        remove(e, 'error_message')
        remove(e, 'error_type')
        local percent = r[F.progress_percent]
        if not percent then
          put(e, 'progress_percent', '100.0')
          put(e, 'progress_message', '')
          put(e, 'progress_current', '0')
          put(e, 'progress_total', '0')
        elseif tonumber(percent) ~= 100 then
          put(e, 'progress_percent', '100.0')
        end
        finish(e, '3', now_s)
      else
        put(e, 'error_code', code)
        put(e, 'error_message', v[i + 5])
        put(e, 'error_type', v[i + 6])
        if v[i + 7] ~= '' then
          make_pending(e, v[i + 7], now_s)
        else
          finish(e, '4', now_s)
        end
      end
      out[#out + 1] = save(e)
    end
  end
  return out
end
