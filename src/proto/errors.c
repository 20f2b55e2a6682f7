/*
 * errors.c - wire strings of the typed error codes (errors.h).
 *
 * The table is indexed by the enum, so adding a code without its string
 * fails to compile (the static assertion below).
 */
#include "proto/errors.h"

#include <string.h>

static const char *const names[] = {
    [FB_OK] = "ok",
    [FB_E_BAD_REQUEST] = "bad_request",
    [FB_E_UNKNOWN_TYPE] = "unknown_type",
    [FB_E_BUSY] = "busy",
    [FB_E_RESOURCE] = "resource",
    [FB_E_TOO_LARGE] = "too_large",
    [FB_E_BAD_PATH] = "bad_path",
    [FB_E_NOT_FOUND] = "not_found",
    [FB_E_EXISTS] = "exists",
    [FB_E_NOT_EMPTY] = "not_empty",
    [FB_E_WRONG_TYPE] = "wrong_type",
    [FB_E_PERMISSION_DENIED] = "permission_denied",
    [FB_E_NO_SPACE] = "no_space",
    [FB_E_IO_ERROR] = "io_error",
    [FB_E_NOT_EXECUTABLE] = "not_executable",
    [FB_E_SETUP_FAILED] = "setup_failed",
    [FB_E_OTHER] = "error",
    [FB_E_PROTOCOL] = "protocol_error",
    [FB_E_SANDBOX_ENDED] = "sandbox_ended",
    [FB_E_KILLED] = "killed",
    [FB_E_UNRESPONSIVE] = "unresponsive",
    [FB_E_AGENT_FATAL] = "agent_failed",
    [FB_E_NOMEM] = "out_of_memory",
    [FB_E_STATE] = "bad_state",
    [FB_E_TIMEOUT] = "timeout",
    [FB_E_INTERNAL] = "internal",
};
_Static_assert(sizeof names / sizeof names[0] == FB_ERRC_COUNT, "every fb_errc needs its wire string");

const char *fb_errc_name(fb_errc code)
{
    if ((unsigned)code >= FB_ERRC_COUNT || !names[code])
        return "internal";
    return names[code];
}

fb_errc fb_errc_parse(const char *name)
{
    if (name)
        for (unsigned i = 1; i < FB_ERRC_COUNT; i++)
            if (names[i] && strcmp(names[i], name) == 0)
                return (fb_errc)i;
    return FB_E_OTHER;
}
