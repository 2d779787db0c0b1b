-- Caps, budgets and concurrency shared by every bidbridge node.
--
-- One row per (owner, metric, period window). `used` is what has been
-- consumed (connected calls, money spent); `reserved` is what calls in
-- flight hold right now (a phone ringing or a conversation going on). A
-- reservation is admitted only if used + reserved + amount <= limit, in one
-- UPDATE that takes the row lock, so two nodes can never both take the last
-- slot. See docs/caps.md.

CREATE TABLE cap_counters (
    owner_kind      text NOT NULL CHECK (owner_kind IN ('destination', 'buyer')),
    owner_id        text NOT NULL,
    -- calls (connected calls), live (ringing or bridged now), budget (cents)
    metric          text NOT NULL CHECK (metric IN ('calls', 'live', 'budget')),
    -- hour, day, month, total; 'now' for live
    period          text NOT NULL CHECK (period IN ('hour', 'day', 'month', 'total', 'now')),
    period_start    timestamptz NOT NULL,
    used            bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    reserved        bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (owner_kind, owner_id, metric, period, period_start)
);

-- What each in-flight attempt holds, so it can be settled exactly once and
-- released if its node dies (the lease runs out).
CREATE TABLE cap_reservations (
    reservation_id  uuid PRIMARY KEY,
    node_id         text NOT NULL,
    call_id         uuid NOT NULL,
    items           jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX cap_reservations_expires ON cap_reservations (expires_at);

-- Admits a reservation or names the first cap that is full.
-- p_items: [{"owner_kind","owner_id","metric","period","period_start","cap","amount","label"}],
-- sorted by the caller in key order so concurrent admissions lock rows in
-- the same order (no deadlocks). Returns NULL when admitted.
CREATE FUNCTION bidbridge_admit(p_reservation uuid, p_node text, p_call uuid, p_items jsonb, p_lease_secs integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT * FROM jsonb_to_recordset(p_items)
            AS x(owner_kind text, owner_id text, metric text, period text, period_start timestamptz,
                 cap bigint, amount bigint, label text)
    LOOP
        INSERT INTO cap_counters (owner_kind, owner_id, metric, period, period_start)
        VALUES (item.owner_kind, item.owner_id, item.metric, item.period, item.period_start)
        ON CONFLICT DO NOTHING;
        UPDATE cap_counters SET reserved = reserved + item.amount
         WHERE owner_kind = item.owner_kind AND owner_id = item.owner_id AND metric = item.metric
           AND period = item.period AND period_start = item.period_start
           AND used + reserved + item.amount <= item.cap;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = item.label;
        END IF;
    END LOOP;
    INSERT INTO cap_reservations (reservation_id, node_id, call_id, items, expires_at)
    VALUES (p_reservation, p_node, p_call, p_items, now() + make_interval(secs => p_lease_secs));
    RETURN NULL;
EXCEPTION WHEN SQLSTATE 'P0001' THEN
    -- The block is a subtransaction: every reservation made above is undone.
    RETURN SQLERRM;
END;
$$;

-- Settles a reservation once: releases what it reserved and records what
-- was consumed. p_consumed maps metric -> amount actually used (calls: 1 if
-- the buyer answered; budget: the price charged if payable; live: 0).
-- Returns false when the reservation was already settled or expired.
CREATE FUNCTION bidbridge_settle(p_reservation uuid, p_consumed jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    held jsonb;
    item record;
BEGIN
    DELETE FROM cap_reservations WHERE reservation_id = p_reservation RETURNING items INTO held;
    IF held IS NULL THEN
        RETURN false;
    END IF;
    FOR item IN
        SELECT * FROM jsonb_to_recordset(held)
            AS x(owner_kind text, owner_id text, metric text, period text, period_start timestamptz, amount bigint)
    LOOP
        UPDATE cap_counters
           SET reserved = greatest(reserved - item.amount, 0),
               used = used + least(coalesce((p_consumed ->> item.metric)::bigint, 0), item.amount)
         WHERE owner_kind = item.owner_kind AND owner_id = item.owner_id AND metric = item.metric
           AND period = item.period AND period_start = item.period_start;
    END LOOP;
    RETURN true;
END;
$$;

-- Releases reservations whose lease ran out (their node died or lost the
-- database for longer than the lease). Any node may run it.
CREATE FUNCTION bidbridge_expire_reservations() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    gone uuid;
    n integer := 0;
BEGIN
    FOR gone IN
        SELECT reservation_id FROM cap_reservations WHERE expires_at < now() FOR UPDATE SKIP LOCKED
    LOOP
        IF bidbridge_settle(gone, '{}'::jsonb) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END;
$$;
