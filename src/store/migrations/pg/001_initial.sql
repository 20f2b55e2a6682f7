-- ForgeBox schema, version 1, for PostgreSQL: the tables of
-- ../001_initial.sql (read its comments) in PostgreSQL's types: INTEGER
-- columns are BIGINT, BLOB is BYTEA.  Times stay RFC 3339 text, so they
-- compare the same way on both engines.

CREATE TABLE org (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    team_id       TEXT NOT NULL REFERENCES teams(id),
    role          TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'operator', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    key_hash      BYTEA NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE sandboxes (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams(id),
    key_id        TEXT,
    backend       TEXT NOT NULL,
    memory_mib    BIGINT NOT NULL,
    vcpus         BIGINT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('creating', 'running', 'destroyed', 'failed')),
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    destroyed_at  TEXT,
    daemon_pid    BIGINT NOT NULL
);
CREATE INDEX sandboxes_team ON sandboxes(team_id, state);

CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY,
    ts          TEXT NOT NULL,
    event       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied', 'error')),
    reason      TEXT NOT NULL,
    source_ip   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL,
    mac   TEXT NOT NULL
);
