-- ForgeBox schema, version 5, for PostgreSQL: console sessions (see
-- ../005_sessions.sql).  rowid stands in for SQLite's implicit row id: the
-- eviction of a user's oldest sessions orders by it after created_at.

CREATE TABLE sessions (
    rowid       BIGSERIAL,
    id          TEXT PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    source_ip   TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id, created_at);
CREATE INDEX sessions_expiry ON sessions(expires_at);
