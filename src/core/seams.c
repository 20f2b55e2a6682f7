/*
 * seams.c - the one place where the service layer still does what belongs
 * to other modules, each marked with where it moves (internal.h).
 *
 * Issue 6 moves every SQL statement into src/store repositories, every
 * rule into src/policy as pure functions, sandbox kills into src/sandbox
 * and typed agent errors into src/proto; those changes are made in
 * parallel.  Until they are merged, core keeps today's behaviour here, so
 * that the merge is a swap of these bodies for calls and nothing else in
 * core changes.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "auth/auth.h"
#include "core/internal.h"

/* ---- moves to store repo: sandboxes ------------------------------------------------- */

/* moves to store repo: sandbox_repo.set_state (with the node id) */
void seam_sandbox_state(fb_core *c, const char *id, const char *state)
{
    fb_store_lock(c->store);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(fb_store_db(c->store),
                           "UPDATE sandboxes SET state = ?1, destroyed_at = strftime('%Y-%m-%dT%H:%M:%SZ','now') "
                           "WHERE id = ?2",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    fb_store_unlock(c->store);
}

/* moves to store repo: sandbox_repo.insert (owned by a node id, not a pid) */
int seam_sandbox_insert(fb_core *c, const core_sandbox *s)
{
    fb_store_lock(c->store);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(fb_store_db(c->store),
                                "INSERT INTO sandboxes (id, team_id, key_id, backend, memory_mib, vcpus, "
                                "state, created_at, expires_at, daemon_pid) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8, ?9)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, s->team_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, s->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, s->backend, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)s->memory_mib);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)s->vcpus);
        sqlite3_bind_text(st, 7, s->created_at, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 8, s->expires_at, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)getpid());
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    } else {
        rc = -1;
    }
    sqlite3_finalize(st);
    fb_store_unlock(c->store);
    return rc;
}

/* moves to store repo: sandbox_repo.live_ids(node id) - today every live
 * record, whichever process owned it (the daemon_pid finding). */
size_t seam_sandbox_live_ids(fb_core *c, char (*ids)[40], size_t max)
{
    size_t n = 0;
    fb_store_lock(c->store);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(fb_store_db(c->store),
                           "SELECT id FROM sandboxes WHERE state IN ('creating', 'running') LIMIT 10000", -1, &st,
                           NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW && n < max)
            snprintf(ids[n++], 40, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    fb_store_unlock(c->store);
    return n;
}

/* ---- moves to sandbox ---------------------------------------------------------------- */

/* moves to sandbox: fb_sandbox_kill (nothing outside src/sandbox sees a pid) */
void seam_sandbox_kill(fb_sandbox *sb)
{
    if (sb && fb_sandbox_pid(sb) > 0)
        kill(fb_sandbox_pid(sb), SIGKILL);
}

/* ---- moves to proto: typed agent errors ------------------------------------------------ */

/* moves to proto: fb_sandbox_put/get return a typed code (not_found,
 * too_large, ...) and this classification goes.  Until then the agent's
 * code travels only as the "(code)" suffix src/sandbox writes, and the
 * size limit only as its message: this is the last place that reads them. */
fb_core_code seam_file_error_code(const fb_err *err)
{
    size_t n = strlen(err->msg);
    static const char nf[] = "(not_found)";
    if (n >= sizeof nf - 1 && memcmp(err->msg + n - (sizeof nf - 1), nf, sizeof nf - 1) == 0)
        return FB_CORE_NOT_FOUND;
    if (strstr(err->msg, "-byte limit"))
        return FB_CORE_TOO_LARGE;
    return FB_CORE_FILE_ERROR;
}

/* ---- moves to policy ------------------------------------------------------------------- */

/* moves to policy: visibility (admins see every team, others their own) */
bool seam_policy_visible(const fb_principal *p, const char *team_id)
{
    return p->is_admin || strcmp(team_id, p->team_id) == 0;
}

/* moves to policy: a key may not outlive the key that creates it */
int seam_policy_key_expiry(fb_core *c, const fb_caller *caller, const char *expires_at, fb_core_err *err)
{
    if (!caller->who.key_id[0])
        return 0;
    fb_api_key_info parent;
    memset(&parent, 0, sizeof parent);
    fb_err e = {{0}};
    if (fb_auth_key_get(c->store, caller->who.key_id, &parent, &e) != FB_AUTH_OK || !parent.expires_at[0])
        return 0;
    struct timespec pe, ce;
    bool ok = expires_at && fb_auth_time_parse(expires_at, &ce) == 0 &&
              fb_auth_time_parse(parent.expires_at, &pe) == 0 &&
              (ce.tv_sec < pe.tv_sec || (ce.tv_sec == pe.tv_sec && ce.tv_nsec <= pe.tv_nsec));
    if (!ok)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST,
                            "\"expires_at\" must be set and no later than the expiry of the key making it");
    return 0;
}

/* moves to policy: team quotas.  TODO(store merge): a team CPU quota key
 * (quotas.max_vcpus_per_team) arrives with the store helper's config
 * change; until then vCPUs are counted but not capped per team. */
bool seam_policy_quota_ok(const fb_config *cfg, const core_usage *used, const core_sandbox *s)
{
    uint64_t max_vcpus_per_team = UINT64_MAX;
    return used->count + 1 <= cfg->quotas.max_sandboxes_per_team &&
           used->memory_mib + s->memory_mib <= cfg->quotas.max_memory_mib_per_team &&
           used->vcpus + s->vcpus <= max_vcpus_per_team;
}

/* moves to policy + config: TODO(store merge): sandbox.max_vcpus arrives
 * with the store helper's config change; until then the compiled ceiling. */
uint64_t seam_policy_max_vcpus(const fb_config *cfg)
{
    (void)cfg;
    return FB_MAX_VCPUS;
}
