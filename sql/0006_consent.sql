-- Consent, do-not-call and the sharing log (docs/compliance.md).
--
-- Campaign consent/opt-out settings are catalog columns (the catalog
-- document <-> these columns, src/catalog/store.rs). The do-not-call list is
-- its own table: it is not part of the catalog document (an export of the
-- catalog must not carry consumers' numbers) but every node caches it like
-- the blocklist, refreshed by the same NOTIFY channel.

ALTER TABLE campaigns
    ADD COLUMN consent_prompt   text,
    ADD COLUMN consent_key      text CHECK (consent_key ~ '^[0-9*#]$'),
    ADD COLUMN require_consent  boolean NOT NULL DEFAULT false,
    -- backup: no pings at all, straight to the backup line;
    -- static_only: only static-price destinations (nothing leaves the daemon)
    ADD COLUMN without_consent  text NOT NULL DEFAULT 'backup'
        CHECK (without_consent IN ('backup', 'static_only')),
    ADD COLUMN opt_out_key      text CHECK (opt_out_key ~ '^[0-9*#]$'),
    ADD COLUMN opt_out_prompt   text;

-- Numbers that must never be offered to a buyer. E.164 only.
CREATE TABLE dnc (
    number      text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{7,14}$'),
    -- 'ivr opt-out', 'import', 'api', 'cli', or what an import file said
    source      text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER dnc_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON dnc
    FOR EACH STATEMENT EXECUTE FUNCTION bidbridge_notify_catalog();

-- Every time caller data left the daemon: to whom, when, which fields,
-- under which consent. Written by the record writer in the same
-- transaction as the call (keys derived from the call id, so replays add
-- nothing), except API reads, which the API appends itself.
CREATE TABLE sharing_log (
    call_id         uuid NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    seq             smallint NOT NULL,
    -- ping, bridge, notice, api
    channel         text NOT NULL,
    -- buyer, publisher, operator (the backup line), admin (API reader)
    party_kind      text NOT NULL,
    party_id        text NOT NULL,
    destination_id  text,
    -- the field names sent, e.g. {area_code,state,zip,number_hash,tag.product}
    fields          text[] NOT NULL,
    -- the consent record the share relied on (consent_records.seq), if any
    consent_seq     smallint,
    shared_at       timestamptz NOT NULL,
    PRIMARY KEY (call_id, seq),
    FOREIGN KEY (call_id, consent_seq) REFERENCES consent_records (call_id, seq)
);
CREATE INDEX sharing_log_party ON sharing_log (party_id, shared_at);
