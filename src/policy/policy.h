/*
 * policy.h - the permission model: permission names, roles, principals and
 * the one function that decides whether a principal may do something.
 *
 * Pure logic: no I/O, no allocation, no global state.  Everything the
 * decision needs is in its arguments, so a decision can be replayed from an
 * audit entry and every branch is unit-testable.
 *
 * Deny by default.  A zero-filled fb_principal holds no role, no scopes and
 * no org enables, and is denied everything.
 *
 * Evaluation order (DESIGN.md, "Identity and permissions"); the first step
 * that says no decides, and its reason is the decision's reason:
 *
 *   1. org policy     permissions in FB_PERM_ORG_GATED (network:internet)
 *                     are denied organisation-wide unless the operator's
 *                     configuration enables them; the caller copies that
 *                     into fb_principal.org_enabled.  No role, key or grant
 *                     can override it.
 *   2. role           the principal's role must grant every needed bit.
 *   3. key scope      effective = role ∩ scopes; a principal that did not
 *                     come in through an API key (a console login) carries
 *                     its role's permissions (FB_PERM_ALL would do the same).
 *   4. resource team  a resource of another team is answered NOT_FOUND (the
 *                     caller replies 404, never 403, so ids of other teams'
 *                     resources cannot be probed).  Only admins cross teams.
 *   (task grants and tool classes: "tasks" at the end of this header.)
 *
 * One exception to "first no decides": for a non-admin, another team's
 * resource is NOT_FOUND even when an earlier step would have denied.  A
 * 403 would confirm that the resource exists; to the caller it must look
 * exactly like an id that exists nowhere.  (For admins the team step
 * never says no, so the order is unaffected.)
 *
 * Roles (fixed; FB_ROLE_* below):
 *
 *   permission         admin  developer  operator  viewer
 *   tasks:create         x        x
 *   tasks:read           x        x          x        x
 *   tasks:cancel         x        x          x
 *   tools:shell          x        x
 *   tools:http           x        x
 *   network:internet     x
 *   admin:users          x
 *   admin:config         x
 *   sandboxes:create     x        x
 *   sandboxes:read       x        x          x        x
 *   sandboxes:exec       x        x
 *   audit:read           x                   x
 *   keys:manage          x        x          x
 *   tasks:approve        x        x          x
 *   tools:files          x        x
 *   tools:edit           x        x
 *
 * Tool classes: a task may be given a tool only when its creator holds the
 * tool's class permission (tools:shell: bash, git; tools:files: file_read,
 * glob, grep; tools:edit: file_write, file_edit; tools:http: web_fetch).
 *
 * keys:manage is the right to create, list and revoke one's *own* API keys;
 * acting on another user's keys needs an admin (see auth.h).
 */
#ifndef FB_POLICY_H
#define FB_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/util.h"

/* ---- permissions --------------------------------------------------------- */

/* One bit per permission; a set of permissions is an fb_perm mask. */
typedef uint32_t fb_perm;
enum {
    FB_PERM_TASKS_CREATE     = 1u << 0,  /* tasks:create */
    FB_PERM_TASKS_READ       = 1u << 1,  /* tasks:read */
    FB_PERM_TASKS_CANCEL     = 1u << 2,  /* tasks:cancel */
    FB_PERM_TOOLS_SHELL      = 1u << 3,  /* tools:shell */
    FB_PERM_TOOLS_HTTP       = 1u << 4,  /* tools:http */
    FB_PERM_NETWORK_INTERNET = 1u << 5,  /* network:internet */
    FB_PERM_ADMIN_USERS      = 1u << 6,  /* admin:users */
    FB_PERM_ADMIN_CONFIG     = 1u << 7,  /* admin:config */
    FB_PERM_SANDBOXES_CREATE = 1u << 8,  /* sandboxes:create */
    FB_PERM_SANDBOXES_READ   = 1u << 9,  /* sandboxes:read */
    FB_PERM_SANDBOXES_EXEC   = 1u << 10, /* sandboxes:exec */
    FB_PERM_AUDIT_READ       = 1u << 11, /* audit:read */
    FB_PERM_KEYS_MANAGE      = 1u << 12, /* keys:manage (one's own keys) */
    FB_PERM_TASKS_APPROVE    = 1u << 13, /* tasks:approve (decide a held tool call) */
    FB_PERM_TOOLS_FILES      = 1u << 14, /* tools:files (file_read, glob, grep) */
    FB_PERM_TOOLS_EDIT       = 1u << 15, /* tools:edit (file_write, file_edit) */
};
#define FB_PERM_COUNT 16
#define FB_PERM_ALL   ((fb_perm)((1u << FB_PERM_COUNT) - 1))
/* Denied organisation-wide unless enabled in fb_principal.org_enabled. */
#define FB_PERM_ORG_GATED ((fb_perm)FB_PERM_NETWORK_INTERNET)

/* "tasks:create" -> FB_PERM_TASKS_CREATE; 0 for NULL or an unknown name
 * (exact, case-sensitive match). */
fb_perm fb_perm_from_name(const char *name);
/* The name of exactly one permission bit; NULL for 0, several bits or an
 * unknown bit. */
const char *fb_perm_name(fb_perm one);
/* The i-th permission bit (0 <= i < FB_PERM_COUNT), in canonical order. */
fb_perm fb_perm_at(size_t i);

/* Longest output of fb_perms_format_json, NUL included. */
#define FB_PERMS_JSON_MAX 400
/* Text of a JSON array of permission names (e.g. '["tasks:read"]') ->
 * mask.  Anything but an array of known names is an error whose message
 * names the offending element (sanitised, truncated).  Duplicates are
 * harmless; [] is the empty mask.  Input is capped at 4096 bytes. */
int fb_perms_parse_json(const char *text, fb_perm *out, fb_err *err);
/* The same from an already parsed jansson value (a request body field). */
int fb_perms_from_json(const json_t *array, fb_perm *out, fb_err *err);
/* Mask -> '["tasks:create","tasks:read"]' in canonical order, no spaces.
 * Fails on unknown bits or when cap is too small (FB_PERMS_JSON_MAX is
 * always enough). */
int fb_perms_format_json(fb_perm mask, char *out, size_t cap);
/* Mask -> new jansson array of names (NULL on unknown bits or no memory). */
json_t *fb_perms_to_json(fb_perm mask);

/* ---- tools a task's model may call ------------------------------------------ */

typedef enum fb_tool {
    FB_TOOL_BASH = 0,
    FB_TOOL_FILE_READ,
    FB_TOOL_FILE_WRITE,
    FB_TOOL_FILE_EDIT,
    FB_TOOL_GLOB,
    FB_TOOL_GREP,
    FB_TOOL_GIT,
    FB_TOOL_WEB_FETCH,
    FB_TOOL_COUNT,
} fb_tool;

/* A set of tools: bit (1u << fb_tool). */
typedef uint32_t fb_toolset;
#define FB_TOOLSET_ALL ((fb_toolset)((1u << FB_TOOL_COUNT) - 1))
#define FB_TOOLSET_OF(t) ((fb_toolset)1u << (t))

/* "bash" -> FB_TOOL_BASH ...; -1 for NULL or an unknown name (exact match). */
int fb_tool_from_name(const char *name, fb_tool *out);
/* "bash", "file_read", ...; NULL when out of range. */
const char *fb_tool_name(fb_tool t);
/* The class permission a creator needs to give a task tool t. */
fb_perm fb_tool_perm(fb_tool t);
/* A JSON array of tool names -> set; an error names the bad element. */
int fb_toolset_from_json(const json_t *array, fb_toolset *out, fb_err *err);
/* Set -> new JSON array of names in canonical order (NULL: no memory). */
json_t *fb_toolset_to_json(fb_toolset set);

/* ---- roles ----------------------------------------------------------------- */

typedef enum fb_role {
    FB_ROLE_NONE = 0, /* no permissions at all: what a zeroed principal has */
    FB_ROLE_ADMIN,
    FB_ROLE_DEVELOPER,
    FB_ROLE_OPERATOR,
    FB_ROLE_VIEWER,
} fb_role;

/* "admin" -> FB_ROLE_ADMIN ...; FB_ROLE_NONE for NULL or anything else. */
fb_role fb_role_from_name(const char *name);
/* "admin", "developer", "operator", "viewer"; "none" for FB_ROLE_NONE and
 * out-of-range values. */
const char *fb_role_name(fb_role role);
/* The role's permissions (the table above); 0 for FB_ROLE_NONE. */
fb_perm fb_role_perms(fb_role role);

/* ---- principals and decisions --------------------------------------------- */

#define FB_ID_MAX 40

/* Who is acting.  Filled by auth (fb_auth_key_authenticate,
 * fb_auth_password_login); org_enabled is filled by the caller from the
 * configuration. */
typedef struct fb_principal {
    char user_id[FB_ID_MAX];
    char team_id[FB_ID_MAX];
    fb_role role;
    char key_id[FB_ID_MAX]; /* "" when not authenticated by an API key */
    fb_perm scopes;         /* the key's scopes; without a key, the role's
                               permissions (or FB_PERM_ALL: same effect) */
    bool is_admin;          /* role == FB_ROLE_ADMIN; both must agree */
    fb_perm org_enabled;    /* which FB_PERM_ORG_GATED bits config enables */
} fb_principal;

typedef enum fb_verdict {
    FB_DENY = 0,      /* 403 */
    FB_ALLOW,
    FB_NOT_FOUND,     /* 404: the resource is another team's */
    FB_NEEDS_APPROVAL, /* tool and egress decisions: ask a human first */
} fb_verdict;

typedef struct fb_decision {
    fb_verdict verdict;
    char reason[160]; /* for the audit entry and the error message */
} fb_decision;

/* Decides whether p may exercise every permission in `needed` (usually one
 * bit) on a resource owned by resource_team_id (NULL when the action is
 * not about one team's resource: org-wide admin actions, or creating
 * something in p's own team).  Fills *out and returns out->verdict.
 * needed == 0 or unknown bits, a NULL principal, or an inconsistent one
 * (is_admin disagreeing with role) are denied with a reason saying so.
 * Reasons look like "role viewer lacks tasks:cancel", "key scope lacks
 * sandboxes:exec", "network:internet is disabled by organisation policy",
 * "resource belongs to another team", "allowed (admin, across teams)",
 * "allowed".
 *
 * A handler for one resource looks it up first, answers 404 if it does not
 * exist, then decides with its team: unknown ids and other teams' ids then
 * both answer 404, whatever the caller's permissions. */
fb_verdict fb_policy_decide(const fb_principal *p, fb_perm needed, const char *resource_team_id,
                            fb_decision *out);

/* What p can actually do, team aside: org ∩ role ∩ scopes (0 for an
 * inconsistent principal).  For "who am I" answers. */
fb_perm fb_policy_effective(const fb_principal *p);

/* "allow", "deny", "not_found", "needs_approval". */
const char *fb_verdict_name(fb_verdict v);

/* ---- rules about resources (rules.c) ---------------------------------------- */

/* Visibility: p may see a resource of team_id when it is p's own team or
 * p is an admin.  False for a NULL principal, an inconsistent one, or an
 * empty/NULL team. */
bool fb_policy_can_see(const fb_principal *p, const char *team_id);
/* Whether p sees every team's resources (listings need no team filter). */
bool fb_policy_sees_all_teams(const fb_principal *p);
/* An org gate: what spans every team (the audit log, metrics of the whole
 * organisation) is for admins only, whatever their keys' scopes say; the
 * permission itself is decided by fb_policy_decide as usual.  `what`
 * names it in the reason. */
fb_verdict fb_policy_org_wide(const fb_principal *p, const char *what, fb_decision *out);

/* What a key-management request is about, for the reasons' wording. */
typedef enum fb_key_action {
    FB_KEY_CREATE,
    FB_KEY_REVOKE,
} fb_key_action;

/* The owner/ceiling rule for acting on owner_user_id's API keys: the owner
 * needs keys:manage; anyone else must be an admin (NOT_FOUND otherwise:
 * another user's keys do not exist for them) holding admin:users.  The
 * ceiling is role ∩ scopes (the org gate plays no part). */
fb_verdict fb_policy_key_manage(const fb_principal *actor, const char *owner_user_id, fb_key_action action,
                                fb_decision *out);

/* A key cannot mint a key stronger than itself: requested must fit within
 * actor's role ∩ scopes.  DENY names the excess. */
fb_verdict fb_policy_key_within_actor(const fb_principal *actor, fb_perm requested, fb_decision *out);

/* A key's scopes must fit within its owner's role.  DENY names the excess. */
fb_verdict fb_policy_key_within_role(fb_role owner_role, fb_perm requested, fb_decision *out);

/* A key cannot outlive the key that creates it: parent_expires NULL means
 * the parent never expires (anything goes); otherwise child_expires must
 * be set (NULL: never, refused) and no later than parent_expires. */
fb_verdict fb_policy_key_expiry(const struct timespec *parent_expires, const struct timespec *child_expires,
                                fb_decision *out);

/* A team's live sandboxes, or one sandbox's request. */
typedef struct fb_quota_usage {
    uint64_t count;
    uint64_t memory_mib;
    uint64_t vcpus;
} fb_quota_usage;

typedef struct fb_quota_limits {
    uint64_t max_count;      /* quotas.max_sandboxes_per_team */
    uint64_t max_memory_mib; /* quotas.max_memory_mib_per_team */
    uint64_t max_vcpus;      /* quotas.max_vcpus_per_team */
} fb_quota_limits;

/* Whether one more sandbox of size request (its count is taken as 1)
 * fits beside usage within limits; DENY names the first limit it would
 * pass ("team quota exceeded: 10 of 10 sandboxes in use").  No overflow:
 * sums are checked against the limits by subtraction. */
fb_verdict fb_policy_quota(const fb_quota_usage *usage, const fb_quota_usage *request,
                           const fb_quota_limits *limits, fb_decision *out);

/* ---- egress: network grants and destination addresses (egress.c) ----------
 *
 * The grammar of a network grant, the organisation ceiling (network.allow)
 * and network.deny, which are all lists of entries:
 *
 *   host.example.com        that exact host name, ports 80 and 443
 *   *.example.com           any subdomain of example.com (not example.com)
 *   host.example.com:8443   that host, that port only (also *.d:PORT)
 *
 * Names are case-insensitive (stored lowercased, one trailing dot dropped),
 * letters, digits and hyphens in labels of 1..63, at most 253 in all, at
 * least two labels.  Refused with an error naming the entry: IP literals
 * in every spelling inet_aton(3) accepts (127.1, 2130706433, 0x7f.1,
 * 017700000001) and IPv6 (bracketed or not), a numeric last label, "*",
 * a wildcard anywhere but the whole first label, a wildcard over a single
 * label ("*.com"), URLs, paths, user info, empty labels, ports outside
 * 1..65535.
 *
 * In network.deny an entry without a port denies every port.
 */

#define FB_EGRESS_HOST_MAX    253
#define FB_EGRESS_MAX_ENTRIES 64

typedef struct fb_egress_entry {
    char host[FB_EGRESS_HOST_MAX + 1]; /* lowercased; for a wildcard, the domain after "*." */
    bool wildcard;                     /* "*.host": subdomains of host, never host itself */
    uint16_t port;                     /* 0: none given (80 and 443; in a deny list: all) */
} fb_egress_entry;

typedef struct fb_egress_list {
    size_t count;
    fb_egress_entry entries[FB_EGRESS_MAX_ENTRIES];
} fb_egress_list;

/* What the parsers below return: FB_EGRESS_OK, or the kind of error (the
 * fb_err carries the message, which names the offending entry). */
typedef enum fb_egress_code {
    FB_EGRESS_OK = 0,
    FB_EGRESS_EINVAL,    /* the entry is not in the grammar; err names it and why */
    FB_EGRESS_ELITERAL,  /* an IP literal where a host name is needed */
    FB_EGRESS_ETOOMANY,  /* more than FB_EGRESS_MAX_ENTRIES entries */
} fb_egress_code;

/* One entry ("pypi.org", "*.pythonhosted.org", "api.example.com:8443"). */
fb_egress_code fb_egress_entry_parse(const char *text, fb_egress_entry *out, fb_err *err);
/* A host name alone (what a client asks the proxy for): the same checks as
 * an entry without wildcard or port; out gets the canonical form
 * (lowercased, trailing dot dropped).  cap must be > FB_EGRESS_HOST_MAX. */
fb_egress_code fb_egress_host_parse(const char *text, char *out, size_t cap, fb_err *err);
/* Appends one parsed entry; duplicates are kept once. */
fb_egress_code fb_egress_list_add(fb_egress_list *list, const char *text, fb_err *err);
/* A whole list from n strings; *out is reset first.  The first bad entry
 * fails the whole list. */
fb_egress_code fb_egress_list_parse(const char *const *texts, size_t n, fb_egress_list *out, fb_err *err);
/* "pypi.org", "*.pythonhosted.org:8443": the canonical text of an entry. */
void fb_egress_entry_format(const fb_egress_entry *e, char *out, size_t cap);

/* Whether host (canonical) and port fall inside e.  deny_style: a port-less
 * entry means every port instead of 80 and 443. */
bool fb_egress_entry_matches(const fb_egress_entry *e, const char *host, uint16_t port, bool deny_style);
/* Whether everything inner allows, outer allows too. */
bool fb_egress_entry_within(const fb_egress_entry *inner, const fb_egress_entry *outer);

/* A grant at creation: every entry must fall inside some ceiling entry and
 * none may lie wholly inside a network.deny entry (a partial overlap, such
 * as "*.example.com" beside a denied "secret.example.com", is decided per
 * connection, where deny wins).  DENY names the first entry that fails
 * ("network grant entry 'x.org' is outside the organisation's network.allow").
 * ceiling NULL: no ceiling (`forgebox run`, the host's own operator); deny
 * may be NULL. */
fb_verdict fb_egress_grant_check(const fb_egress_list *grant, const fb_egress_list *ceiling,
                                 const fb_egress_list *deny, fb_decision *out);

/* One connection request: host (as the client sent it, checked and
 * canonicalised here) and port against the sandbox's grant, the ceiling
 * (NULL: none) and deny (NULL: none; it always wins).  The reason says
 * which rule decided: "IP literal", "not in this sandbox's allowlist",
 * "denied by network.deny", "outside network.allow", "allowed by grant
 * entry 'x'". */
fb_verdict fb_egress_decide(const char *host, uint16_t port, const fb_egress_list *grant,
                            const fb_egress_list *ceiling, const fb_egress_list *deny, fb_decision *out);

/* A resolved destination: family AF_INET (bytes[0..3]) or AF_INET6. */
typedef struct fb_egress_addr {
    int family;
    uint8_t bytes[16];
    uint16_t port; /* host order; 0 where it plays no part */
} fb_egress_addr;

typedef enum fb_addr_class {
    FB_ADDR_PUBLIC = 0,
    FB_ADDR_THIS_NETWORK, /* 0.0.0.0/8, :: */
    FB_ADDR_LOOPBACK,     /* 127/8, ::1 */
    FB_ADDR_PRIVATE,      /* 10/8, 172.16/12, 192.168/16, fc00::/7 */
    FB_ADDR_LINK_LOCAL,   /* 169.254/16 (cloud metadata), fe80::/10 */
    FB_ADDR_CGNAT,        /* 100.64/10 */
    FB_ADDR_MULTICAST,    /* 224/4, ff00::/8 */
    FB_ADDR_BROADCAST,    /* 255.255.255.255 */
    FB_ADDR_DOCUMENTATION,/* 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20 */
    FB_ADDR_RESERVED,     /* 192.0.0/24, 192.88.99/24, 198.18/15, 240/4, Teredo,
                             fec0::/10, 64:ff9b:1::/48, everything outside 2000::/3 */
} fb_addr_class;

/* The class of an address.  IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
 * (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48) forms
 * take the class of the IPv4 address inside them. */
fb_addr_class fb_egress_addr_class(const fb_egress_addr *a);
/* "public", "loopback", "private", "link-local", ... */
const char *fb_addr_class_name(fb_addr_class c);
/* "127.0.0.1:8080" or "[::1]:8080" (numeric only, port required) -> *out.
 * An allow_private entry, or a network.hosts address with port 0 allowed
 * when allow_no_port. */
fb_egress_code fb_egress_addr_parse(const char *text, bool allow_no_port, fb_egress_addr *out, fb_err *err);
/* "127.0.0.1:8080", "[::1]:443" (port omitted when 0). */
void fb_egress_addr_format(const fb_egress_addr *a, char *out, size_t cap);
/* Whether the proxy may connect to a (its port included): public
 * addresses yes; any other class only when allow_private lists exactly
 * that address and port (an IPv4-mapped address compares as its IPv4). */
fb_verdict fb_egress_addr_decide(const fb_egress_addr *a, const fb_egress_addr *allow_private, size_t n_private,
                                 fb_decision *out);


/* ---- tasks: grants, tool calls, approvals, budgets (tasks.c) ----------------
 *
 * A task may use a tool only when its creator may grant it (holds the
 * tool's class, fb_tool_perm, within fb_policy_effective); every call the
 * model makes is decided against the task's own grant; calls to tools in
 * the task's approvals, or in the organisation's tasks.require_approval
 * (which a task cannot lift), wait for a person with tasks:approve in the
 * task's team (admins across teams), who is not the task's creator unless
 * tasks.self_approval is set. */

/* The tools p may give a task. */
fb_toolset fb_policy_task_grantable(const fb_principal *p);
/* What a request without "tools" gets: bash and the file tools
 * (file_read, file_write, file_edit, glob, grep) that p may grant. */
fb_toolset fb_policy_task_default_tools(const fb_principal *p);
/* A task request's tools and approvals: every tool named in either must be
 * grantable by p.  DENY names the first tool (in canonical order) and the
 * class permission p lacks ("tool bash needs tools:shell, which this key
 * does not hold"). */
fb_verdict fb_policy_task_tools(const fb_principal *p, fb_toolset tools, fb_toolset approvals, fb_decision *out);
/* One tool call: tool is an fb_tool or -1 (a name ForgeBox has no tool
 * for; name is what the model said, shown sanitised).  DENY "tool X was
 * not granted to this task" (or "no tool named X"); NEEDS_APPROVAL when
 * the tool is in held (the task's approvals and the org's forced ones);
 * ALLOW otherwise. */
fb_verdict fb_policy_task_call(fb_toolset granted, fb_toolset held, int tool, const char *name, fb_decision *out);
/* Who may decide a held call of a task of task_team created by
 * creator_user_id: tasks:approve on the task's team (fb_policy_decide:
 * NOT_FOUND for another team's task unless admin), and not the creator
 * unless self_approval. */
fb_verdict fb_policy_task_approver(const fb_principal *p, const char *task_team, const char *creator_user_id,
                                   bool self_approval, fb_decision *out);

/* A task's budgets (the same four as the engine's). */
typedef struct fb_task_budget {
    uint64_t max_turns, max_tokens, max_tool_calls, timeout_s;
} fb_task_budget;
/* The budgets a task runs with: each requested field, or 0 for the default
 * (defaults above a maximum are lowered to it).  A request above the
 * organisation's maximum is DENY naming the field ("limits.max_turns 500
 * is above the organisation's maximum of 100"). */
fb_verdict fb_policy_task_budget(const fb_task_budget *requested, const fb_task_budget *defaults,
                                 const fb_task_budget *maxima, fb_task_budget *out, fb_decision *d);

#endif
