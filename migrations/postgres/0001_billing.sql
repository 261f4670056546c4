-- Billing: wallets, ledger, rates, destination policy, credit reservations, CDRs.
-- Money is BIGINT micro-units of the wallet currency; times are BIGINT Unix milliseconds.
-- Keep in step with migrations/sqlite/0001_billing.sql (same tables, same columns).

CREATE TABLE change_seq (
    topic TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL
);
INSERT INTO change_seq (topic, seq) VALUES ('rates', 0), ('wallets', 0), ('policy', 0);

CREATE TABLE wallets (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_kind        TEXT   NOT NULL CHECK (owner_kind IN ('person', 'company')),
    owner_ref         TEXT   NOT NULL,
    name              TEXT   NOT NULL DEFAULT '',
    currency          TEXT   NOT NULL DEFAULT 'USD',
    balance           BIGINT NOT NULL DEFAULT 0,
    reserved          BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    allowed_countries TEXT,
    max_rate_per_min  BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    CHECK (balance - reserved >= 0),
    UNIQUE (owner_kind, owner_ref)
);

CREATE TABLE ledger (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    wallet_id       BIGINT NOT NULL REFERENCES wallets (id),
    kind            TEXT   NOT NULL CHECK (kind IN ('purchase', 'call_charge', 'refund', 'bonus', 'adjustment')),
    amount          BIGINT NOT NULL,
    balance_after   BIGINT NOT NULL,
    idempotency_key TEXT   NOT NULL UNIQUE,
    reference       TEXT,
    reason          TEXT   NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL
);
CREATE INDEX ledger_wallet ON ledger (wallet_id, id);

CREATE TABLE rates (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix          TEXT   NOT NULL,
    origin_prefix   TEXT   NOT NULL DEFAULT '',
    country         TEXT   NOT NULL DEFAULT '',
    description     TEXT   NOT NULL DEFAULT '',
    rate_per_min    BIGINT NOT NULL CHECK (rate_per_min >= 0),
    connect_fee     BIGINT NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    increment_first BIGINT NOT NULL CHECK (increment_first > 0),
    increment_next  BIGINT NOT NULL CHECK (increment_next > 0),
    effective_from  BIGINT NOT NULL DEFAULT 0,
    UNIQUE (prefix, origin_prefix, effective_from)
);

CREATE TABLE blocked_prefixes (
    prefix     TEXT PRIMARY KEY,
    reason     TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE reservations (
    call_id          TEXT PRIMARY KEY,
    wallet_id        BIGINT NOT NULL REFERENCES wallets (id),
    node_id          TEXT   NOT NULL,
    caller           TEXT   NOT NULL,
    callee           TEXT   NOT NULL,
    rate_prefix      TEXT   NOT NULL,
    rate_per_min     BIGINT NOT NULL,
    connect_fee      BIGINT NOT NULL,
    increment_first  BIGINT NOT NULL,
    increment_next   BIGINT NOT NULL,
    amount           BIGINT NOT NULL CHECK (amount >= 0),
    granted_ms       BIGINT NOT NULL,
    final_units      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    answered_at      BIGINT,
    last_extended_at BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at);
CREATE INDEX reservations_node ON reservations (node_id);
CREATE INDEX reservations_wallet ON reservations (wallet_id);

CREATE TABLE calls (
    call_id         TEXT PRIMARY KEY,
    wallet_id       BIGINT NOT NULL REFERENCES wallets (id),
    node_id         TEXT   NOT NULL,
    caller          TEXT   NOT NULL,
    callee          TEXT   NOT NULL,
    trunk           TEXT,
    rate_prefix     TEXT   NOT NULL,
    rate_per_min    BIGINT NOT NULL,
    connect_fee     BIGINT NOT NULL,
    increment_first BIGINT NOT NULL,
    increment_next  BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    answered_at     BIGINT,
    ended_at        BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    billable_secs   BIGINT NOT NULL,
    cost            BIGINT NOT NULL,
    hangup_cause    TEXT   NOT NULL,
    quality         TEXT
);
CREATE INDEX calls_wallet ON calls (wallet_id, ended_at);
CREATE INDEX calls_ended ON calls (ended_at);
