-- ForgeBox schema, version 2: sandbox records belong to a node, not to a
-- process.  daemon_pid named the `forgebox serve` that owned a record, which
-- means nothing once several gateways share one store (two hosts can run
-- the same pid); node_id is the gateway's stable id (STATE_DIR/node.id).
-- Records from before this version get '' and are reaped by the first
-- gateway to start: version 1 had one gateway per store.

ALTER TABLE sandboxes ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes DROP COLUMN daemon_pid;
CREATE INDEX sandboxes_node ON sandboxes(node_id, state);
