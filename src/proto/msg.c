/*
 * msg.c - encoders and decoders of the typed protocol messages (msg.h).
 *
 * Decoders are strict in the same way everywhere: the list of allowed
 * fields per type (fb_hdr_only), each field's type and range, and the
 * limits from msg.h.  Encoders check what the peer's decoder would refuse
 * (invalid UTF-8, an over-long path) so that the refusal happens on the
 * sending side, as a request error, instead of ending the channel.
 */
#define _GNU_SOURCE
#include "proto/msg.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

static const char *const type_names[] = {
    [FB_MSG_UNKNOWN] = "",          [FB_MSG_HELLO] = "hello",
    [FB_MSG_EXEC] = "exec",         [FB_MSG_STDIN] = "stdin",
    [FB_MSG_SIGNAL] = "signal",     [FB_MSG_FILE_PUT] = "file_put",
    [FB_MSG_FILE_GET] = "file_get", [FB_MSG_FILE_LIST] = "file_list",
    [FB_MSG_FILE_STAT] = "file_stat", [FB_MSG_FILE_REMOVE] = "file_remove",
    [FB_MSG_FILE_MKDIR] = "file_mkdir", [FB_MSG_STATS] = "stats",
    [FB_MSG_PING] = "ping",         [FB_MSG_SHUTDOWN] = "shutdown",
    [FB_MSG_READY] = "ready",       [FB_MSG_OK] = "ok",
    [FB_MSG_ERROR] = "error",       [FB_MSG_FATAL] = "fatal",
    [FB_MSG_STDOUT] = "stdout",     [FB_MSG_STDERR] = "stderr",
    [FB_MSG_STDIN_ACK] = "stdin_ack", [FB_MSG_EXIT] = "exit",
    [FB_MSG_NET_OPEN] = "net_open", [FB_MSG_NET_DATA] = "net_data",
    [FB_MSG_NET_ACK] = "net_ack",   [FB_MSG_NET_CLOSE] = "net_close",
};
_Static_assert(sizeof type_names / sizeof type_names[0] == FB_MSG_TYPE_COUNT,
               "every message type needs its wire name");

const char *fb_msg_type_name(fb_msg_type t)
{
    return (unsigned)t < FB_MSG_TYPE_COUNT ? type_names[t] : "";
}

fb_msg_type fb_msg_type_of(const fb_frame *f)
{
    if (f->type)
        for (unsigned i = 1; i < FB_MSG_TYPE_COUNT; i++)
            if (strcmp(type_names[i], f->type) == 0)
                return (fb_msg_type)i;
    return FB_MSG_UNKNOWN;
}

bool fb_msg_is_file_request(fb_msg_type t)
{
    return t >= FB_MSG_FILE_PUT && t <= FB_MSG_FILE_MKDIR;
}

bool fb_msg_signal_allowed(int sig)
{
    static const int allowed[] = {SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1,
                                  SIGUSR2, SIGTERM, SIGCONT, SIGSTOP, SIGTSTP};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (allowed[i] == sig)
            return true;
    return false;
}

/* ---- encoding helpers ----------------------------------------------------- */

static json_t *new_hdr(fb_msg_type t, uint64_t id, fb_err *err)
{
    json_t *h = fb_hdr_new(fb_msg_type_name(t), id);
    if (!h)
        fb_fail(err, "out of memory encoding a %s frame", fb_msg_type_name(t));
    return h;
}

/* Adds a string field; invalid UTF-8 is refused here, not by the peer. */
static int set_str(json_t *obj, const char *key, const char *value, const char *what, fb_err *err)
{
    if (!fb_utf8_valid(value, strlen(value), false))
        return fb_fail(err, "%s is not valid UTF-8", what);
    json_t *s = json_string(value);
    if (!s || json_object_set_new(obj, key, s) < 0)
        return fb_fail(err, "out of memory encoding %s", what);
    return 0;
}

static int set_u64(json_t *obj, const char *key, uint64_t v, fb_err *err)
{
    if (v > (uint64_t)INT64_MAX || json_object_set_new(obj, key, json_integer((json_int_t)v)) < 0)
        return fb_fail(err, "cannot encode field \"%s\"", key);
    return 0;
}

static int set_bool(json_t *obj, const char *key, bool v, fb_err *err)
{
    if (json_object_set_new(obj, key, json_boolean(v)) < 0)
        return fb_fail(err, "cannot encode field \"%s\"", key);
    return 0;
}

static json_t *done(json_t *h, int rc)
{
    if (rc < 0) {
        json_decref(h);
        return NULL;
    }
    return h;
}

json_t *fb_msg_encode_net(uint64_t id, const fb_msg_net *m, fb_err *err)
{
    if (m->type < FB_MSG_NET_OPEN || m->type > FB_MSG_NET_CLOSE) {
        fb_fail(err, "internal: %s is not a net message", fb_msg_type_name(m->type));
        return NULL;
    }
    json_t *h = new_hdr(m->type, id, err);
    if (h && m->type == FB_MSG_NET_ACK)
        return done(h, set_u64(h, "bytes", m->bytes, err));
    return h;
}

int fb_msg_decode_net(const fb_frame *f, fb_msg_net *m, fb_err *err)
{
    static const char *const plain[] = {"t", "id", NULL};
    static const char *const ack[] = {"t", "id", "bytes", NULL};
    m->type = fb_msg_type_of(f);
    m->bytes = 0;
    if (m->type < FB_MSG_NET_OPEN || m->type > FB_MSG_NET_CLOSE)
        return fb_fail(err, "not a net message");
    if (fb_hdr_only(f->hdr, m->type == FB_MSG_NET_ACK ? ack : plain, err) < 0)
        return -1;
    if (m->type == FB_MSG_NET_ACK && fb_hdr_u64(f->hdr, "bytes", true, FB_NET_WINDOW, &m->bytes, err) < 0)
        return -1;
    if (m->type == FB_MSG_NET_DATA ? f->payload_len == 0 || f->payload_len > FB_NET_CHUNK : f->payload_len != 0)
        return fb_fail(err, "bad payload length %zu for %s", (size_t)f->payload_len, f->type);
    return 0;
}

json_t *fb_msg_encode_simple(fb_msg_type t, uint64_t id, fb_err *err)
{
    return new_hdr(t, id, err);
}

json_t *fb_msg_encode_hello(uint64_t id, const fb_msg_hello *m, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_HELLO, id, err);
    if (!h)
        return NULL;
    int rc = set_u64(h, "version", m->version, err);
    if (rc == 0)
        rc = set_u64(h, "workspace_mib", m->workspace_mib, err);
    if (rc == 0)
        rc = set_u64(h, "tmp_mib", m->tmp_mib, err);
    if (rc == 0)
        rc = set_u64(h, "nproc", m->nproc, err);
    if (rc == 0)
        rc = set_u64(h, "nofile", m->nofile, err);
    if (rc == 0)
        rc = set_u64(h, "max_output", m->max_output, err);
    if (rc == 0 && m->net)
        rc = set_bool(h, "net", true, err);
    if (rc == 0 && m->has_seed) {
        char hex[2 * FB_HELLO_SEED_BYTES + 1];
        fb_hex(m->seed, sizeof m->seed, hex);
        rc = set_str(h, "seed", hex, "seed", err);
    }
    if (rc == 0 && m->has_time) {
        rc = set_u64(h, "time_sec", m->time_sec, err);
        if (rc == 0)
            rc = set_u64(h, "time_nsec", m->time_nsec, err);
    }
    return done(h, rc);
}

json_t *fb_msg_encode_ready(uint64_t id, const fb_msg_ready *m, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_READY, id, err);
    if (!h)
        return NULL;
    int rc = set_u64(h, "version", m->version, err);
    if (rc == 0)
        rc = set_str(h, "agent", m->agent, "the agent version", err);
    if (rc == 0)
        rc = set_str(h, "kernel", m->kernel, "the kernel release", err);
    if (rc == 0)
        rc = set_str(h, "mode", m->mode, "the agent mode", err);
    return done(h, rc);
}

static bool valid_env_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FB_MAX_ENV_NAME || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static int exec_fields(json_t *h, const fb_msg_exec *m, fb_errc *code, fb_err *err)
{
    *code = FB_E_BAD_REQUEST;
    if (m->argc == 0 || !m->argv[0] || !m->argv[0][0])
        return fb_fail(err, "no command given");
    if (m->argc > FB_MAX_ARGV)
        return fb_fail(err, "the command has more than %d arguments", FB_MAX_ARGV);
    if (m->nenv > FB_MAX_ENV)
        return fb_fail(err, "more than %d environment variables", FB_MAX_ENV);
    if (m->timeout_ms == 0 || m->timeout_ms > FB_MAX_TIMEOUT_MS)
        return fb_fail(err, "the timeout must be between 1 ms and 24 h");
    if (m->max_output > FB_MAX_OUTPUT_CAP)
        return fb_fail(err, "the output cap exceeds %llu bytes", (unsigned long long)FB_MAX_OUTPUT_CAP);
    if (m->cwd && (m->cwd[0] != '/' || strlen(m->cwd) > FB_MAX_PATH))
        return fb_fail(err, "the working directory must be an absolute path of at most %d bytes",
                       FB_MAX_PATH);
    json_t *argv = json_array(), *env = json_object();
    if (json_object_set_new(h, "argv", argv) < 0 || json_object_set_new(h, "env", env) < 0) {
        *code = FB_E_NOMEM;
        return fb_fail(err, "out of memory encoding a command");
    }
    for (size_t i = 0; i < m->argc; i++) {
        if (!m->argv[i] || !fb_utf8_valid(m->argv[i], strlen(m->argv[i]), false))
            return fb_fail(err, "a command argument is not valid UTF-8 (argument %zu)", i);
        if (json_array_append_new(argv, json_string(m->argv[i])) < 0) {
            *code = FB_E_NOMEM;
            return fb_fail(err, "out of memory encoding a command");
        }
    }
    for (size_t i = 0; i < m->nenv; i++) {
        if (!m->env[i].key || !valid_env_name(m->env[i].key))
            return fb_fail(err, "environment variable name \"%.64s\" is not [A-Za-z_][A-Za-z0-9_]*",
                           m->env[i].key ? m->env[i].key : "");
        if (json_object_get(env, m->env[i].key))
            return fb_fail(err, "environment variable %.64s is given twice", m->env[i].key);
        if (set_str(env, m->env[i].key, m->env[i].value ? m->env[i].value : "",
                    "an environment value", err) < 0)
            return -1;
    }
    if (m->cwd && set_str(h, "cwd", m->cwd, "the working directory", err) < 0)
        return -1;
    if (set_u64(h, "timeout_ms", m->timeout_ms, err) < 0 ||
        (m->max_output && set_u64(h, "max_output", m->max_output, err) < 0) ||
        set_bool(h, "stdin", m->stdin_pipe, err) < 0)
        return -1;
    /* The frame cap: refuse here, as a request error, what the peer would
     * have to treat as a protocol error. */
    char *text = json_dumps(h, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    fb_json_text_free(text);
    if (!text) {
        *code = FB_E_NOMEM;
        return fb_fail(err, "out of memory encoding a command");
    }
    if (len > FB_PROTO_MAX_HEADER) {
        *code = FB_E_TOO_LARGE;
        return fb_fail(err, "the command and its environment take %zu bytes encoded; the limit is %u",
                       len, FB_PROTO_MAX_HEADER);
    }
    *code = FB_OK;
    return 0;
}

json_t *fb_msg_encode_exec(uint64_t id, const fb_msg_exec *m, fb_errc *code, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_EXEC, id, err);
    if (!h) {
        *code = FB_E_NOMEM;
        return NULL;
    }
    return done(h, exec_fields(h, m, code, err));
}

json_t *fb_msg_encode_stdin(uint64_t id, const fb_msg_stdin *m, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_STDIN, id, err);
    if (h && m->eof)
        return done(h, set_bool(h, "eof", true, err));
    return h;
}

json_t *fb_msg_encode_stdin_ack(uint64_t id, const fb_msg_stdin_ack *m, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_STDIN_ACK, id, err);
    return h ? done(h, set_u64(h, "bytes", m->bytes, err)) : NULL;
}

json_t *fb_msg_encode_signal(uint64_t id, const fb_msg_signal *m, fb_err *err)
{
    if (!fb_msg_signal_allowed(m->signal)) {
        fb_fail(err, "signal %d is not one a command may be sent", m->signal);
        return NULL;
    }
    json_t *h = new_hdr(FB_MSG_SIGNAL, id, err);
    return h ? done(h, set_u64(h, "signal", (uint64_t)m->signal, err)) : NULL;
}

json_t *fb_msg_encode_file(uint64_t id, const fb_msg_file *m, fb_err *err)
{
    if (!fb_msg_is_file_request(m->type)) {
        fb_fail(err, "internal: %s is not a file request", fb_msg_type_name(m->type));
        return NULL;
    }
    if (!m->path || !m->path[0] || strlen(m->path) > FB_MAX_PATH) {
        fb_fail(err, "a path of 1 to %d bytes is required", FB_MAX_PATH);
        return NULL;
    }
    json_t *h = new_hdr(m->type, id, err);
    if (!h)
        return NULL;
    int rc = set_str(h, "path", m->path, "the path", err);
    if (rc == 0 && (m->type == FB_MSG_FILE_PUT || m->type == FB_MSG_FILE_GET))
        rc = set_u64(h, "offset", m->offset, err);
    if (rc == 0 && m->type == FB_MSG_FILE_GET)
        rc = set_u64(h, "length", m->length, err);
    if (rc == 0 && (m->type == FB_MSG_FILE_PUT || m->type == FB_MSG_FILE_MKDIR))
        rc = set_u64(h, "mode", m->mode & 0777, err);
    if (rc == 0 && m->type == FB_MSG_FILE_REMOVE)
        rc = set_bool(h, "recursive", m->recursive, err);
    if (rc == 0 && m->type == FB_MSG_FILE_MKDIR)
        rc = set_bool(h, "parents", m->parents, err);
    return done(h, rc);
}

/* Messages from the agent may quote what sandboxed code chose (a path, a
 * command name): keep them valid rather than lose the reply. */
static int set_message(json_t *h, const char *msg, fb_err *err)
{
    size_t n;
    cleanup_free char *clean = fb_utf8_clean(msg ? msg : "", msg ? strlen(msg) : 0, &n);
    if (!clean || json_object_set_new(h, "message", json_stringn(clean, n)) < 0)
        return fb_fail(err, "out of memory encoding a message");
    return 0;
}

json_t *fb_msg_encode_exit(uint64_t id, const fb_msg_exit *m, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_EXIT, id, err);
    if (!h)
        return NULL;
    bool by_signal = m->started && m->signal != 0;
    int rc = json_object_set_new(h, "code", by_signal ? json_null() : json_integer(m->code));
    rc |= json_object_set_new(h, "signal", by_signal ? json_integer(m->signal) : json_null());
    if (rc < 0)
        return done(h, fb_fail(err, "out of memory encoding an exit"));
    if (!m->started) {
        rc = set_str(h, "error", fb_errc_name(m->error), "the error code", err);
        if (rc == 0)
            rc = set_message(h, m->message, err);
    }
    if (rc == 0 && m->oom)
        rc = set_bool(h, "oom", true, err);
    if (rc == 0 && m->timed_out)
        rc = set_bool(h, "timed_out", true, err);
    if (rc == 0 && m->truncated)
        rc = set_bool(h, "truncated", true, err);
    if (rc == 0)
        rc = set_u64(h, "duration_ms", m->duration_ms, err);
    return done(h, rc);
}

json_t *fb_msg_encode_error(uint64_t id, const fb_msg_error *m, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_ERROR, id, err);
    if (!h)
        return NULL;
    int rc = set_str(h, "code", fb_errc_name(m->code), "the error code", err);
    if (rc == 0)
        rc = set_message(h, m->message, err);
    return done(h, rc);
}

json_t *fb_msg_encode_fatal(const char *message, fb_err *err)
{
    json_t *h = new_hdr(FB_MSG_FATAL, 0, err);
    return h ? done(h, set_message(h, message, err)) : NULL;
}

/* ---- decoders --------------------------------------------------------------- */

int fb_msg_decode_simple(const fb_frame *f, fb_err *err)
{
    static const char *const fields[] = {"t", "id", NULL};
    return fb_hdr_only(f->hdr, fields, err);
}

int fb_msg_decode_hello(const fb_frame *f, fb_msg_hello *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "version", "workspace_mib", "tmp_mib",
                                         "nproc", "nofile", "max_output", "net", "seed",
                                         "time_sec", "time_nsec", NULL};
    const char *seed = NULL;
    *m = (fb_msg_hello){.workspace_mib = 64, .tmp_mib = 64, .nproc = 256, .nofile = 1024,
                        .max_output = 1 << 20};
    if (fb_hdr_only(f->hdr, fields, err) < 0 ||
        fb_hdr_u64(f->hdr, "version", true, 1000, &m->version, err) < 0 ||
        fb_hdr_u64(f->hdr, "workspace_mib", false, 1 << 20, &m->workspace_mib, err) < 0 ||
        fb_hdr_u64(f->hdr, "tmp_mib", false, 1 << 20, &m->tmp_mib, err) < 0 ||
        fb_hdr_u64(f->hdr, "nproc", false, 1 << 20, &m->nproc, err) < 0 ||
        fb_hdr_u64(f->hdr, "nofile", false, 1 << 20, &m->nofile, err) < 0 ||
        fb_hdr_u64(f->hdr, "max_output", false, FB_MAX_OUTPUT_CAP, &m->max_output, err) < 0 ||
        (json_object_get(f->hdr, "net") && fb_hdr_bool(f->hdr, "net", &m->net, err) < 0) ||
        fb_hdr_str(f->hdr, "seed", false, 2 * FB_HELLO_SEED_BYTES, &seed, err) < 0 ||
        fb_hdr_u64(f->hdr, "time_sec", false, FB_MAX_OFFSET, &m->time_sec, err) < 0 ||
        fb_hdr_u64(f->hdr, "time_nsec", false, 999999999, &m->time_nsec, err) < 0)
        return -1;
    if (seed) {
        if (strlen(seed) != 2 * FB_HELLO_SEED_BYTES)
            return fb_fail(err, "field \"seed\": expected %d hex digits", 2 * FB_HELLO_SEED_BYTES);
        for (size_t i = 0; i < FB_HELLO_SEED_BYTES; i++) {
            unsigned v = 0;
            for (int k = 0; k < 2; k++) {
                char c = seed[2 * i + (size_t)k];
                unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                             : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 16u;
                if (d > 15)
                    return fb_fail(err, "field \"seed\": not lower-case hex");
                v = v * 16 + d;
            }
            m->seed[i] = (uint8_t)v;
        }
        m->has_seed = true;
    }
    bool sec = json_object_get(f->hdr, "time_sec") != NULL;
    if (sec != (json_object_get(f->hdr, "time_nsec") != NULL))
        return fb_fail(err, "fields \"time_sec\" and \"time_nsec\" come together");
    m->has_time = sec;
    if (m->workspace_mib == 0 || m->tmp_mib == 0 || m->nproc < 8 || m->nofile < 16)
        return fb_fail(err, "limits too small to run anything");
    return 0;
}

int fb_msg_decode_ready(const fb_frame *f, fb_msg_ready *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "version", "agent", "kernel", "mode", NULL};
    memset(m, 0, sizeof *m);
    if (fb_hdr_only(f->hdr, fields, err) < 0 ||
        fb_hdr_u64(f->hdr, "version", true, 1000, &m->version, err) < 0 ||
        fb_hdr_str(f->hdr, "agent", false, 64, &m->agent, err) < 0 ||
        fb_hdr_str(f->hdr, "kernel", false, 127, &m->kernel, err) < 0 ||
        fb_hdr_str(f->hdr, "mode", false, 16, &m->mode, err) < 0)
        return -1;
    if (!m->agent)
        m->agent = "";
    if (!m->kernel)
        m->kernel = "";
    if (!m->mode)
        m->mode = "";
    return 0;
}

struct exec_owned {
    const char **argv;
    fb_env_var *env;
};

void fb_msg_exec_free(fb_msg_exec *m)
{
    struct exec_owned *o = m->owned_;
    if (o) {
        free(o->argv);
        free(o->env);
        free(o);
    }
    memset(m, 0, sizeof *m);
}

static int decode_argv(const json_t *hdr, fb_msg_exec *m, struct exec_owned *o, fb_err *err)
{
    json_t *jargv = json_object_get(hdr, "argv");
    if (!json_is_array(jargv) || json_array_size(jargv) == 0)
        return fb_fail(err, "\"argv\" must be a non-empty array of strings");
    size_t argc = json_array_size(jargv);
    if (argc > FB_MAX_ARGV)
        return fb_fail(err, "\"argv\" has more than %d elements", FB_MAX_ARGV);
    o->argv = calloc(argc + 1, sizeof *o->argv);
    if (!o->argv)
        return fb_fail(err, "out of memory");
    for (size_t i = 0; i < argc; i++) {
        json_t *s = json_array_get(jargv, i);
        if (!json_is_string(s))
            return fb_fail(err, "\"argv\"[%zu] is not a string", i);
        o->argv[i] = json_string_value(s);
    }
    if (o->argv[0][0] == '\0')
        return fb_fail(err, "\"argv\"[0] is empty");
    m->argv = o->argv;
    m->argc = argc;
    return 0;
}

static int decode_env(const json_t *hdr, fb_msg_exec *m, struct exec_owned *o, fb_err *err)
{
    json_t *jenv = json_object_get(hdr, "env");
    if (!jenv)
        return 0;
    if (!json_is_object(jenv))
        return fb_fail(err, "\"env\" must be an object of strings");
    size_t n = json_object_size(jenv);
    if (n > FB_MAX_ENV)
        return fb_fail(err, "\"env\" has more than %d variables", FB_MAX_ENV);
    o->env = calloc(n + 1, sizeof *o->env);
    if (!o->env)
        return fb_fail(err, "out of memory");
    const char *key;
    json_t *val;
    size_t i = 0;
    json_object_foreach(jenv, key, val) {
        if (!valid_env_name(key) || !json_is_string(val))
            return fb_fail(err, "\"env\": bad variable name or non-string value for \"%.64s\"", key);
        o->env[i].key = key;
        o->env[i].value = json_string_value(val);
        i++;
    }
    m->env = o->env;
    m->nenv = i;
    return 0;
}

int fb_msg_decode_exec(const fb_frame *f, fb_msg_exec *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "argv", "env", "cwd", "timeout_ms", "stdin",
                                         "max_output", NULL};
    memset(m, 0, sizeof *m);
    if (fb_hdr_only(f->hdr, fields, err) < 0 ||
        fb_hdr_str(f->hdr, "cwd", false, FB_MAX_PATH, &m->cwd, err) < 0 ||
        fb_hdr_u64(f->hdr, "timeout_ms", true, FB_MAX_TIMEOUT_MS, &m->timeout_ms, err) < 0 ||
        fb_hdr_u64(f->hdr, "max_output", false, FB_MAX_OUTPUT_CAP, &m->max_output, err) < 0 ||
        fb_hdr_bool(f->hdr, "stdin", &m->stdin_pipe, err) < 0)
        return -1;
    if (m->cwd && m->cwd[0] != '/')
        return fb_fail(err, "\"cwd\" must be an absolute path");
    if (m->timeout_ms == 0)
        return fb_fail(err, "\"timeout_ms\" must be positive");
    struct exec_owned *o = calloc(1, sizeof *o);
    if (!o)
        return fb_fail(err, "out of memory");
    m->owned_ = o;
    if (decode_argv(f->hdr, m, o, err) < 0 || decode_env(f->hdr, m, o, err) < 0) {
        fb_msg_exec_free(m);
        return -1;
    }
    return 0;
}

int fb_msg_decode_stdin(const fb_frame *f, fb_msg_stdin *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "eof", NULL};
    m->eof = false;
    return fb_hdr_only(f->hdr, fields, err) < 0 ? -1 : fb_hdr_bool(f->hdr, "eof", &m->eof, err);
}

int fb_msg_decode_stdin_ack(const fb_frame *f, fb_msg_stdin_ack *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "bytes", NULL};
    m->bytes = 0;
    if (fb_hdr_only(f->hdr, fields, err) < 0 ||
        fb_hdr_u64(f->hdr, "bytes", true, FB_STDIN_WINDOW, &m->bytes, err) < 0)
        return -1;
    return f->payload_len ? fb_fail(err, "unexpected payload") : 0;
}

int fb_msg_decode_signal(const fb_frame *f, fb_msg_signal *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "signal", NULL};
    uint64_t sig = 0;
    if (fb_hdr_only(f->hdr, fields, err) < 0 || fb_hdr_u64(f->hdr, "signal", true, 64, &sig, err) < 0)
        return -1;
    if (!fb_msg_signal_allowed((int)sig))
        return fb_fail(err, "signal not allowed");
    m->signal = (int)sig;
    return 0;
}

int fb_msg_decode_file(const fb_frame *f, fb_msg_file *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "path", "offset", "length", "mode",
                                         "recursive", "parents", NULL};
    memset(m, 0, sizeof *m);
    m->type = fb_msg_type_of(f);
    m->length = FB_MAX_FILE_CHUNK;
    m->mode = m->type == FB_MSG_FILE_MKDIR ? 0755 : 0644;
    if (!fb_msg_is_file_request(m->type))
        return fb_fail(err, "not a file request");
    if (fb_hdr_only(f->hdr, fields, err) < 0 ||
        fb_hdr_str(f->hdr, "path", true, FB_MAX_PATH, &m->path, err) < 0 ||
        fb_hdr_u64(f->hdr, "offset", false, FB_MAX_OFFSET, &m->offset, err) < 0 ||
        fb_hdr_u64(f->hdr, "length", false, FB_MAX_FILE_CHUNK, &m->length, err) < 0 ||
        fb_hdr_u64(f->hdr, "mode", false, 0777, &m->mode, err) < 0 ||
        fb_hdr_bool(f->hdr, "recursive", &m->recursive, err) < 0 ||
        fb_hdr_bool(f->hdr, "parents", &m->parents, err) < 0)
        return -1;
    if (m->type != FB_MSG_FILE_PUT && f->payload_len > 0)
        return fb_fail(err, "unexpected payload");
    return 0;
}

static int opt_int(const json_t *hdr, const char *key, bool *present, int *out, fb_err *err)
{
    json_t *v = json_object_get(hdr, key);
    *present = false;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 255)
        return fb_fail(err, "field \"%s\" must be null or an integer 0..255", key);
    *present = true;
    *out = (int)json_integer_value(v);
    return 0;
}

int fb_msg_decode_exit(const fb_frame *f, fb_msg_exit *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "code", "signal", "timed_out", "oom",
                                         "truncated", "duration_ms", "error", "message", NULL};
    memset(m, 0, sizeof *m);
    bool has_code, has_sig;
    const char *error = NULL;
    if (fb_hdr_only(f->hdr, fields, err) < 0 || opt_int(f->hdr, "code", &has_code, &m->code, err) < 0 ||
        opt_int(f->hdr, "signal", &has_sig, &m->signal, err) < 0 ||
        fb_hdr_bool(f->hdr, "timed_out", &m->timed_out, err) < 0 ||
        fb_hdr_bool(f->hdr, "oom", &m->oom, err) < 0 ||
        fb_hdr_bool(f->hdr, "truncated", &m->truncated, err) < 0 ||
        fb_hdr_u64(f->hdr, "duration_ms", false, FB_MAX_TIMEOUT_MS * 2, &m->duration_ms, err) < 0 ||
        fb_hdr_str(f->hdr, "error", false, 64, &error, err) < 0 ||
        fb_hdr_str(f->hdr, "message", false, 1024, &m->message, err) < 0)
        return -1;
    if (has_code == has_sig)
        return fb_fail(err, "an exit carries exactly one of \"code\" and \"signal\"");
    if (has_sig && m->signal == 0)
        return fb_fail(err, "field \"signal\" must not be 0");
    m->started = error == NULL;
    m->error = error ? fb_errc_parse(error) : FB_OK;
    if (!m->message)
        m->message = "";
    return f->payload_len ? fb_fail(err, "unexpected payload") : 0;
}

int fb_msg_decode_error(const fb_frame *f, fb_msg_error *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "code", "message", NULL};
    const char *code = NULL;
    memset(m, 0, sizeof *m);
    if (fb_hdr_only(f->hdr, fields, err) < 0 || fb_hdr_str(f->hdr, "code", true, 64, &code, err) < 0 ||
        fb_hdr_str(f->hdr, "message", false, FB_MAX_PATH + 1024, &m->message, err) < 0)
        return -1;
    m->code = fb_errc_parse(code);
    if (!m->message)
        m->message = "request failed";
    return 0;
}

int fb_msg_decode_fatal(const fb_frame *f, const char **message, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "message", NULL};
    *message = NULL;
    if (fb_hdr_only(f->hdr, fields, err) < 0 || fb_hdr_str(f->hdr, "message", false, 4096, message, err) < 0)
        return -1;
    if (!*message)
        *message = "(no message)";
    return 0;
}

int fb_msg_decode_file_ok(const fb_frame *f, fb_msg_type req, fb_msg_file_ok *m, fb_err *err)
{
    static const char *const fields[] = {"t", "id", "size", "offset", "eof", "truncated", "type",
                                         "mode", "mtime", "mem_total_kib", "mem_available_kib",
                                         "uptime_s", "running", NULL};
    memset(m, 0, sizeof *m);
    if (fb_hdr_only(f->hdr, fields, err) < 0 ||
        fb_hdr_u64(f->hdr, "size", req == FB_MSG_FILE_PUT || req == FB_MSG_FILE_GET, FB_MAX_OFFSET,
                   &m->size, err) < 0 ||
        fb_hdr_u64(f->hdr, "offset", req == FB_MSG_FILE_GET, FB_MAX_OFFSET, &m->offset, err) < 0 ||
        fb_hdr_bool(f->hdr, "eof", &m->eof, err) < 0 ||
        fb_hdr_bool(f->hdr, "truncated", &m->truncated, err) < 0 ||
        fb_hdr_str(f->hdr, "type", false, 16, &m->kind, err) < 0 ||
        fb_hdr_u64(f->hdr, "mode", false, 07777, &m->mode, err) < 0)
        return -1;
    json_t *mt = json_object_get(f->hdr, "mtime");
    if (mt && !json_is_integer(mt))
        return fb_fail(err, "field \"mtime\" must be an integer");
    m->mtime = mt ? (int64_t)json_integer_value(mt) : 0;
    if (req != FB_MSG_FILE_GET && req != FB_MSG_FILE_LIST && f->payload_len)
        return fb_fail(err, "unexpected payload");
    return 0;
}
