-- bidbridge catalog: who sells calls (publishers, tracking numbers), what is
-- sold (campaigns with their IVR), and who buys (buyers, destinations).
--
-- Operators manage these rows with `bidbridge catalog apply FILE`; the daemon
-- reads them into its in-memory catalog and hears about changes through the
-- `bidbridge_catalog` NOTIFY channel (triggers at the end of this file).
--
-- Conventions: catalog ids are operator-chosen slugs; money is BIGINT minor
-- units (`_cents`), never floating point; durations carry their unit in the
-- column name; every timestamp is TIMESTAMPTZ.

CREATE DOMAIN slug AS text CHECK (VALUE ~ '^[a-z0-9][a-z0-9_.-]{0,63}$');
CREATE DOMAIN e164 AS text CHECK (VALUE ~ '^\+[1-9][0-9]{7,14}$');
CREATE DOMAIN money_cents AS bigint CHECK (VALUE >= 0);

CREATE TABLE publishers (
    id                      slug PRIMARY KEY,
    name                    text NOT NULL,
    -- Payout rule: nothing, a fixed amount per payable call, or a share of revenue.
    payout_kind             text NOT NULL DEFAULT 'none' CHECK (payout_kind IN ('none', 'fixed', 'share')),
    payout_fixed_cents      money_cents,
    payout_share_bp         integer CHECK (payout_share_bp BETWEEN 0 AND 10000),
    payout_min_talk_secs    integer CHECK (payout_min_talk_secs >= 0),
    -- Minimum price for this publisher's calls, on top of the campaign floor.
    floor_cents             money_cents,
    postback_url            text,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK ((payout_kind = 'fixed') = (payout_fixed_cents IS NOT NULL)),
    CHECK ((payout_kind = 'share') = (payout_share_bp IS NOT NULL))
);

CREATE TABLE campaigns (
    id                      slug PRIMARY KEY,
    name                    text NOT NULL,
    vertical                text NOT NULL,
    currency                char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    floor_cents             money_cents NOT NULL DEFAULT 0,
    auction_deadline_ms     integer CHECK (auction_deadline_ms BETWEEN 1 AND 10000),
    auction_type            text NOT NULL DEFAULT 'first_price' CHECK (auction_type IN ('first_price', 'second_price')),
    second_price_increment_cents money_cents NOT NULL DEFAULT 1,
    ranking                 text NOT NULL DEFAULT 'price' CHECK (ranking IN ('price', 'expected_value')),
    -- A lower tier beats a higher tier only when it bids at least this much more.
    tier_margin_cents       money_cents NOT NULL DEFAULT 0,
    min_talk_secs           integer NOT NULL DEFAULT 60 CHECK (min_talk_secs >= 0),
    recording               boolean NOT NULL DEFAULT false,
    -- Where calls go when no buyer takes them: {number,gateway} | {sip} | {extension,context}.
    backup_dial             jsonb,
    duplicate_window_secs   integer CHECK (duplicate_window_secs > 0),
    duplicate_action        text CHECK (duplicate_action IN ('route_previous', 'not_payable', 'backup')),
    bid_expiry_action       text NOT NULL DEFAULT 'skip' CHECK (bid_expiry_action IN ('skip', 'rerun')),
    -- The IVR tree (validated by the application; see docs/catalog.md).
    ivr                     jsonb,
    -- Campaign-level publisher payout rule, overriding the publisher's own.
    payout_kind             text NOT NULL DEFAULT 'none' CHECK (payout_kind IN ('none', 'fixed', 'share')),
    payout_fixed_cents      money_cents,
    payout_share_bp         integer CHECK (payout_share_bp BETWEEN 0 AND 10000),
    payout_min_talk_secs    integer CHECK (payout_min_talk_secs >= 0),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK ((duplicate_window_secs IS NULL) = (duplicate_action IS NULL)),
    CHECK ((payout_kind = 'fixed') = (payout_fixed_cents IS NOT NULL)),
    CHECK ((payout_kind = 'share') = (payout_share_bp IS NOT NULL))
);

CREATE TABLE tracking_numbers (
    number                  e164 PRIMARY KEY,
    campaign_id             slug NOT NULL REFERENCES campaigns (id),
    publisher_id            slug NOT NULL REFERENCES publishers (id),
    source                  text NOT NULL DEFAULT '',
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracking_numbers_campaign ON tracking_numbers (campaign_id);

CREATE TABLE buyers (
    id                      slug PRIMARY KEY,
    name                    text NOT NULL,
    enabled                 boolean NOT NULL DEFAULT true,
    -- May this buyer learn the caller's full number (only after winning,
    -- or in the ping when consent exists; see docs/buyer-protocol.md)?
    allow_caller_number     boolean NOT NULL DEFAULT false,
    -- Time zone that defines this buyer's cap days and months.
    timezone                text NOT NULL DEFAULT 'UTC',
    cap_hour                integer CHECK (cap_hour >= 0),
    cap_day                 integer CHECK (cap_day >= 0),
    cap_month               integer CHECK (cap_month >= 0),
    cap_total               integer CHECK (cap_total >= 0),
    concurrency_cap         integer CHECK (concurrency_cap >= 0),
    budget_day_cents        money_cents,
    budget_month_cents      money_cents,
    -- SHA-256 (hex) of the buyer's API token for /v1/conversions.
    api_token_sha256        text CHECK (api_token_sha256 ~ '^[0-9a-f]{64}$'),
    win_url                 text,
    loss_url                text,
    billing_url             text,
    postback_url            text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE destinations (
    id                      slug PRIMARY KEY,
    buyer_id                slug NOT NULL REFERENCES buyers (id) ON DELETE CASCADE,
    enabled                 boolean NOT NULL DEFAULT true,
    -- Either a ping endpoint (real-time bid) or a static price.
    ping_url                text,
    ping_dialect            text NOT NULL DEFAULT 'native' CHECK (ping_dialect IN ('native', 'ringba')),
    ping_auth_header        text,
    -- Sent to the buyer on every ping, so it is stored as given.
    ping_auth_value         text,
    static_price_cents      money_cents,
    dial                    jsonb NOT NULL,
    ring_timeout_secs       integer NOT NULL DEFAULT 20 CHECK (ring_timeout_secs BETWEEN 1 AND 300),
    tier                    smallint NOT NULL DEFAULT 1 CHECK (tier BETWEEN 1 AND 99),
    weight                  integer NOT NULL DEFAULT 100 CHECK (weight BETWEEN 1 AND 1000000),
    min_talk_secs           integer CHECK (min_talk_secs >= 0),
    timezone                text NOT NULL DEFAULT 'UTC',
    -- {"mon": ["09:00-17:00"], ...}; NULL means always open.
    hours                   jsonb,
    closed_dates            date[] NOT NULL DEFAULT '{}',
    cap_hour                integer CHECK (cap_hour >= 0),
    cap_day                 integer CHECK (cap_day >= 0),
    cap_month               integer CHECK (cap_month >= 0),
    cap_total               integer CHECK (cap_total >= 0),
    concurrency_cap         integer CHECK (concurrency_cap >= 0),
    budget_day_cents        money_cents,
    budget_month_cents      money_cents,
    -- Include/exclude lists: states, area codes, zips, zip prefixes, tags, sources.
    targeting               jsonb NOT NULL DEFAULT '{}',
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK ((ping_url IS NULL) <> (static_price_cents IS NULL))
);
CREATE INDEX destinations_buyer ON destinations (buyer_id);

CREATE TABLE destination_campaigns (
    destination_id          slug NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    campaign_id             slug NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    PRIMARY KEY (destination_id, campaign_id)
);
CREATE INDEX destination_campaigns_campaign ON destination_campaigns (campaign_id);

-- Callers never offered to anyone (fraud, abuse, operator's choice).
CREATE TABLE blocklist (
    number                  e164 PRIMARY KEY,
    reason                  text NOT NULL DEFAULT '',
    added_at                timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz
);

-- One NOTIFY per statement on any catalog table; the daemon reloads its
-- catalog (debounced) when it hears one. The payload names the table.
CREATE FUNCTION bidbridge_notify_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bidbridge_catalog', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER publishers_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON publishers
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
CREATE TRIGGER campaigns_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
CREATE TRIGGER tracking_numbers_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tracking_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
CREATE TRIGGER buyers_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON buyers
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
CREATE TRIGGER destinations_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON destinations
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
CREATE TRIGGER destination_campaigns_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON destination_campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
CREATE TRIGGER blocklist_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON blocklist
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();
