-- ForgeBox schema, version 6: several hosts.  A node (`forgebox node`,
-- docs/node-api.md) registers itself in the shared store and heartbeats;
-- a node silent too long is marked down and the sandbox records it held
-- live become 'lost', a final state nothing revives.
--
-- heartbeat_unix is whole seconds of unix time written by the clock of the
-- process that writes it; expiry compares it as an integer, never as text.
-- A name (the one in the node's certificate) belongs to one node at a time.

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,            -- "nd_" + 16 hex (its STATE_DIR/node.id)
    name            TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL,               -- "HOST:PORT" of its /node/v1
    backend         TEXT NOT NULL CHECK (backend IN ('vm', 'jail')),
    isolation       TEXT NOT NULL,
    capacity        INTEGER NOT NULL,
    memory_mib      INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('up', 'down', 'stopped')),
    registered_at   TEXT NOT NULL,
    heartbeat_at    TEXT NOT NULL,
    heartbeat_unix  INTEGER NOT NULL
);
CREATE INDEX nodes_state ON nodes(state, heartbeat_unix);

-- The state CHECK of sandboxes gains 'lost': SQLite cannot alter a
-- constraint, so the table is rebuilt (nothing references it) and its
-- indexes re-created.
CREATE TABLE sandboxes_v6 (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams(id),
    key_id        TEXT,
    backend       TEXT NOT NULL,
    memory_mib    INTEGER NOT NULL,
    vcpus         INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('creating', 'running', 'destroyed', 'failed', 'lost')),
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    destroyed_at  TEXT,
    node_id       TEXT NOT NULL DEFAULT ''
);
INSERT INTO sandboxes_v6 (id, team_id, key_id, backend, memory_mib, vcpus, state, created_at, expires_at,
                          destroyed_at, node_id)
    SELECT id, team_id, key_id, backend, memory_mib, vcpus, state, created_at, expires_at, destroyed_at, node_id
    FROM sandboxes;
DROP TABLE sandboxes;
ALTER TABLE sandboxes_v6 RENAME TO sandboxes;
CREATE INDEX sandboxes_team ON sandboxes(team_id, state);
CREATE INDEX sandboxes_node ON sandboxes(node_id, state);
