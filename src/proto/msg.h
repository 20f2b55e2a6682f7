/*
 * msg.h - the protocol's messages as C structs, with their encoders and
 * decoders, shared by the host (src/sandbox) and the agent (src/agent).
 *
 * Every message type, every field name and every limit is written here
 * once.  An encoder turns a struct into a frame header (json_t, to which
 * fb_chan_send adds the payload); a decoder checks a received frame's
 * header field by field - unknown fields, wrong types and values beyond the
 * limits are refused with a message naming the field - and fills the
 * struct.  Strings in a decoded struct point into the frame's header and
 * live as long as the frame; arrays a decoder allocates are released with
 * the matching *_free.
 *
 * Environment variables travel as key/value pairs from the host API to the
 * agent, which builds envp once (no "K=V" string on the way).
 */
#ifndef FB_PROTO_MSG_H
#define FB_PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/errors.h"
#include "proto/proto.h"

/* ---- limits (checked by both peers) ------------------------------------- */
#define FB_MAX_EXECS 16                 /* commands at once in one sandbox */
/* How long past an exec's timeout the host waits for its answer before it
 * calls the sandbox unresponsive (execlog.c); the agent's start watchdog
 * is sized inside it (agent/exec.c). */
#define FB_EXEC_SLACK_MS 15000
#define FB_MAX_ARGV 4096                /* argv elements */
#define FB_MAX_ENV 256                  /* user environment variables */
#define FB_MAX_ENV_NAME 256             /* bytes of a variable's name */
#define FB_MAX_PATH 4096                /* bytes of a path */
#define FB_MAX_TIMEOUT_MS (24ull * 3600 * 1000)
#define FB_MAX_OUTPUT_CAP (1024ull * 1024 * 1024)
#define FB_MAX_FILE_CHUNK FB_PROTO_MAX_PAYLOAD
#define FB_STDIN_WINDOW (1024u * 1024u) /* unacknowledged stdin bytes */
#define FB_MAX_OFFSET (UINT64_MAX >> 1)
/* The egress bridge over the agent channel (proto/relay.h). */
#define FB_NET_WINDOW (256u * 1024u)    /* unacknowledged bytes per stream and direction */
#define FB_NET_CHUNK (64u * 1024u)      /* payload of one net_data */
#define FB_NET_MAX_STREAMS 32           /* streams open at once per sandbox */
/* Room the output cap leaves for the agent's truncation marker. */
#define FB_OUTPUT_MARKER_SLACK 4096u

typedef enum fb_msg_type {
    FB_MSG_UNKNOWN = 0,
    /* host -> agent */
    FB_MSG_HELLO, FB_MSG_EXEC, FB_MSG_STDIN, FB_MSG_SIGNAL,
    FB_MSG_FILE_PUT, FB_MSG_FILE_GET, FB_MSG_FILE_LIST, FB_MSG_FILE_STAT,
    FB_MSG_FILE_REMOVE, FB_MSG_FILE_MKDIR, FB_MSG_STATS, FB_MSG_PING, FB_MSG_SHUTDOWN,
    /* agent -> host */
    FB_MSG_READY, FB_MSG_OK, FB_MSG_ERROR, FB_MSG_FATAL, FB_MSG_STDOUT, FB_MSG_STDERR,
    FB_MSG_STDIN_ACK, FB_MSG_EXIT,
    /* both ways: the egress bridge's streams over this channel (VM) */
    FB_MSG_NET_OPEN, FB_MSG_NET_DATA, FB_MSG_NET_ACK, FB_MSG_NET_CLOSE,
    FB_MSG_TYPE_COUNT
} fb_msg_type;

const char *fb_msg_type_name(fb_msg_type t);
/* FB_MSG_UNKNOWN for a type nobody defined. */
fb_msg_type fb_msg_type_of(const fb_frame *f);
bool fb_msg_is_file_request(fb_msg_type t);

typedef struct fb_env_var {
    const char *key;
    const char *value;
} fb_env_var;

/* A VM's fresh start (absent in a jail): entropy the agent mixes into the
 * guest's RNG and a forced reseed, and the host's wall clock the agent sets,
 * before it answers ready - so VMs restored from one snapshot share neither
 * random state nor a stale clock. */
#define FB_HELLO_SEED_BYTES 64
typedef struct fb_msg_hello {
    uint64_t version, workspace_mib, tmp_mib, nproc, nofile, max_output;
    bool net;                /* a network grant: serve the egress bridge (absent: false) */
    bool has_seed;           /* "seed": 128 lower-case hex digits */
    uint8_t seed[FB_HELLO_SEED_BYTES];
    bool has_time;           /* "time_sec" and "time_nsec": the host's CLOCK_REALTIME */
    uint64_t time_sec, time_nsec;
} fb_msg_hello;

typedef struct fb_msg_ready {
    uint64_t version;
    const char *agent, *kernel, *mode;
} fb_msg_ready;

typedef struct fb_msg_exec {
    const char *const *argv; /* argc entries (the decoder NULL-terminates) */
    size_t argc;
    const fb_env_var *env;
    size_t nenv;
    const char *cwd;         /* NULL: /workspace */
    uint64_t timeout_ms;     /* required, 1 .. FB_MAX_TIMEOUT_MS */
    uint64_t max_output;     /* 0: the sandbox's default */
    bool stdin_pipe;         /* stdin frames follow; else /dev/null */
    void *owned_;            /* decoder allocations (fb_msg_exec_free) */
} fb_msg_exec;

typedef struct fb_msg_stdin {
    bool eof;                /* payload = bytes */
} fb_msg_stdin;

typedef struct fb_msg_stdin_ack {
    uint64_t bytes;
} fb_msg_stdin_ack;

typedef struct fb_msg_signal {
    int signal;              /* one of fb_msg_signal_allowed() */
} fb_msg_signal;

/* file_put/get/list/stat/remove/mkdir: which fields count depends on type. */
typedef struct fb_msg_file {
    fb_msg_type type;
    const char *path;
    uint64_t offset;         /* put, get */
    uint64_t length;         /* get: 1 .. FB_MAX_FILE_CHUNK (default the max) */
    uint64_t mode;           /* put (default 0644), mkdir (default 0755) */
    bool recursive;          /* remove */
    bool parents;            /* mkdir */
} fb_msg_file;

typedef struct fb_msg_exit {
    bool started;            /* false: never ran; error says why */
    int code;                /* when started and signal == 0 */
    int signal;
    bool timed_out, oom, truncated;
    uint64_t duration_ms;
    fb_errc error;           /* FB_E_NOT_FOUND, _NOT_EXECUTABLE, _SETUP_FAILED */
    const char *message;
} fb_msg_exit;

typedef struct fb_msg_error {
    fb_errc code;
    const char *message;
} fb_msg_error;

/* Replies "ok" to the file requests and stats. */
typedef struct fb_msg_file_ok {
    uint64_t size;           /* put: size after the write; get, stat: file size */
    uint64_t offset;         /* get */
    bool eof;                /* get */
    bool truncated;          /* list */
    const char *kind;        /* stat: "file", "dir", "symlink", "other" */
    uint64_t mode;           /* stat */
    int64_t mtime;           /* stat */
} fb_msg_file_ok;

/* net_open (agent -> host: a connection to the in-sandbox listener, id
 * chosen by the agent), net_data (payload: bytes), net_ack (bytes written
 * out), net_close (the sender sends no more on this stream): id is the
 * stream's. */
typedef struct fb_msg_net {
    fb_msg_type type;
    uint64_t bytes;          /* net_ack */
} fb_msg_net;

bool fb_msg_signal_allowed(int sig);

/* ---- encoders: a header for fb_chan_send, or NULL with err -------------- */
json_t *fb_msg_encode_hello(uint64_t id, const fb_msg_hello *m, fb_err *err);
json_t *fb_msg_encode_ready(uint64_t id, const fb_msg_ready *m, fb_err *err);
/* Refuses (FB_E_TOO_LARGE in *code) what would not fit one header. */
json_t *fb_msg_encode_exec(uint64_t id, const fb_msg_exec *m, fb_errc *code, fb_err *err);
json_t *fb_msg_encode_stdin(uint64_t id, const fb_msg_stdin *m, fb_err *err);
json_t *fb_msg_encode_stdin_ack(uint64_t id, const fb_msg_stdin_ack *m, fb_err *err);
json_t *fb_msg_encode_signal(uint64_t id, const fb_msg_signal *m, fb_err *err);
json_t *fb_msg_encode_file(uint64_t id, const fb_msg_file *m, fb_err *err);
json_t *fb_msg_encode_exit(uint64_t id, const fb_msg_exit *m, fb_err *err);
json_t *fb_msg_encode_error(uint64_t id, const fb_msg_error *m, fb_err *err);
json_t *fb_msg_encode_fatal(const char *message, fb_err *err);
json_t *fb_msg_encode_net(uint64_t id, const fb_msg_net *m, fb_err *err);
/* A message-less request: stats, ping, shutdown; or a bare "ok". */
json_t *fb_msg_encode_simple(fb_msg_type t, uint64_t id, fb_err *err);

/* ---- decoders: 0, or -1 with err naming the field ----------------------- */
int fb_msg_decode_hello(const fb_frame *f, fb_msg_hello *m, fb_err *err);
int fb_msg_decode_ready(const fb_frame *f, fb_msg_ready *m, fb_err *err);
int fb_msg_decode_exec(const fb_frame *f, fb_msg_exec *m, fb_err *err);
void fb_msg_exec_free(fb_msg_exec *m);
int fb_msg_decode_stdin(const fb_frame *f, fb_msg_stdin *m, fb_err *err);
int fb_msg_decode_stdin_ack(const fb_frame *f, fb_msg_stdin_ack *m, fb_err *err);
int fb_msg_decode_net(const fb_frame *f, fb_msg_net *m, fb_err *err);
int fb_msg_decode_signal(const fb_frame *f, fb_msg_signal *m, fb_err *err);
int fb_msg_decode_file(const fb_frame *f, fb_msg_file *m, fb_err *err);
int fb_msg_decode_exit(const fb_frame *f, fb_msg_exit *m, fb_err *err);
int fb_msg_decode_error(const fb_frame *f, fb_msg_error *m, fb_err *err);
int fb_msg_decode_fatal(const fb_frame *f, const char **message, fb_err *err);
/* "ok" replies to a file request of type req (or FB_MSG_STATS: no fields
 * are checked beyond their types). */
int fb_msg_decode_file_ok(const fb_frame *f, fb_msg_type req, fb_msg_file_ok *m, fb_err *err);
/* Message-less frames (stats, ping, shutdown, stdout, stderr, bare ok):
 * refuses any field besides "t" and "id". */
int fb_msg_decode_simple(const fb_frame *f, fb_err *err);

#endif
