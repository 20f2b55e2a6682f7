/*
 * errors.h - the typed error codes of the sandbox runtime, end to end.
 *
 * One enum for everything that can go wrong with a request to a sandbox:
 * the codes the agent answers with (their wire strings are the protocol's,
 * docs/protocol.md), the outcomes of a command that never started, and what
 * the host decides about a sandbox that misbehaved, died or was killed.
 * The agent sends the wire string; the host parses it back into the enum
 * once, at the edge; every caller above (CLI, gateway) switches on the enum
 * and never on a message.
 */
#ifndef FB_PROTO_ERRORS_H
#define FB_PROTO_ERRORS_H

typedef enum fb_errc {
    FB_OK = 0,
    /* Request errors (agent replies, or the host refusing up front). */
    FB_E_BAD_REQUEST,       /* "bad_request": a field is missing or wrong */
    FB_E_UNKNOWN_TYPE,      /* "unknown_type" */
    FB_E_BUSY,              /* "busy": too many commands running */
    FB_E_RESOURCE,          /* "resource": the guest ran out of fds/memory/pids */
    FB_E_TOO_LARGE,         /* "too_large": would exceed a protocol cap */
    FB_E_BAD_PATH,          /* "bad_path" */
    FB_E_NOT_FOUND,         /* "not_found" (a file, or a command) */
    FB_E_EXISTS,            /* "exists" */
    FB_E_NOT_EMPTY,         /* "not_empty" */
    FB_E_WRONG_TYPE,        /* "wrong_type" */
    FB_E_PERMISSION_DENIED, /* "permission_denied" */
    FB_E_NO_SPACE,          /* "no_space" */
    FB_E_IO_ERROR,          /* "io_error" */
    FB_E_NOT_EXECUTABLE,    /* "not_executable": a command that never ran */
    FB_E_SETUP_FAILED,      /* "setup_failed": hardening or cwd failed */
    FB_E_OTHER,             /* "error": a code this host does not know */
    /* The sandbox or the exec itself (decided by the host). */
    FB_E_PROTOCOL,          /* "protocol_error": the agent broke the protocol */
    FB_E_SANDBOX_ENDED,     /* "sandbox_ended": the channel closed */
    FB_E_KILLED,            /* "killed": fb_sandbox_kill or destroy */
    FB_E_UNRESPONSIVE,      /* "unresponsive": no answer within the deadline */
    FB_E_AGENT_FATAL,       /* "agent_failed": the agent sent "fatal" */
    FB_E_NOMEM,             /* "out_of_memory": on the host */
    FB_E_STATE,             /* "bad_state": e.g. assign twice, exec before assign */
    FB_E_TIMEOUT,           /* "timeout": a wait by the caller timed out */
    FB_E_INTERNAL,          /* "internal" */
    FB_ERRC_COUNT
} fb_errc;

/* The wire (and API) string of a code; "internal" for values out of range. */
const char *fb_errc_name(fb_errc code);
/* The code of a wire string; FB_E_OTHER for a string nobody defined. */
fb_errc fb_errc_parse(const char *name);

#endif
