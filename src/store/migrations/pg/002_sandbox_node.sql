-- ForgeBox schema, version 2, for PostgreSQL: sandbox records belong to a
-- node (see ../002_sandbox_node.sql).

ALTER TABLE sandboxes ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes DROP COLUMN daemon_pid;
CREATE INDEX sandboxes_node ON sandboxes(node_id, state);
