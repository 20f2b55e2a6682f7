/*
 * sandboxes.h - the sandbox repository: the record a gateway keeps of each
 * sandbox it runs (who owns it, what it was given, its state), so that
 * what a crashed gateway left behind can be found and closed.
 *
 * Each record belongs to the node that created it (fb_store_node_id):
 * several gateways sharing one store each see and reap only their own.
 * Records written before schema version 2 have no node ("") and are
 * treated as the first node's to start: before version 2 one store had one
 * gateway.  Times are canonical RFC 3339 (common/time.h).
 */
#ifndef FB_STORE_SANDBOXES_H
#define FB_STORE_SANDBOXES_H

#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "policy/policy.h"
#include "store/store.h"

typedef struct fb_sandbox_record {
    const char *id;
    const char *team_id;
    const char *key_id;     /* "" or NULL when not created through a key */
    const char *backend;    /* "vm" or "jail" */
    uint64_t memory_mib;
    uint64_t vcpus;
    const char *created_at; /* RFC 3339 */
    const char *expires_at;
} fb_sandbox_record;

/* Records r as running on this node.  ENOTFOUND for an unknown team,
 * ECOLLISION if the id exists. */
int fb_store_sandbox_insert(fb_store *st, const fb_sandbox_record *r, fb_err *err);

/* Sets the state: "creating", "running", "destroyed" or "failed" (else
 * EINVAL); the two final states also set destroyed_at to now.
 * ENOTFOUND if there is no such record. */
int fb_store_sandbox_set_state(fb_store *st, const char *id, const char *state, fb_err *err);

/* The ids of this node's records still "creating" or "running", into a
 * malloc'd array (NULL when *n == 0; the caller frees). */
int fb_store_sandbox_list_live(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err);

#endif
