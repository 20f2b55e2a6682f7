-- ForgeBox schema, version 6, for PostgreSQL: nodes, and the sandbox
-- state 'lost' (see ../006_nodes.sql).

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL,
    backend         TEXT NOT NULL CHECK (backend IN ('vm', 'jail')),
    isolation       TEXT NOT NULL,
    capacity        BIGINT NOT NULL,
    memory_mib      BIGINT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('up', 'down', 'stopped')),
    registered_at   TEXT NOT NULL,
    heartbeat_at    TEXT NOT NULL,
    heartbeat_unix  BIGINT NOT NULL
);
CREATE INDEX nodes_state ON nodes(state, heartbeat_unix);

ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_state_check;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_state_check
    CHECK (state IN ('creating', 'running', 'destroyed', 'failed', 'lost'));
