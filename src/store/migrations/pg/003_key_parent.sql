-- ForgeBox schema, version 3, for PostgreSQL: the key that created a key
-- (see ../003_key_parent.sql).

ALTER TABLE api_keys ADD COLUMN parent_key_id TEXT REFERENCES api_keys(id);
CREATE INDEX api_keys_parent ON api_keys(parent_key_id);
