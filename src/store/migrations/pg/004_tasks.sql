-- ForgeBox schema, version 4, for PostgreSQL (see ../004_tasks.sql): tasks (a model working through tools in a
-- sandbox of its own), their numbered transcript events and the approvals
-- of held tool calls.  Nothing secret is stored: a task names its provider,
-- never the provider's key.  tools and approvals are JSON arrays of tool
-- names, network {"allow": [...]} or NULL, limits and usage JSON objects,
-- conversation the provider-neutral transcript (fb_llm_conv_to_json) that
-- a follow-up message continues.  Like sandboxes, a task belongs to the
-- node that runs it: a gateway that restarts fails only its own.

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams(id),
    user_id       TEXT NOT NULL REFERENCES users(id),
    key_id        TEXT,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    backend       TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    system        TEXT,
    tools         TEXT NOT NULL,
    approvals     TEXT NOT NULL,
    network       TEXT,
    limits        TEXT NOT NULL,
    usage         TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'waiting_approval', 'succeeded',
                                                 'failed', 'cancelled', 'budget_exceeded')),
    result        TEXT,
    error         TEXT,
    sandbox_id    TEXT,
    node_id       TEXT NOT NULL,
    conversation  TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX tasks_team ON tasks(team_id, created_at);
CREATE INDEX tasks_node ON tasks(node_id, state);

CREATE TABLE task_events (
    task_id  TEXT NOT NULL REFERENCES tasks(id),
    seq      BIGINT NOT NULL,
    type     TEXT NOT NULL,
    data     TEXT NOT NULL,               -- JSON object
    at       TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE task_approvals (
    id          TEXT PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks(id),
    call_id     TEXT NOT NULL,
    tool        TEXT NOT NULL,
    input       TEXT NOT NULL,            -- JSON (the call's arguments, or null)
    state       TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    decided_at  TEXT,
    decided_by  TEXT,
    reason      TEXT
);
CREATE INDEX task_approvals_task ON task_approvals(task_id, created_at);
