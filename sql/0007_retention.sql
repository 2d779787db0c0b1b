-- Retention, STIR/SHAKEN attestation and fraud auto-block.
--
-- (Written as 0006 on the `retain` branch; it becomes 0007_retention.sql,
-- version 7, when merged after 0006_consent.sql.)
--
-- Campaign retention: after retention_days a call's caller number (calls.caller,
-- calls.caller_raw) is replaced by a keyed hash; after recording_retention_days
-- its recording file is deleted and recording_path cleared. NULL keeps forever.
-- Financial columns are never touched by the purge.

ALTER TABLE campaigns
    ADD COLUMN retention_days            integer CHECK (retention_days > 0),
    ADD COLUMN recording_retention_days  integer CHECK (recording_retention_days > 0),
    -- STIR/SHAKEN: the weakest attestation the campaign accepts (A strongest).
    ADD COLUMN require_attestation       text CHECK (require_attestation IN ('A', 'B', 'C')),
    -- What happens to a call below require_attestation: backup, not_payable.
    ADD COLUMN unattested_action         text NOT NULL DEFAULT 'backup'
                                         CHECK (unattested_action IN ('backup', 'not_payable')),
    -- Fraud signals tripped by a source put its offending numbers on the blocklist.
    ADD COLUMN fraud_auto_block          boolean NOT NULL DEFAULT false;

ALTER TABLE calls
    -- A, B, C, failed, none (no STIR/SHAKEN information), NULL for older rows.
    ADD COLUMN attestation               text,
    -- When the purge replaced caller/caller_raw by their keyed hashes.
    ADD COLUMN caller_purged_at          timestamptz,
    -- When the purge deleted the recording (recording_path is then NULL).
    ADD COLUMN recording_purged_at       timestamptz;

-- The purge scans calls not yet purged, oldest first.
CREATE INDEX calls_caller_unpurged ON calls (arrived_at) WHERE caller_purged_at IS NULL;
CREATE INDEX calls_recording_unpurged ON calls (arrived_at) WHERE recording_path IS NOT NULL;
