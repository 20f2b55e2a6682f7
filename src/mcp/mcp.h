/*
 * mcp.h - the Model Context Protocol server, independent of its transport.
 *
 * MCP is JSON-RPC 2.0 between an agent client and a server that offers
 * tools.  This module speaks the protocol (rpc.c: messages, errors,
 * batches; server.c: initialize, ping, tools/list, tools/call), offers
 * ForgeBox's tools (tools.c: the catalogue and its input schemas;
 * tool_exec.c: exec and run_code; tool_files.c: files and sandboxes) and
 * keeps the Streamable HTTP sessions (session.c).  The transports are
 * adapters elsewhere: POST /mcp on the gateway (src/gateway/h_mcp.c) and
 * `forgebox mcp` on stdio (src/cli/mcp.c, which forwards to the gateway).
 *
 * Every tool runs through the service layer (src/core) as the caller the
 * transport authenticated: the service decides each permission against
 * the caller's role, key scopes and team, and audits it, exactly as for
 * the REST API.  A tool that fails (a refused permission, an unknown
 * sandbox, a command that exits non-zero) is a tool result with isError
 * true and a message a model can act on; only a broken request is a
 * JSON-RPC error.
 *
 * Protocol versions: those the current @modelcontextprotocol/sdk
 * negotiates (2025-11-25 back to 2024-11-05).  Batches are JSON-RPC
 * arrays, allowed only in a session that negotiated 2025-03-26 (the one
 * version whose specification has them).
 */
#ifndef FB_MCP_H
#define FB_MCP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* JSON-RPC 2.0 error codes. */
#define FB_MCP_PARSE_ERROR -32700
#define FB_MCP_INVALID_REQUEST -32600
#define FB_MCP_METHOD_NOT_FOUND -32601
#define FB_MCP_INVALID_PARAMS -32602
#define FB_MCP_INTERNAL_ERROR -32603
/* Implementation-defined (the range the specification leaves to servers):
 * transport-level refusals (no session, bad header). */
#define FB_MCP_SERVER_ERROR -32000
#define FB_MCP_SESSION_NOT_FOUND -32001

#define FB_MCP_VERSION_MAX 16
/* The version assumed when an HTTP client names none (the transport spec). */
#define FB_MCP_DEFAULT_VERSION "2025-03-26"
/* Output a tool returns per stream (stdout, stderr), and the largest file
 * read_file returns; beyond: truncated (said in the result). */
#define FB_MCP_OUTPUT_CAP (64u * 1024)
#define FB_MCP_FILE_CAP (1024u * 1024)
/* Messages in one batch. */
#define FB_MCP_MAX_BATCH 64

/* ---- protocol versions (server.c) ---------------------------------------------- */

/* The versions served, newest first, NULL-terminated. */
extern const char *const fb_mcp_versions[];
bool fb_mcp_version_known(const char *v);
/* Whether a session of version v takes JSON-RPC batches. */
bool fb_mcp_version_batches(const char *v);

/* ---- one request's context --------------------------------------------------------- */

typedef struct fb_mcp_ctx {
    fb_core *core;
    fb_caller *caller;                 /* authenticated by the transport */
    char version[FB_MCP_VERSION_MAX];  /* negotiated ("" before initialize; initialize sets it) */
    /* Polled while a command runs: true when the client went away, and the
     * command is then killed.  NULL: never. */
    bool (*gone)(void *arg);
    void *gone_arg;
} fb_mcp_ctx;

/* ---- messages (rpc.c) --------------------------------------------------------------- */

/* Parses one transport message: a JSON-RPC object or, with allow_batch, a
 * non-empty array of at most FB_MCP_MAX_BATCH objects.  NULL with
 * *error_reply set (a JSON-RPC error with id null: -32700 for bytes that
 * are not JSON, -32600 for JSON that is no message) otherwise. */
json_t *fb_mcp_parse(const char *text, size_t len, bool allow_batch, json_t **error_reply);
/* A JSON-RPC error response (id may be NULL: null; it is not stolen). */
json_t *fb_mcp_error(const json_t *id, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Whether a parsed message is one initialize request. */
bool fb_mcp_is_initialize(const json_t *msg);

/* ---- answering (server.c) ------------------------------------------------------------ */

/* Answers a parsed message: the response (an array for a batch), or NULL
 * when nothing is to be sent back (notifications and responses only). */
json_t *fb_mcp_answer(fb_mcp_ctx *ctx, const json_t *msg);

/* ---- tools (tools.c) ---------------------------------------------------------------------- */

/* {"tools": [...]}: every tool with its description and inputSchema, in a
 * fixed order. */
json_t *fb_mcp_tools_list(void);
/* Runs tool `name` with `args` (an object, or NULL for none).  NULL when
 * no such tool exists (the caller answers -32602); otherwise a
 * CallToolResult ({content, structuredContent?, isError}). */
json_t *fb_mcp_tool_call(fb_mcp_ctx *ctx, const char *name, const json_t *args);

/* ---- Streamable HTTP sessions (session.c) ---------------------------------------------- */

#define FB_MCP_SESSION_ID_MAX 48
/* Sessions kept at once, per user (across their keys, so that minting keys
 * buys no more), and idle lifetime. */
#define FB_MCP_MAX_SESSIONS 1024
#define FB_MCP_MAX_SESSIONS_PER_USER 32
#define FB_MCP_SESSION_IDLE_S 3600

typedef struct fb_mcp_sessions fb_mcp_sessions;
fb_mcp_sessions *fb_mcp_sessions_new(void);
void fb_mcp_sessions_free(fb_mcp_sessions *s);
/* A new session owned by `owner` (the API key that sent initialize, of
 * `user`) with the negotiated version; id_out gets its id (random,
 * 0x21..0x7E only).  Beyond FB_MCP_MAX_SESSIONS_PER_USER the user's least
 * recently used session makes room; -1 when the table is full of other
 * users' live sessions. */
int fb_mcp_session_create(fb_mcp_sessions *s, const char *owner, const char *user, const char *version,
                          char id_out[FB_MCP_SESSION_ID_MAX]);
/* Looks a live session up for `owner` and marks it used: true with its
 * version.  Unknown, expired and another owner's are all false. */
bool fb_mcp_session_get(fb_mcp_sessions *s, const char *id, const char *owner, char version[FB_MCP_VERSION_MAX]);
/* Ends a session of `owner`: false when there was none. */
bool fb_mcp_session_end(fb_mcp_sessions *s, const char *id, const char *owner);

#endif
