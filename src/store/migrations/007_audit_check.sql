-- ForgeBox schema, version 7 (SQLite only; PostgreSQL stays at 6): the
-- audit table's outcome CHECK says the same as before, but as three
-- comparisons instead of IN: SQLite 3.40 evaluates an IN list in a CHECK
-- by building a temporary b-tree of its values for every row inserted,
-- which was about 5% of the gateway's CPU on an API exec (three rows per
-- exec; bench/README.md, session 7).  A row valid before is valid now and
-- the other way round (outcome is NOT NULL TEXT; an equality with a text
-- literal matches exactly the values IN matched).
--
-- SQLite cannot alter a constraint, so the table is rebuilt with its rows
-- copied unchanged (nothing references it and it has no other index);
-- audit_head is untouched, so the chain verifies as before.
CREATE TABLE audit_v7 (
    seq         INTEGER PRIMARY KEY,      -- 1, 2, 3, ... without gaps
    ts          TEXT NOT NULL,
    event       TEXT NOT NULL,            -- auth, permission, admin, sandbox, exec, config, network
    actor       TEXT NOT NULL,            -- user:<id>, key:<id>, system, anonymous
    resource    TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome = 'allowed' OR outcome = 'denied' OR outcome = 'error'),
    reason      TEXT NOT NULL,
    source_ip   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,            -- hash of seq-1 (64 zeros for seq 1)
    hash        TEXT NOT NULL             -- keyed BLAKE2b-256 of the canonical encoding
);
INSERT INTO audit_v7 (seq, ts, event, actor, resource, action, outcome, reason, source_ip, request_id, prev_hash,
                      hash)
    SELECT seq, ts, event, actor, resource, action, outcome, reason, source_ip, request_id, prev_hash, hash
    FROM audit;
DROP TABLE audit;
ALTER TABLE audit_v7 RENAME TO audit;
