-- Per-destination ping rate limit: at most this many pings per second
-- (the buyer's endpoint capacity); pings beyond it are skipped and the
-- destination sits that auction out ("ping rate limit").
ALTER TABLE destinations ADD COLUMN ping_rate_limit_per_sec integer CHECK (ping_rate_limit_per_sec > 0);
