-- ForgeBox schema, version 5: console sessions.  A session is known by the
-- BLAKE2b-256 digest of its token only (the token itself lives in the
-- browser's HttpOnly cookie); a stolen database holds nothing a browser can
-- present.  The CSRF token is derived from the token, so it is not stored
-- either.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,           -- "ses_" + 16 hex: names the session in the audit log
    token_hash  BLOB NOT NULL UNIQUE,       -- BLAKE2b-256 of the cookie's token
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    source_ip   TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id, created_at);
CREATE INDEX sessions_expiry ON sessions(expires_at);
