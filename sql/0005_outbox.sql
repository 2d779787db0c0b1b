-- Outbox for postbacks (to publishers) and notices (to buyers): win, loss,
-- billing and conversion GETs, sent after the call by the daemon's
-- postback sender, never on the call path.
--
-- Rows are enqueued in the same transaction as what caused them (a call
-- record's insert, a conversion's insert), so a notice exists exactly when
-- its cause does. The URL is filled from the catalog at enqueue time and
-- stored as sent: what was promised to whom stays explainable even after
-- the catalog changes.
--
-- Several nodes may send: a sender claims due rows with
-- SELECT ... FOR UPDATE SKIP LOCKED and leases them by moving
-- next_attempt_at forward before it sends, so no row is sent by two
-- nodes at once, and a node that dies mid-send only delays the row.

CREATE TABLE postbacks (
    id                      bigserial PRIMARY KEY,
    call_id                 uuid NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    -- Set for conversion postbacks: one postback per conversion, even when
    -- two conversions fill the same URL.
    conversion_id           bigint REFERENCES conversions (id) ON DELETE CASCADE,
    kind                    text NOT NULL CHECK (kind IN ('publisher_payable', 'publisher_conversion',
                                'buyer_win', 'buyer_loss', 'buyer_billing', 'buyer_conversion')),
    -- Whom it is for: the publisher's or the buyer's catalog id.
    party_id                text NOT NULL,
    url                     text NOT NULL,          -- filled, exactly as sent
    created_at              timestamptz NOT NULL DEFAULT now(),
    next_attempt_at         timestamptz NOT NULL DEFAULT now(),
    attempts                integer NOT NULL DEFAULT 0,
    last_status             integer,                -- HTTP status of the last attempt
    last_error              text,                   -- transport error of the last attempt
    delivered_at            timestamptz,            -- a 2xx was received
    failed_at               timestamptz             -- given up (attempts or age exhausted)
);
-- Replays of the same record (journal replay) or of the same conversion
-- enqueue nothing new.
CREATE UNIQUE INDEX postbacks_unique ON postbacks (call_id, kind, url, COALESCE(conversion_id, 0));
-- The sender's claim scans only rows still pending.
CREATE INDEX postbacks_due ON postbacks (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;

CREATE TABLE postback_attempts (
    postback_id             bigint NOT NULL REFERENCES postbacks (id) ON DELETE CASCADE,
    attempt                 integer NOT NULL,       -- 1, 2, 3, ...
    at                      timestamptz NOT NULL,
    node_id                 text NOT NULL,
    status                  integer,                -- HTTP status, when an answer came
    error                   text,                   -- transport error or timeout, otherwise
    latency_ms              bigint NOT NULL,
    PRIMARY KEY (postback_id, attempt)
);
