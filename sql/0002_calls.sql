-- Call records: one row per call with its whole story, plus every bid and
-- every bridge attempt. Written by the daemon's record writer in batches,
-- off the call path, and replayed from the local journal after an outage.
--
-- Replays must never duplicate: every table's primary key is derived from
-- the call id the daemon chose when the call arrived, and the writer inserts
-- with ON CONFLICT DO NOTHING inside one transaction per batch.
--
-- Catalog ids here are plain text, not foreign keys: a record outlives the
-- catalog row it mentions, and must insert even when that row is gone.

CREATE TABLE calls (
    call_id                 uuid PRIMARY KEY,
    node_id                 text NOT NULL,
    pbx                     text NOT NULL CHECK (pbx IN ('freeswitch', 'asterisk')),
    channel_id              text NOT NULL,
    caller                  text,                   -- E.164 when the caller ID was a number
    caller_raw              text NOT NULL,          -- caller ID exactly as the switch gave it
    tracking_number         text NOT NULL,
    campaign_id             text,
    publisher_id            text,
    source                  text,
    disposition             text NOT NULL,          -- sold, backup, no_buyer, rejected, unknown_number, abandoned, failed
    stage_reached           text NOT NULL,          -- identify, screen, ivr, auction, connect, bridged, settled
    arrived_at              timestamptz NOT NULL,
    ivr_done_at             timestamptz,
    auction_closed_at       timestamptz,
    first_ring_at           timestamptz,
    answered_at             timestamptz,
    ended_at                timestamptz NOT NULL,
    ivr_tags                jsonb NOT NULL DEFAULT '{}',
    ivr_path                jsonb NOT NULL DEFAULT '[]',
    winner_buyer_id         text,
    winner_destination_id   text,
    winner_bid_id           text,
    price_bid_cents         bigint,
    price_charged_cents     bigint,
    currency                char(3) NOT NULL DEFAULT 'USD',
    talk_ms                 bigint,
    min_talk_secs           integer,
    payable                 boolean NOT NULL DEFAULT false,
    payable_reason          text NOT NULL,
    revenue_cents           bigint NOT NULL DEFAULT 0,
    payout_cents            bigint NOT NULL DEFAULT 0,
    margin_cents            bigint GENERATED ALWAYS AS (revenue_cents - payout_cents) STORED,
    hangup_cause            text,
    hung_up_by              text,
    recording_path          text,
    auction_us              bigint,
    notes                   jsonb NOT NULL DEFAULT '[]',
    written_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calls_arrived ON calls (arrived_at);
CREATE INDEX calls_campaign_arrived ON calls (campaign_id, arrived_at);
CREATE INDEX calls_caller_arrived ON calls (caller, arrived_at);
CREATE INDEX calls_winner ON calls (winner_destination_id, arrived_at);

CREATE TABLE bids (
    call_id                 uuid NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    seq                     smallint NOT NULL,
    buyer_id                text NOT NULL,
    destination_id          text NOT NULL,
    bid_id                  text,
    -- bid, no_bid, below_floor, timeout, error, invalid, ineligible
    status                  text NOT NULL,
    reason                  text,
    price_cents             bigint,
    min_talk_secs           integer,
    expires_at              timestamptz,
    latency_us              bigint,
    rank                    smallint,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX bids_destination ON bids (destination_id);

CREATE TABLE bridge_attempts (
    call_id                 uuid NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    seq                     smallint NOT NULL,
    buyer_id                text,
    destination_id          text,
    -- winner, fallthrough, recovery, backup
    kind                    text NOT NULL,
    target                  text NOT NULL,
    started_at              timestamptz NOT NULL,
    ring_ms                 bigint NOT NULL,
    answered_at             timestamptz,
    ended_at                timestamptz,
    talk_ms                 bigint,
    -- answered, no_answer, busy, rejected, unreachable, caller_gone, failed, skipped
    outcome                 text NOT NULL,
    cause                   text,
    detail                  text,
    ended_by                text,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX bridge_attempts_destination ON bridge_attempts (destination_id, started_at);

CREATE TABLE conversions (
    id                      bigserial PRIMARY KEY,
    call_id                 uuid NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    buyer_id                text NOT NULL,
    event                   text NOT NULL,
    value_cents             bigint NOT NULL CHECK (value_cents >= 0),
    idempotency_key         text NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (buyer_id, idempotency_key)
);
CREATE INDEX conversions_call ON conversions (call_id);

-- Evidence that the caller agreed to be connected and their data shared.
CREATE TABLE consent_records (
    call_id                 uuid NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    seq                     smallint NOT NULL,
    -- channel_variable, sip_header, trustedform, jornaya, ivr
    kind                    text NOT NULL,
    reference               text,                   -- consent id, certificate URL, LeadiD token
    prompt                  text,                   -- IVR: the exact prompt played
    key_pressed             text,
    page                    text,
    consented_at            timestamptz,
    captured_at             timestamptz NOT NULL,
    PRIMARY KEY (call_id, seq)
);
