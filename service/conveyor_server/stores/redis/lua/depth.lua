-- ARGV: prefix.
-- Returns the number of unfinished tasks.

return depth()
