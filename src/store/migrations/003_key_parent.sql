-- ForgeBox schema, version 3: an API key remembers the key that created it
-- (NULL for keys made by the CLI, at bootstrap or from a console login),
-- so that revoking a leaked key revokes everything it minted, transitively.

ALTER TABLE api_keys ADD COLUMN parent_key_id TEXT REFERENCES api_keys(id);
CREATE INDEX api_keys_parent ON api_keys(parent_key_id);
