/*
 * fb_driver.c - runs several commands in ONE sandbox, for tests that need
 * what `forgebox run` cannot do (one exec per sandbox): a command that
 * attacks the next one, the agent staying responsive, and so on.
 *
 *   fb-driver [--parallel [--kill-after MS]] BACKEND TIMEOUT_S CMD... [--- CMD...]...
 *
 * Prints one JSON line per command: {"rc", "started", "code", "signal",
 * "timed_out", "oom", "stdout", "error"}; "rc" is -1 when the sandbox itself
 * failed (then it stops).  With --parallel every command is started at
 * once (fb_exec_start) and the lines come in command order once all ended,
 * with "errc" the typed error of a failed exec; --kill-after kills the
 * sandbox (fb_sandbox_kill) that many ms after the start.  Uses only the
 * public sandbox.h API.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static void print_line(int rc, const fb_exec_result *res, const buf *out, const char *error,
                       const char *errc)
{
    json_t *line = json_pack("{s:i, s:b, s:i, s:i, s:b, s:b, s:s, s:s}", "rc", rc, "started",
                             res->started, "code", res->exit_code, "signal", res->signal, "timed_out",
                             res->timed_out, "oom", res->oom, "stdout", out->data ? out->data : "",
                             "error", error);
    if (errc)
        json_object_set_new(line, "errc", json_string(errc));
    char *text = json_dumps(line, JSON_COMPACT);
    printf("%s\n", text ? text : "{}");
    fflush(stdout);
    free(text);
    json_decref(line);
}

/* Every command at once; reads each exec's log to its end in turn (the
 * others keep running meanwhile: their logs fill without a reader). */
static int run_parallel(fb_sandbox *sb, char **cmds[], int n, uint64_t timeout_ms, long kill_after_ms)
{
    fb_exec *x[64];
    fb_err err = {{0}};
    for (int i = 0; i < n; i++) {
        fb_exec_req req = {.argv = (const char *const *)cmds[i], .timeout_ms = timeout_ms, .stdin_fd = -1};
        fb_errc code = fb_exec_start(sb, &req, &x[i], &err);
        if (code != FB_OK) {
            fprintf(stderr, "fb-driver: %s (%s)\n", err.msg, fb_errc_name(code));
            return 1;
        }
    }
    if (kill_after_ms >= 0) {
        struct timespec ts = {kill_after_ms / 1000, (kill_after_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        fb_sandbox_kill(sb);
    }
    int status = 0;
    for (int i = 0; i < n; i++) {
        buf out = {0};
        uint64_t pos = 0;
        for (;;) {
            fb_exec_event ev;
            if (fb_exec_next(x[i], pos, &ev, -1) != 1)
                break;
            pos = ev.next;
            if (ev.kind == FB_EXEC_EV_STDOUT)
                collect(&out, FB_STREAM_STDOUT, ev.data, ev.len);
            bool end = ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR;
            if (ev.kind == FB_EXEC_EV_EXIT)
                print_line(0, &ev.result, &out, ev.result.message, NULL);
            else if (ev.kind == FB_EXEC_EV_ERROR) {
                print_line(-1, &ev.result, &out, ev.message, fb_errc_name(ev.code));
                status = 1;
            }
            fb_exec_event_clear(&ev);
            if (end)
                break;
        }
        free(out.data);
        fb_exec_unref(x[i]);
    }
    return status;
}

int main(int argc, char **argv)
{
    bool parallel = false;
    long kill_after_ms = -1;
    int a = 1;
    for (; a < argc && strncmp(argv[a], "--", 2) == 0 && argv[a][2]; a++) {
        if (strcmp(argv[a], "--parallel") == 0)
            parallel = true;
        else if (strcmp(argv[a], "--kill-after") == 0 && a + 1 < argc)
            kill_after_ms = strtol(argv[++a], NULL, 10);
        else
            break;
    }
    argv += a - 1;
    argc -= a - 1;
    if (argc < 4) {
        fprintf(stderr, "usage: fb-driver [--parallel [--kill-after MS]] jail|vm TIMEOUT_S CMD... "
                        "[--- CMD...]...\n");
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
    char **cmds[64];
    int ncmd = 0;
    for (int i = 3; i < argc && ncmd < 64;) {
        int j = i;
        while (j < argc && strcmp(argv[j], "---") != 0)
            j++;
        argv[j < argc ? j : argc] = NULL;
        cmds[ncmd++] = argv + i;
        i = j + 1;
    }
    fb_sandbox *sb;
    fb_err err = {{0}};
    if (fb_sandbox_create(&cfg, &sb, &err) < 0) {
        fprintf(stderr, "fb-driver: %s\n", err.msg);
        return 1;
    }
    int status = 0;
    if (parallel)
        status = run_parallel(sb, cmds, ncmd, timeout_ms, kill_after_ms);
    for (int i = 0; !parallel && i < ncmd; i++) {
        buf out = {0};
        fb_exec_req req = {.argv = (const char *const *)cmds[i], .timeout_ms = timeout_ms,
                           .stdin_fd = -1, .on_output = collect, .ctx = &out};
        fb_exec_result res;
        int rc = fb_sandbox_exec(sb, &req, &res, &err);
        print_line(rc, &res, &out, rc < 0 ? err.msg : res.message, NULL);
        free(out.data);
        if (rc < 0) {
            status = 1;
            break;
        }
    }
    fb_sandbox_destroy(sb);
    return status;
}
