/*
 * core.h - the service layer: everything ForgeBox does on someone's behalf.
 *
 * Adapters (the HTTP gateway today; the task engine, console, E2B and MCP
 * adapters and the CLI later) translate their protocol into these calls
 * and nothing else.  Every call takes a caller (who: principal, actor,
 * source address, request id) and owns what it does end to end: the
 * permission decision and its audit entry, quotas, persistence, the
 * sandbox lifecycle and the audit entry of the outcome.  Nothing here
 * knows about HTTP; errors come back typed (fb_core_code plus a message)
 * and adapters map the code to their own statuses with a table.
 *
 * Sandboxes are reached through references (fb_sb_ref): opening one looks
 * it up, decides the permission against its team and audits that; the
 * reference keeps the sandbox's memory alive until it is put back, and
 * records the permission it was opened for, so a service that needs
 * sandboxes:exec refuses a reference opened for sandboxes:read.  Deleting
 * or expiring a sandbox never waits for anyone: it kills the sandbox, which
 * ends its execs, and whoever drops the last reference finishes the
 * destruction.
 */
#ifndef FB_CORE_H
#define FB_CORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "config/config.h"
#include "engine/engine.h"
#include "policy/policy.h"
#include "sandbox/sandbox.h"

/* ---- typed errors ---------------------------------------------------------- */

typedef enum fb_core_code {
    FB_CORE_OK = 0,
    FB_CORE_BAD_REQUEST,    /* the input broke a rule */
    FB_CORE_UNAUTHORIZED,   /* no or bad credentials */
    FB_CORE_FORBIDDEN,      /* known caller, not allowed */
    FB_CORE_NOT_FOUND,      /* absent, or another team's */
    FB_CORE_CONFLICT,       /* name taken */
    FB_CORE_TOO_LARGE,      /* over a size limit */
    FB_CORE_QUOTA,          /* the team's quota is used up */
    FB_CORE_FILE_ERROR,     /* the sandbox refused a file transfer */
    FB_CORE_SANDBOX_FAILED, /* the sandbox itself failed */
    FB_CORE_UNAVAILABLE,    /* cannot act now (out of memory, audit log unwritable, stopping) */
    FB_CORE_INTERNAL,       /* a bug or a store failure: details in the log only */
    FB_CORE_LOST,           /* nodes.mode remote: the sandbox's node stopped answering (410) */
} fb_core_code;
#define FB_CORE_NCODES (FB_CORE_LOST + 1)

typedef struct fb_core_err {
    fb_core_code code;
    char msg[512];
} fb_core_err;

/* Fills err and returns -1, so `return fb_core_fail(...)`. */
int fb_core_fail(fb_core_err *err, fb_core_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Stable lower-case name of a code ("not_found", ...). */
const char *fb_core_code_name(fb_core_code code);

/* ---- callers ----------------------------------------------------------------- */

typedef struct fb_caller {
    fb_principal who;       /* zeroed for anonymous callers */
    char actor[64];         /* "key:<id>", "system" or "" (anonymous) */
    char source_ip[64];
    char request_id[32];
    char action[96];        /* what was asked, for permission entries ("GET /v1/sandboxes") */
    fb_perm granted;        /* own-team permissions already decided and audited for this
                               request (fb_core_permit records them), so that a service
                               does not decide and audit a second time */
    char session_id[40];    /* "" unless a console session authenticated the caller */
    char csrf[48];          /* with session_id: the token its unsafe requests must carry */
    char session_expires_at[40]; /* with session_id: when the session ends (RFC 3339) */
    char auth_pending[96];  /* the resource of an authentication entry (outcome allowed)
                               not yet written (fb_core_audit_auth_defer), "" if none: the
                               caller's next audit entry carries it in the same commit */
    bool audit_overlap;     /* set by an adapter whose action may start while its allowed
                               permission entry on a LOCAL sandbox becomes durable
                               (fb_core_sandbox_open; docs/audit.md "Exec"): the entry is
                               queued in the chain at once and awaited by fb_core_audit_flush,
                               which the adapter calls before answering */
    struct fb_audit_pending *audit_inflight; /* that entry, queued and not yet awaited; never
                               copied with the caller (whoever copies clears it) */
} fb_caller;

/* ---- the service -------------------------------------------------------------- */

typedef struct fb_core fb_core;

/* Opens the store (which must be initialised), checks the audit chain
 * (a broken chain is logged, not fatal), clears sandboxes a previous
 * process left behind, and starts the reaper (TTLs, abandoned execs). */
int fb_core_open(const fb_config *cfg, const char *image_dir, fb_core **out, fb_err *err);
/* Destroys every live sandbox (audited with `reason`) and waits, bounded,
 * until they are gone.  Callable more than once. */
void fb_core_shutdown_sandboxes(fb_core *c, const char *reason);
/* Stops the threads, destroys what is left and closes the store. */
void fb_core_close(fb_core *c);
const fb_config *fb_core_config(const fb_core *c);
/* The organisation's name, as initialised. */
const char *fb_core_org(const fb_core *c);

/* ---- audit and decisions (core.c) ------------------------------------------- */

/* Appends one entry on behalf of caller (NULL: the system).  -1 when the
 * log cannot be written; callers about to allow something refuse then.
 * A deferred authentication entry of the caller (auth_pending) goes first,
 * in the same commit, and is then no longer pending. */
int fb_core_audit(fb_core *c, fb_caller *caller, const char *event, const char *resource,
                  const char *action, const char *outcome, const char *reason);
/* Decides whether caller may use `perm` on a resource of resource_team
 * (NULL or the caller's team for "in my own team"), audits the decision
 * under caller->action, and returns 0 or a typed refusal (FORBIDDEN,
 * NOT_FOUND, or UNAVAILABLE when an allow cannot be audited).  An own-team
 * allow is recorded in caller->granted.  Services call it themselves unless
 * the adapter already did (then they find the grant). */
int fb_core_permit(fb_core *c, fb_caller *caller, fb_perm perm, const char *resource,
                   const char *resource_team, fb_core_err *err);
/* Reading what spans every team (the audit log, metrics): admins only,
 * then `perm`; audited either way. */
int fb_core_permit_admin(fb_core *c, fb_caller *caller, fb_perm perm, const char *resource,
                         const char *what, fb_core_err *err);

/* ---- authentication (keys.c) ---------------------------------------------------- */

/* Authenticates an Authorization header value (NULL: none) and fills
 * caller->who (org gates from the configuration) and caller->actor.  A
 * failure answers UNAUTHORIZED (INTERNAL when the store failed) with
 * *reason naming why, for the audit entry.  Nothing is audited here: the
 * adapter rate-limits first (so that a flood of failures, or of requests
 * over a key's budget, cannot flood the log), then calls fb_core_audit_auth. */
int fb_core_authenticate(fb_core *c, fb_caller *caller, const char *header, size_t len,
                         const char **reason, fb_core_err *err);
/* The same for an adapter's own credential issued on a key's behalf (the
 * E2B listener's envd access token stands for the key that created the
 * sandbox): the key as it stands now, so revoking it, its expiry, its
 * owner's disabling and role changes apply to that credential at once. */
int fb_core_authenticate_key_id(fb_core *c, fb_caller *caller, const char *key_id, const char **reason,
                                fb_core_err *err);
/* The audit entry of an authentication: outcome "allowed", "denied" or
 * "error".  -1 when it cannot be written (refuse an allow then). */
int fb_core_audit_auth(fb_core *c, fb_caller *caller, const char *resource, const char *outcome,
                       const char *reason);
/* The entry of a successful authentication, written with the caller's next
 * audit entry (its permission decision) in one commit instead of a commit
 * of its own.  Nothing may be done for the caller before that entry
 * (every service decides a permission first, and that is audited); an
 * adapter that answers without one calls fb_core_audit_flush. */
void fb_core_audit_auth_defer(fb_caller *caller, const char *resource);
/* Waits for the caller's queued permission entry (audit_inflight) to be
 * durable, then writes a deferred authentication entry now (0 if there is
 * neither; -1 when either cannot be written).  Called before every answer. */
int fb_core_audit_flush(fb_core *c, fb_caller *caller);

/* ---- sandboxes (sandboxes.c) ----------------------------------------------------- */

/* What a sandbox looks like to callers. */
typedef struct fb_sandbox_info {
    char id[32];
    char team_id[40];
    char backend[8];
    uint64_t memory_mib, vcpus, disk_mib;
    char created_at[40], expires_at[40];
    char isolation[16];
    char node[72];                 /* nodes.mode remote: the node that runs it; else "" */
    char task_id[32];              /* "" unless a task's sandbox */
    bool has_network;
    fb_egress_list network;        /* the egress grant (has_network) */
} fb_sandbox_info;

/* A create request; zero fields take the configured defaults.  has_backend
 * false: the configured backend. */
typedef struct fb_sandbox_spec {
    bool has_backend;
    fb_backend_kind backend;
    bool has_memory, has_vcpus, has_disk, has_ttl;
    uint64_t memory_mib, vcpus, disk_mib, ttl_s;
    /* An egress grant: NULL, no network.  Needs network:internet (org-gated:
     * enabled when network.allow is not empty) and every entry inside
     * network.allow and outside network.deny (policy: fb_egress_grant_check);
     * audited.  The sandbox then reaches the egress proxy, and only it. */
    const fb_egress_list *network;
    /* Set by the task service only (adapters leave it NULL): the task the
     * sandbox belongs to, for the sandbox's JSON and egress audit entries. */
    const char *task_id;
} fb_sandbox_spec;

int fb_core_sandbox_create(fb_core *c, fb_caller *caller, const fb_sandbox_spec *spec,
                           fb_sandbox_info *out, fb_core_err *err);
/* The sandboxes caller may see: a new JSON-free array of infos. */
int fb_core_sandbox_list(fb_core *c, fb_caller *caller, fb_sandbox_info **out, size_t *n,
                         fb_core_err *err);

typedef struct fb_sb_ref fb_sb_ref;
/* Looks a sandbox up and decides `perm` against its team (audited; an
 * unknown id and another team's both answer NOT_FOUND).  Put it back with
 * fb_core_sandbox_put. */
int fb_core_sandbox_open(fb_core *c, fb_caller *caller, const char *id, fb_perm perm, fb_sb_ref **out,
                         fb_core_err *err);
void fb_core_sandbox_put(fb_core *c, fb_sb_ref *ref);
void fb_core_sandbox_info(const fb_sb_ref *ref, fb_sandbox_info *out);
/* Destroys the sandbox (needs a reference opened for sandboxes:create);
 * returns at once even while its execs wind down.  Consumes ref. */
int fb_core_sandbox_delete(fb_core *c, fb_caller *caller, fb_sb_ref *ref, fb_core_err *err);
/* Sets the sandbox's time to live to ttl_s from now (1..sandbox.max_ttl_s;
 * ref opened for sandboxes:create), audited; out (may be NULL) receives
 * the sandbox as it is now. */
int fb_core_sandbox_set_ttl(fb_core *c, fb_caller *caller, fb_sb_ref *ref, uint64_t ttl_s, fb_sandbox_info *out,
                            fb_core_err *err);

/* ---- execs (execs.c) ------------------------------------------------------------------
 *
 * An exec is a command started in a sandbox and read through the sandbox's
 * own event log (sandbox.h: fb_exec_next), so it outlives whoever started
 * it: a streamed exec's client may go and come back (within
 * limits.exec_reattach_s) and resume at any position.  Each is linked to its
 * sandbox's registry entry: retiring the sandbox kills it with the sandbox,
 * and the newest FB_EXEC_KEEP_FINISHED finished execs of a live sandbox stay
 * readable until the sandbox goes.  Handles are references: each is put
 * back with fb_core_exec_release, before fb_core_close. */

/* Limits checked before anything is sent to a sandbox (the sandbox checks
 * what the protocol can carry: FB_E_TOO_LARGE there is a 400 here). */
#define FB_EXEC_MAX_ARGS 4096
#define FB_EXEC_MAX_ENV 256
#define FB_EXEC_MAX_TIMEOUT_S 3600
#define FB_EXEC_DEFAULT_TIMEOUT_S 60
/* Finished execs kept readable per live sandbox (the newest ones). */
#define FB_EXEC_KEEP_FINISHED 16
/* ... while their logs together hold at most this many times
 * limits.max_output_bytes (the newest one is always kept). */
#define FB_EXEC_KEEP_FINISHED_OUTPUTS 2
/* ... for this long after their end (seconds), unless someone is reading. */
#define FB_EXEC_KEEP_FINISHED_S 60
#define FB_EXEC_ID_MAX 24

typedef struct fb_core_exec_spec {
    const char *const *argv;   /* NULL-terminated */
    const fb_env_var *env;     /* nenv key/value pairs, passed on as they are */
    size_t nenv;
    const char *cwd;           /* NULL: /workspace */
    uint64_t timeout_s;        /* 0: the default */
    const char *stdin_data;    /* NULL: no stdin */
    size_t stdin_len;
    bool stdin_pipe;           /* instead: stdin stays open, fed by fb_core_exec_write_stdin
                                  until fb_core_exec_close_stdin (or the end) */
} fb_core_exec_spec;

typedef enum fb_core_exec_mode {
    FB_EXEC_PLAIN,   /* the caller waits for the end; releasing the handle before it kills it */
    FB_EXEC_STREAM,  /* the caller reads events, attached; the command survives a detached
                        caller for limits.exec_reattach_s, then is cancelled */
} fb_core_exec_mode;

typedef struct fb_core_exec fb_core_exec;

/* Starts a command in the sandbox (ref opened for sandboxes:exec).  The
 * handle holds the exec, never the sandbox: put ref back at once.  A
 * request the protocol cannot carry is BAD_REQUEST and leaves the sandbox
 * as it was; 16 commands running already is CONFLICT. */
int fb_core_exec_start(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const fb_core_exec_spec *spec,
                       fb_core_exec_mode mode, fb_core_exec **out, fb_core_err *err);
/* An exec of the sandbox by id (running, or one of the newest finished);
 * NOT_FOUND otherwise.  attach: the caller reads its events (a streamed
 * exec then runs on while it is attached). */
int fb_core_exec_open(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const char *exec_id, bool attach,
                      fb_core_exec **out, fb_core_err *err);
const char *fb_core_exec_id(const fb_core_exec *x);
/* The event log at pos: fb_exec_next's contract (1 event, 0 nothing in
 * time, -1 past the end).  Free ev with fb_exec_event_clear. */
int fb_core_exec_next(fb_core_exec *x, uint64_t pos, fb_exec_event *ev, int timeout_ms);
/* true once the command has ended (waits up to timeout_ms, -1: no limit). */
bool fb_core_exec_wait(fb_core_exec *x, int timeout_ms);
/* Kills the command (its exit follows in the log).  caller non-NULL: an
 * API request, audited; NULL: the adapter's own (its client went away). */
void fb_core_exec_cancel(fb_core *c, fb_caller *caller, fb_core_exec *x);
/* Kills the command and waits for its end, at most timeout_ms; true when it
 * ended.  The kill is repeated while it runs: the agent kills a command's
 * process group, and a kill that reaches it before the command made its
 * group (just after the exec was sent) would otherwise be lost.  For a
 * command that must not go on (its permission entry could not be written). */
bool fb_core_exec_stop(fb_core_exec *x, int timeout_ms);

typedef struct fb_core_exec_status {
    char id[FB_EXEC_ID_MAX];
    char sandbox_id[32];
    char started_at[40];
    bool ended;
    fb_errc code;              /* ended: FB_OK (result holds the outcome) or why it failed */
    char message[512];
    fb_exec_result result;
    uint64_t dropped;          /* output bytes the log could not keep */
} fb_core_exec_status;
void fb_core_exec_status_of(fb_core_exec *x, fb_core_exec_status *st);
/* stdin of an exec started with stdin_pipe: writes all of data (waiting
 * up to timeout_ms for the command to read); CONFLICT once stdin is closed
 * or the command ended, UNAVAILABLE when it does not read in time. */
int fb_core_exec_write_stdin(fb_core_exec *x, const void *data, size_t len, int timeout_ms, fb_core_err *err);
/* The command sees the end of its input.  Idempotent. */
void fb_core_exec_close_stdin(fb_core_exec *x);
bool fb_core_exec_has_stdin(fb_core_exec *x);
/* The caller is done with x: a PLAIN exec still running is killed, an
 * attached reader detaches. */
void fb_core_exec_release(fb_core_exec *x);

/* ---- files (files.c) -------------------------------------------------------------------- */

/* An upload streamed into the sandbox as it arrives (bounded memory). */
typedef struct fb_upload fb_upload;
int fb_core_upload_begin(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const char *path,
                         fb_upload **out, fb_core_err *err);
int fb_core_upload_write(fb_upload *u, const void *data, size_t len, fb_core_err *err);
/* Ends the upload: 0 with the size written, or -1.  Frees u. */
int fb_core_upload_finish(fb_upload *u, uint64_t *size, fb_core_err *err);
/* The body did not arrive whole: the transfer fails (audited).  Frees u. */
void fb_core_upload_abort(fb_upload *u);

/* Copies a sandbox file into fd (a memfd the caller sends on). */
int fb_core_file_get(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const char *path, int fd,
                     fb_core_err *err);

/* ---- tasks (tasks*.c) ---------------------------------------------------------------------
 *
 * A task is a model working through tools in a sandbox of its own (the
 * engine, engine.h), on behalf of its creator and inside its creator's
 * team.  The service owns: validating the request against policy (tools
 * within the creator's tool-class permissions, approvals, org-forced
 * approvals, budgets within the org maxima, network grant), the sandbox
 * (created at start through fb_core_sandbox_create, counted in the team's
 * quota; kept after the model stops for follow-up messages until the
 * task's TTL, destroyed when the task ends otherwise), a thread per running
 * task, the decision and audit of every tool call, approvals (held until a
 * person with tasks:approve in the task's team decides, or
 * tasks.approval_timeout_s denies them), the transcript as numbered events
 * (stored, replayable, followed live) and the task's record in the store.
 * A gateway restart marks tasks it finds running failed ("the gateway
 * restarted while the task was running").
 *
 * JSON shapes (docs/openapi.yaml):
 *   task     {id, state, prompt, provider, model, backend, sandbox_id, team_id, created_by,
 *             tools: [s], approvals: [s], network: {allow: [s]} | null,
 *             limits: {max_turns, max_tokens, max_tool_calls, timeout_s},
 *             usage: {input_tokens, output_tokens, turns, tool_calls},
 *             result: s|null, error: s|null, created_at, started_at|null, finished_at|null}
 *   approval {id, task_id, call_id, tool, input, state: pending|approved|denied|expired,
 *             created_at, expires_at, decided_at|null, decided_by|null, reason|null}
 *   event    {seq, type, at, data}; types: "message" {role, content}, "state" {state,
 *             error?, result?}, "text", "tool_call", "tool_result", "usage" (engine.h),
 *             "approval_required" {approval_id, call_id, tool, input, expires_at},
 *             "approval_resolved" {approval_id, call_id, decision: approved|denied|expired,
 *             decided_by?, reason?}
 */

#define FB_TASK_PROMPT_MAX (256u * 1024)

typedef struct fb_task_spec {
    const char *prompt;             /* required, 1..FB_TASK_PROMPT_MAX bytes of UTF-8 */
    const char *system;             /* NULL: fb_engine_default_system() */
    const char *provider;           /* a name under providers: */
    const char *model;
    bool has_backend;
    fb_backend_kind backend;
    bool has_tools;
    fb_toolset tools;               /* !has_tools: bash and the file tools the creator may grant */
    fb_toolset approvals;           /* held for a person (tasks.require_approval adds to it) */
    const fb_egress_list *network;  /* NULL: none */
    fb_engine_limits limits;        /* 0 fields: tasks.* defaults; above a maximum: BAD_REQUEST */
} fb_task_spec;

/* Creates and starts a task (tasks:create, plus network:internet with a
 * grant); *out is the task's JSON (201). */
int fb_core_task_create(fb_core *c, fb_caller *caller, const fb_task_spec *spec, json_t **out,
                        fb_core_err *err);
/* {"tasks": [task...]}: the caller's team's (every team's for an admin), newest first. */
int fb_core_task_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err);

typedef struct fb_task_ref fb_task_ref;
/* Looks a task up (live or stored) and decides `perm` against its team
 * (audited; unknown and another team's are both NOT_FOUND). */
int fb_core_task_open(fb_core *c, fb_caller *caller, const char *id, fb_perm perm, fb_task_ref **out,
                      fb_core_err *err);
void fb_core_task_put(fb_core *c, fb_task_ref *ref);

int fb_core_task_get(fb_core *c, fb_caller *caller, fb_task_ref *ref, json_t **out, fb_core_err *err);
/* Stops a task that has not ended (tasks:cancel): CANCELLED, its sandbox
 * destroyed.  Cancelling an ended task is CONFLICT. */
int fb_core_task_cancel(fb_core *c, fb_caller *caller, fb_task_ref *ref, json_t **out, fb_core_err *err);
/* A follow-up user message (tasks:create): continues the conversation in
 * the same sandbox.  Only a SUCCEEDED task whose sandbox is still kept;
 * otherwise CONFLICT. */
int fb_core_task_message(fb_core *c, fb_caller *caller, fb_task_ref *ref, const char *content, json_t **out,
                         fb_core_err *err);
/* {"approvals": [approval...]} (tasks:read). */
int fb_core_task_approvals(fb_core *c, fb_caller *caller, fb_task_ref *ref, json_t **out, fb_core_err *err);
/* Decides a pending approval (ref opened for tasks:approve).  FORBIDDEN
 * for the task's creator while tasks.self_approval is false; CONFLICT when
 * it is no longer pending; NOT_FOUND for an unknown approval id. */
int fb_core_task_decide(fb_core *c, fb_caller *caller, fb_task_ref *ref, const char *approval_id, bool approve,
                        const char *reason, json_t **out, fb_core_err *err);
/* The transcript: the event after sequence number `after` (0: the first).
 * 1 with *ev (new reference), 0 when none came within timeout_ms, -1 when
 * the task has ended and `after` is its last event. */
int fb_core_task_events_next(fb_core *c, fb_task_ref *ref, uint64_t after, json_t **ev, int timeout_ms);

/* ---- identity (keys.c, users.c, teams.c) -------------------------------------------------- */

/* Creates a key for owner_user_id (NULL: the caller); key_out receives the
 * secret (wipe it); info the metadata as JSON (new reference). */
int fb_core_key_create(fb_core *c, fb_caller *caller, const char *owner_user_id, const char *name,
                       fb_perm scopes, const char *expires_at, char *key_out, size_t key_cap, json_t **info,
                       fb_core_err *err);
int fb_core_key_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err);
int fb_core_key_revoke(fb_core *c, fb_caller *caller, const char *key_id, fb_core_err *err);

int fb_core_user_create(fb_core *c, fb_caller *caller, const char *username, const char *password,
                        const char *team_id, fb_role role, json_t **out, fb_core_err *err);
int fb_core_user_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err);
int fb_core_team_create(fb_core *c, fb_caller *caller, const char *name, json_t **out, fb_core_err *err);
int fb_core_team_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err);

/* ---- audit reads and metrics (audit_read.c) ------------------------------------------------ */

typedef struct fb_audit_query_args {
    const char *actor, *action, *outcome, *since, *until;
    const char *limit, *after_seq; /* text, as given */
} fb_audit_query_args;
int fb_core_audit_list(fb_core *c, fb_caller *caller, const fb_audit_query_args *q, json_t **out,
                       fb_core_err *err);
int fb_core_audit_verify(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err);
/* Prometheus text (admins only); free it. */
int fb_core_metrics(fb_core *c, fb_caller *caller, char **text, fb_core_err *err);
/* Counts one answered request (route pattern, status). */
void fb_core_metrics_request(const char *route, int status);
void fb_core_metrics_auth_failure(void);

/* ---- console sessions (sessions.c) ---------------------------------------------------------
 *
 * A console login is a password check (argon2id, fb_auth_password_login)
 * that opens a session: a random token ("fbs_" and 43 base64url
 * characters, 256 bits) the browser keeps in an HttpOnly cookie, of which
 * the store keeps only a BLAKE2b-256 digest.  The session's CSRF token is
 * derived from the token (keyed BLAKE2b), so it is not stored either.  A
 * session lasts console.session_ttl_s; a user holds at most
 * console.max_sessions_per_user (a new login ends the oldest).  Failed
 * logins are counted per username and per source address in 15-minute
 * windows (console.max_login_failures, four times that per address);
 * beyond, logins are refused with QUOTA before any password is checked.
 * Logins (allowed, denied, refused), logouts, evictions and expiries are
 * audited (event "session"). */

#define FB_SESSION_TOKEN_MAX 48 /* "fbs_" + 43 + NUL */
#define FB_SESSION_CSRF_MAX 48  /* 43 + NUL */

/* Opens a session for username/password.  token_out receives the token
 * (for the cookie; wipe it), *out {session_id, csrf_token, user: {id,
 * username, team_id, role}, permissions: [the role's], expires_at} (new
 * reference).  UNAUTHORIZED for
 * any wrong credential (one message whatever the reason), QUOTA with
 * *retry_after_s when failures are over the limit. */
int fb_core_session_login(fb_core *c, fb_caller *caller, const char *username, const char *password,
                          char token_out[FB_SESSION_TOKEN_MAX], json_t **out, int *retry_after_s,
                          fb_core_err *err);
/* Authenticates a session token (len bytes, not NUL-terminated): fills
 * caller->who (the user's role and team; no key: scopes are the role's),
 * caller->actor ("user:<id>"), caller->session_id and caller->csrf.
 * UNAUTHORIZED with *reason ("malformed", "unknown", "expired" - that
 * session is ended and audited -, "disabled"), INTERNAL when the store
 * failed.  Success is not audited here (the adapter does it, after its
 * rate limits and CSRF checks). */
int fb_core_session_authenticate(fb_core *c, fb_caller *caller, const char *token, size_t len,
                                 const char **reason, fb_core_err *err);
/* {session_id, csrf_token, user, permissions} of the caller's session;
 * NOT_FOUND when the caller came in with an API key. */
int fb_core_session_current(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err);
/* Ends the caller's session (audited); NOT_FOUND without one. */
int fb_core_session_logout(fb_core *c, fb_caller *caller, fb_core_err *err);

/* ---- logging (log.c) ---------------------------------------------------------------------- */

/* One JSON object per line on stderr.  Fields named like secrets (key,
 * token, password, secret, authorization) are redacted. */
void fb_log(const char *level, const char *request_id, const char *msg, json_t *fields /* stolen */);
void fb_log_set_level(const char *level);

#endif
