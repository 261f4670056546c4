-- Outbound routing: destination prefixes per trunk, the per-attempt log of every call
-- (which trunk was tried, what it answered), and the change topic that makes running
-- servers reload trunks and numbers without a restart.
-- Keep in step with migrations/sqlite/0004_routing.sql (same tables, same columns).

-- Comma-separated E.164 prefixes ('+44', '+1') the trunk carries; empty: every destination.
ALTER TABLE trunks ADD COLUMN prefixes TEXT NOT NULL DEFAULT '';

-- One row per trunk tried (or skipped) for a call, in order. trunk_id is not a foreign
-- key: the log outlives a removed trunk (its name stays in trunk).
CREATE TABLE call_attempts (
    call_id    TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    node_id    TEXT   NOT NULL,
    direction  TEXT   NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    trunk      TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    status     BIGINT,
    outcome    TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX call_attempts_started ON call_attempts (started_at);

INSERT INTO change_seq (topic, seq) VALUES ('trunks', 0);
