-- ForgeBox schema, version 1.  Identifiers are random text ids
-- (tm_..., us_..., key_..., sb-...); times are RFC 3339 UTC strings with
-- nanoseconds.  Secrets are never stored in clear: passwords as argon2id
-- strings, API keys as keyed BLAKE2b digests.

CREATE TABLE org (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
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
    disabled      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    key_hash      BLOB NOT NULL,
    scopes        TEXT NOT NULL,          -- JSON array of permission names
    created_at    TEXT NOT NULL,
    expires_at    TEXT,                   -- NULL: never
    revoked_at    TEXT,                   -- NULL: live
    last_used_at  TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE sandboxes (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams(id),
    key_id        TEXT,
    backend       TEXT NOT NULL,
    memory_mib    INTEGER NOT NULL,
    vcpus         INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('creating', 'running', 'destroyed', 'failed')),
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    destroyed_at  TEXT,
    daemon_pid    INTEGER NOT NULL       -- the forgebox serve that owns it
);
CREATE INDEX sandboxes_team ON sandboxes(team_id, state);

CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,      -- 1, 2, 3, ... without gaps
    ts          TEXT NOT NULL,
    event       TEXT NOT NULL,            -- auth, permission, admin, sandbox, exec, config, network
    actor       TEXT NOT NULL,            -- user:<id>, key:<id>, system, anonymous
    resource    TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied', 'error')),
    reason      TEXT NOT NULL,
    source_ip   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,            -- hash of seq-1 (64 zeros for seq 1)
    hash        TEXT NOT NULL             -- keyed BLAKE2b-256 of the canonical encoding
);

-- The newest entry, MACed with the audit key: catches truncation.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    mac   TEXT NOT NULL
);
