-- Trunks (carriers we terminate calls to and receive DIDs from) and our numbers.
-- Keep in step with migrations/sqlite/0003_trunks.sql (same tables, same columns).

CREATE TABLE trunks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT   NOT NULL UNIQUE,
    provider        TEXT   NOT NULL CHECK (provider IN ('twilio', 'telnyx', 'generic')),
    host            TEXT   NOT NULL,
    port            BIGINT,
    transport       TEXT   NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
    srtp            BIGINT NOT NULL DEFAULT 0,
    username        TEXT   NOT NULL DEFAULT '',
    -- Digest password for 401/407. Never printed by the CLI, the API or the logs.
    password        TEXT   NOT NULL DEFAULT '',
    -- Comma-separated E.164 numbers or prefixes (ending in '*') that may be presented.
    caller_ids      TEXT   NOT NULL DEFAULT '',
    codecs          TEXT   NOT NULL DEFAULT 'PCMU,PCMA',
    max_channels    BIGINT NOT NULL DEFAULT 0,
    max_cps         BIGINT NOT NULL,
    priority        BIGINT NOT NULL DEFAULT 10,
    weight          BIGINT NOT NULL DEFAULT 100,
    enabled         BIGINT NOT NULL DEFAULT 1,
    -- Comma-separated CIDR ranges INVITEs from this carrier come from.
    inbound_sources TEXT   NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE numbers (
    e164       TEXT   PRIMARY KEY,
    trunk_id   BIGINT NOT NULL REFERENCES trunks (id),
    owner_kind TEXT   CHECK (owner_kind IN ('person', 'company')),
    owner_ref  TEXT,
    target     TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX numbers_trunk ON numbers (trunk_id);

-- Each host's view of each trunk (OPTIONS probes with hysteresis), for operators.
CREATE TABLE trunk_health (
    trunk_id    BIGINT NOT NULL REFERENCES trunks (id) ON DELETE CASCADE,
    node_id     TEXT   NOT NULL,
    state       TEXT   NOT NULL CHECK (state IN ('unknown', 'up', 'down')),
    latency_us  BIGINT,
    last_result TEXT   NOT NULL DEFAULT '',
    checked_at  BIGINT NOT NULL,
    PRIMARY KEY (trunk_id, node_id)
);
