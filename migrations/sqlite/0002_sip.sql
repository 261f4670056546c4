-- SIP: seats (the SIP accounts of desk phones, each paying from a wallet) and registrar
-- bindings. Passwords are never stored: HA1 = H(username:realm:password) per digest
-- algorithm. Times are BIGINT Unix milliseconds.
-- Keep in step with migrations/postgres/0002_sip.sql (same tables, same columns).

CREATE TABLE seats (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    username     TEXT   NOT NULL UNIQUE,
    wallet_id    BIGINT NOT NULL REFERENCES wallets (id),
    display_name TEXT   NOT NULL DEFAULT '',
    realm        TEXT   NOT NULL,
    ha1_md5      TEXT   NOT NULL,
    ha1_sha256   TEXT   NOT NULL,
    disabled     BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX seats_wallet ON seats (wallet_id);

-- One row per (seat, contact). node_id: the host whose transport the phone reached (its
-- NAT pinhole and TCP/TLS connection live there).
CREATE TABLE registrations (
    seat_id       BIGINT NOT NULL REFERENCES seats (id) ON DELETE CASCADE,
    contact       TEXT   NOT NULL,
    source        TEXT   NOT NULL,
    transport     TEXT   NOT NULL,
    call_id       TEXT   NOT NULL,
    cseq          BIGINT NOT NULL,
    user_agent    TEXT   NOT NULL DEFAULT '',
    node_id       TEXT   NOT NULL,
    expires_at    BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (seat_id, contact)
);
CREATE INDEX registrations_expiry ON registrations (expires_at);
