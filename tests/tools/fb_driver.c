/*
 * fb_driver.c - runs several commands in ONE sandbox, for tests that need
 * what `forgebox run` cannot do (one exec per sandbox): a command that
 * attacks the next one, the agent staying responsive, and so on.
 *
 *   fb-driver BACKEND TIMEOUT_S CMD... [--- CMD...]...
 *
 * Prints one JSON line per command: {"rc", "started", "code", "signal",
 * "timed_out", "oom", "stdout", "error"}; "rc" is -1 when the sandbox itself
 * failed (then it stops).  Uses only the public sandbox.h API.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sandbox.h"

typedef struct buf {
    char *data;
    size_t len;
} buf;

static void collect(void *ctx, int stream, const void *data, size_t len)
{
    buf *b = ctx;
    if (stream != FB_STREAM_STDOUT || b->len + len > (1 << 20))
        return;
    char *n = realloc(b->data, b->len + len + 1);
    if (!n)
        return;
    memcpy(n + b->len, data, len);
    b->data = n;
    b->len += len;
    b->data[b->len] = '\0';
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fb-driver jail|vm TIMEOUT_S CMD... [--- CMD...]...\n");
        return 2;
    }
    fb_sandbox_config cfg;
    fb_sandbox_config_defaults(&cfg);
    cfg.backend = strcmp(argv[1], "jail") == 0 ? FB_BACKEND_JAIL : FB_BACKEND_VM;
    cfg.image_dir = getenv("FORGEBOX_IMAGE") ? getenv("FORGEBOX_IMAGE") : "build/image";
    if (getenv("FORGEBOX_STATE_DIR"))
        cfg.state_dir = getenv("FORGEBOX_STATE_DIR");
    if (getenv("FORGEBOX_RUN_DIR"))
        cfg.run_dir = getenv("FORGEBOX_RUN_DIR");
    uint64_t timeout_ms = strtoull(argv[2], NULL, 10) * 1000;
    fb_sandbox *sb;
    fb_err err = {{0}};
    if (fb_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "fb-driver: %s\n", err.msg);
        return 1;
    }
    int status = 0;
    for (int i = 3; i < argc;) {
        int j = i;
        while (j < argc && strcmp(argv[j], "---") != 0)
            j++;
        argv[j < argc ? j : argc] = NULL;
        buf out = {0};
        fb_exec_req req = {.argv = (const char *const *)argv + i, .timeout_ms = timeout_ms,
                           .stdin_fd = -1, .on_output = collect, .ctx = &out};
        fb_exec_result res;
        int rc = fb_sandbox_exec(sb, &req, &res, &err);
        json_t *line = json_pack("{s:i, s:b, s:i, s:i, s:b, s:b, s:s, s:s}", "rc", rc, "started",
                                 res.started, "code", res.exit_code, "signal", res.signal,
                                 "timed_out", res.timed_out, "oom", res.oom, "stdout",
                                 out.data ? out.data : "", "error", rc < 0 ? err.msg : res.message);
        char *text = json_dumps(line, JSON_COMPACT);
        printf("%s\n", text ? text : "{}");
        fflush(stdout);
        free(text);
        json_decref(line);
        free(out.data);
        if (rc < 0) {
            status = 1;
            break;
        }
        i = j + 1;
    }
    fb_sandbox_destroy(sb);
    return status;
}
