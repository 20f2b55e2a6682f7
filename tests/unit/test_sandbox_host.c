/*
 * test_sandbox_host.c - the host side of a sandbox (src/sandbox: the I/O
 * thread, exec logs, requests) against a fake agent written here.
 *
 * The fake agent is a thread on the other end of a socketpair, speaking
 * the real framing (src/proto) and, in each test, misbehaving on purpose:
 * oversized lengths, ids never issued, unknown types, truncated frames
 * then EOF, endless output, output for a cancelled exec.  Each test asserts
 * the exact typed outcome for the exec and the sandbox, and that the host
 * stays within its caps.  The sandbox is built with fb_sandbox_attach_fd
 * (supervisor.h): everything but the process, cgroup and uid slot is the
 * code that runs real sandboxes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "sandbox/supervisor.h"

/* ---- the fake agent -------------------------------------------------------- */

typedef struct fake fake;
typedef void (*scenario)(fake *fa);

struct fake {
    int fd;
    fb_chan chan;
    scenario run;
    pthread_t thread;
    void *arg;
    uint64_t ids[64];  /* exec ids seen, in order */
    int nids;
};

/* Receives one frame (blocking, 10 s); fails the test on error. */
static int fa_recv(fake *fa, fb_frame *f)
{
    fb_err err = {{0}};
    return fb_chan_recv(&fa->chan, f, 10000, &err);
}

static void fa_send(fake *fa, json_t *h, const void *payload, size_t len)
{
    fb_err err = {{0}};
    if (fb_chan_send(&fa->chan, h, payload, len, &err) == 0)
        (void)fb_chan_flush_all(&fa->chan, 10000, &err);
    json_decref(h);
}

static void fa_raw(fake *fa, const void *data, size_t len)
{
    (void)fb_chan_flush_all(&fa->chan, 10000, NULL);
    (void)fb_write_all(fa->fd, data, len);
}

static void fa_ready(fake *fa)
{
    fb_frame f;
    if (fa_recv(fa, &f) < 0)
        return;
    json_t *h = fb_hdr_new("ready", f.id);
    json_object_set_new(h, "version", json_integer(FB_PROTO_VERSION));
    json_object_set_new(h, "agent", json_string("fake"));
    json_object_set_new(h, "kernel", json_string("fake-kernel"));
    json_object_set_new(h, "mode", json_string("jail"));
    fa_send(fa, h, NULL, 0);
    fb_frame_clear(&f);
}

static void fa_output(fake *fa, const char *stream, uint64_t id, const void *data, size_t len)
{
    fa_send(fa, fb_hdr_new(stream, id), data, len);
}

static void fa_exit(fake *fa, uint64_t id, int code)
{
    json_t *h = fb_hdr_new("exit", id);
    json_object_set_new(h, "code", json_integer(code));
    json_object_set_new(h, "signal", json_null());
    json_object_set_new(h, "duration_ms", json_integer(1));
    fa_send(fa, h, NULL, 0);
}

/* Waits for the next frame of type t (others are ignored); its id. */
static uint64_t fa_expect(fake *fa, const char *t)
{
    for (;;) {
        fb_frame f;
        if (fa_recv(fa, &f) < 0)
            return 0;
        uint64_t id = f.id;
        bool match = strcmp(f.type, t) == 0;
        fb_frame_clear(&f);
        if (match)
            return id;
    }
}

/* Echo agent: every exec prints its argv[1] and exits 0; ping/file_stat ok. */
static void serve_echo(fake *fa)
{
    for (;;) {
        fb_frame f;
        if (fa_recv(fa, &f) < 0)
            return;
        if (strcmp(f.type, "exec") == 0) {
            json_t *argv = json_object_get(f.hdr, "argv");
            const char *a1 = json_string_value(json_array_get(argv, 1));
            if (a1)
                fa_output(fa, "stdout", f.id, a1, strlen(a1));
            fa_exit(fa, f.id, 0);
        } else if (strcmp(f.type, "shutdown") == 0) {
            fa_send(fa, fb_hdr_new("ok", f.id), NULL, 0);
            fb_frame_clear(&f);
            return;
        } else if (strcmp(f.type, "signal") != 0) {
            fa_send(fa, fb_hdr_new("ok", f.id), NULL, 0);
        }
        fb_frame_clear(&f);
    }
}

/* Hung agent: takes every frame and answers none, until the host closes
 * the channel (at most a minute). */
static void serve_silent(fake *fa)
{
    for (int quiet = 0; !fa->chan.eof && quiet < 6;) {
        fb_frame f;
        if (fa_recv(fa, &f) == 0) {
            fb_frame_clear(&f);
            quiet = 0;
        } else {
            quiet++;
        }
    }
}

static void *fake_main(void *arg)
{
    fake *fa = arg;
    fa_ready(fa);
    fa->run(fa);
    (void)fb_chan_flush_all(&fa->chan, 5000, NULL);
    return NULL;
}

static fb_sandbox *start(fake *fa, scenario run, uint64_t max_output)
{
    memset(fa, 0, sizeof *fa);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fa->fd = sv[1];
    fb_set_nonblock(fa->fd, true);
    fb_chan_init(&fa->chan, fa->fd);
    fa->run = run;
    assert_int_equal(pthread_create(&fa->thread, NULL, fake_main, fa), 0);
    fb_sandbox_config cfg;
    fb_sandbox_config_defaults(&cfg);
    if (max_output)
        cfg.max_output = max_output;
    fb_sandbox *sb = NULL;
    fb_err err = {{0}};
    int rc = fb_sandbox_attach_fd(sv[0], &cfg, &sb, &err);
    if (rc < 0)
        fprintf(stderr, "attach: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return sb;
}

static void finish(fake *fa, fb_sandbox *sb)
{
    fb_sandbox_destroy(sb);
    pthread_join(fa->thread, NULL);
    fb_chan_free(&fa->chan);
    close(fa->fd);
}

static fb_exec *start_exec(fb_sandbox *sb, const char *arg)
{
    const char *argv[] = {"echo", arg, NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 60000, .stdin_fd = -1};
    fb_exec *x = NULL;
    fb_err err = {{0}};
    fb_errc code = fb_exec_start(sb, &req, &x, &err);
    if (code != FB_OK)
        fprintf(stderr, "exec start: %s\n", err.msg);
    assert_int_equal(code, FB_OK);
    return x;
}

/* Reads a whole log from pos 0: stdout and stderr concatenated, the
 * terminal event in *last. */
static size_t read_all(fb_exec *x, char *out, size_t cap, fb_exec_event *last, uint64_t *dropped)
{
    uint64_t pos = 0;
    size_t n = 0;
    for (;;) {
        fb_exec_event ev;
        int got = fb_exec_next(x, pos, &ev, 20000);
        assert_int_equal(got, 1);
        pos = ev.next;
        if (ev.kind == FB_EXEC_EV_STDOUT || ev.kind == FB_EXEC_EV_STDERR) {
            assert_true(n + ev.len <= cap);
            memcpy(out + n, ev.data, ev.len);
            n += ev.len;
        } else if (ev.kind == FB_EXEC_EV_DROPPED) {
            if (dropped)
                *dropped = ev.dropped;
        } else {
            *last = ev;
            return n;
        }
        fb_exec_event_clear(&ev);
    }
}

/* ---- well-behaved agent ------------------------------------------------------- */

static void test_exec_and_files_against_echo_agent(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, serve_echo, 0);
    assert_string_equal(fb_sandbox_isolation(sb), "none");
    fb_exec *x = start_exec(sb, "hello");
    char out[64];
    fb_exec_event last;
    size_t n = read_all(x, out, sizeof out, &last, NULL);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(last.kind, FB_EXEC_EV_EXIT);
    assert_true(last.result.started);
    assert_int_equal(last.result.exit_code, 0);
    /* Past the terminal event there is nothing. */
    fb_exec_event ev;
    assert_int_equal(fb_exec_next(x, last.next, &ev, 0), -1);
    fb_exec_unref(x);
    /* The blocking form over the same machinery. */
    const char *argv[] = {"echo", "again", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 1000, .stdin_fd = -1};
    fb_exec_result res;
    fb_err err = {{0}};
    assert_int_equal(fb_sandbox_exec(sb, &req, &res, &err), 0);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(fb_sandbox_state(sb), FB_OK);
    /* Assign is once only. */
    assert_int_equal(fb_sandbox_assign(sb, &err), FB_E_STATE);
    finish(&fa, sb);
}

/* Two execs whose output frames interleave: each log gets its own. */
static void scenario_interleave(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec"), b = fa_expect(fa, "exec");
    for (int i = 0; i < 50; i++) {
        fa_output(fa, "stdout", a, "A", 1);
        fa_output(fa, "stdout", b, "B", 1);
        fa_output(fa, "stderr", a, "a", 1);
    }
    fa_exit(fa, b, 2);
    fa_exit(fa, a, 1);
    serve_echo(fa);
}

static void test_interleaved_output_of_two_execs(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_interleave, 0);
    fb_exec *a = start_exec(sb, "a"), *b = start_exec(sb, "b");
    assert_int_not_equal(fb_exec_id(a), fb_exec_id(b));
    char out[256];
    fb_exec_event last;
    size_t n = read_all(b, out, sizeof out, &last, NULL);
    assert_int_equal(n, 50);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i], 'B');
    assert_int_equal(last.result.exit_code, 2);
    n = read_all(a, out, sizeof out, &last, NULL);
    assert_int_equal(n, 100);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i], i % 2 ? 'a' : 'A');
    assert_int_equal(last.result.exit_code, 1);
    fb_exec_unref(a);
    fb_exec_unref(b);
    finish(&fa, sb);
}

/* A second consumer resumes where the first stopped, or reads it all. */
static void scenario_three_chunks(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    fa_output(fa, "stdout", a, "one,", 4);
    fa_output(fa, "stderr", a, "two,", 4);
    fa_output(fa, "stdout", a, "three", 5);
    fa_exit(fa, a, 0);
    serve_echo(fa);
}

static void test_consumers_resume_from_any_position(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_three_chunks, 0);
    fb_exec *x = start_exec(sb, "x");
    fb_exec_result res;
    fb_err err = {{0}};
    assert_int_equal(fb_exec_wait(x, 10000, &res, &err), FB_OK);
    /* First consumer: one event, then it goes away. */
    fb_exec_event ev;
    assert_int_equal(fb_exec_next(x, 0, &ev, 0), 1);
    assert_int_equal(ev.kind, FB_EXEC_EV_STDOUT);
    assert_int_equal(ev.len, 4);
    uint64_t resume = ev.next;
    fb_exec_event_clear(&ev);
    /* Second consumer resumes there. */
    assert_int_equal(fb_exec_next(x, resume, &ev, 0), 1);
    assert_int_equal(ev.kind, FB_EXEC_EV_STDERR);
    assert_memory_equal(ev.data, "two,", 4);
    fb_exec_event_clear(&ev);
    /* From the middle of a chunk: the rest of it. */
    assert_int_equal(fb_exec_next(x, 2, &ev, 0), 1);
    assert_int_equal(ev.len, 2);
    assert_memory_equal(ev.data, "e,", 2);
    fb_exec_event_clear(&ev);
    /* A third reads everything from the start, after the sandbox is gone. */
    fb_sandbox_destroy(sb);
    pthread_join(fa.thread, NULL);
    char out[64];
    fb_exec_event last;
    size_t n = read_all(x, out, sizeof out, &last, NULL);
    assert_int_equal(n, 13);
    assert_memory_equal(out, "one,two,three", 13);
    assert_int_equal(last.kind, FB_EXEC_EV_EXIT);
    fb_exec_unref(x);
    fb_chan_free(&fa.chan);
    close(fa.fd);
}

/* ---- hostile agents ---------------------------------------------------------------- */

static void scenario_oversized_length(fake *fa)
{
    fa_expect(fa, "exec");
    uint8_t prefix[8] = {0x00, 0x10, 0x00, 0x01, 0, 0, 0, 0}; /* header of 1 MiB + 1 */
    fa_raw(fa, prefix, sizeof prefix);
    fa_expect(fa, "never");
}

static void scenario_unissued_id(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    fa_output(fa, "stdout", a + 1000, "x", 1);
    fa_expect(fa, "never");
}

static void scenario_unknown_type(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    fa_send(fa, fb_hdr_new("surprise", a), NULL, 0);
    fa_expect(fa, "never");
}

static void scenario_host_type(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    fa_send(fa, fb_hdr_new("exec", a), NULL, 0);
    fa_expect(fa, "never");
}

static void scenario_truncated_then_eof(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    fa_output(fa, "stdout", a, "partial", 7);
    uint8_t frame[] = {0, 0, 0, 40, 0, 0, 0, 0, '{', '"', 't', '"'};
    fa_raw(fa, frame, sizeof frame);
    shutdown(fa->fd, SHUT_RDWR);
}

static void scenario_malformed_exit(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    json_t *h = fb_hdr_new("exit", a);
    json_object_set_new(h, "code", json_string("zero"));
    fa_send(fa, h, NULL, 0);
    fa_expect(fa, "never");
}

static void expect_sandbox_error(scenario s, fb_errc want, const char *fragment)
{
    fake fa;
    fb_sandbox *sb = start(&fa, s, 0);
    fb_exec *x = start_exec(sb, "x");
    fb_exec_result res;
    fb_err err = {{0}};
    assert_int_equal(fb_exec_wait(x, 20000, &res, &err), want);
    if (!strstr(err.msg, fragment))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, fragment);
    assert_int_equal(fb_sandbox_state(sb), want);
    /* Nothing more is accepted; the error is the same typed one. */
    fb_exec *y = NULL;
    const char *argv[] = {"true", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 1000, .stdin_fd = -1};
    assert_int_equal(fb_exec_start(sb, &req, &y, &err), want);
    assert_null(y);
    fb_exec_unref(x);
    finish(&fa, sb);
}

static void test_oversized_length_ends_sandbox(void **state)
{
    (void)state;
    expect_sandbox_error(scenario_oversized_length, FB_E_PROTOCOL, "header length");
}

static void test_unissued_id_ends_sandbox(void **state)
{
    (void)state;
    expect_sandbox_error(scenario_unissued_id, FB_E_PROTOCOL, "never made");
}

static void test_unknown_type_ends_sandbox(void **state)
{
    (void)state;
    expect_sandbox_error(scenario_unknown_type, FB_E_PROTOCOL, "\"surprise\"");
    expect_sandbox_error(scenario_host_type, FB_E_PROTOCOL, "\"exec\"");
}

static void test_truncated_frame_then_eof(void **state)
{
    (void)state;
    expect_sandbox_error(scenario_truncated_then_eof, FB_E_SANDBOX_ENDED, "agent channel closed");
}

static void test_malformed_exit_ends_sandbox(void **state)
{
    (void)state;
    expect_sandbox_error(scenario_malformed_exit, FB_E_PROTOCOL, "malformed exit");
}

/* Output beyond max_output + marker slack: the sandbox ends; the log never
 * held more than the cap. */
static void scenario_endless(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    static uint8_t chunk[32768];
    memset(chunk, 'z', sizeof chunk);
    for (int i = 0; i < 1000; i++) {
        fb_err err;
        json_t *h = fb_hdr_new("stdout", a);
        int rc = fb_chan_send(&fa->chan, h, chunk, sizeof chunk, &err);
        json_decref(h);
        if (rc < 0 || fb_chan_flush_all(&fa->chan, 5000, &err) < 0)
            return; /* the host hung up: expected */
    }
}

static void test_endless_output_is_capped(void **state)
{
    (void)state;
    fake fa;
    const uint64_t cap = 100000;
    fb_sandbox *sb = start(&fa, scenario_endless, cap);
    fb_exec *x = start_exec(sb, "x");
    static char out[200000];
    fb_exec_event last;
    size_t n = read_all(x, out, sizeof out, &last, NULL);
    assert_true(n <= cap + FB_OUTPUT_MARKER_SLACK);
    assert_int_equal(last.kind, FB_EXEC_EV_ERROR);
    assert_int_equal(last.code, FB_E_PROTOCOL);
    assert_non_null(strstr(last.message, "more output than its cap"));
    fb_exec_event_clear(&last);
    fb_exec_unref(x);
    finish(&fa, sb);
}

/* Alternating streams in tiny frames: the log's descriptors run out and
 * the rest is counted in one explicit DROPPED event, never lost silently. */
static void scenario_alternating(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    for (int i = 0; i < 3000; i++)
        fa_output(fa, i % 2 ? "stderr" : "stdout", a, "x", 1);
    fa_exit(fa, a, 0);
    serve_echo(fa);
}

static void test_descriptor_cap_records_dropped(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_alternating, 1024);
    fb_exec *x = start_exec(sb, "x");
    static char out[8192];
    fb_exec_event last;
    uint64_t dropped = 0;
    size_t n = read_all(x, out, sizeof out, &last, &dropped);
    /* 1024 + (1024 + 4096) / 64 = 1104 descriptors were kept. */
    assert_int_equal(n, 1104);
    assert_true(dropped > 0); /* the DROPPED event came, with the count so far */
    assert_int_equal(n + last.dropped, 3000);
    assert_int_equal(last.kind, FB_EXEC_EV_EXIT);
    fb_exec_unref(x);
    finish(&fa, sb);
}

/* A cancelled exec: the agent's late output and exit for it are taken or
 * dropped, and the sandbox carries on. */
static void scenario_cancelled(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    uint64_t sig_id = fa_expect(fa, "signal");
    assert_int_equal(sig_id, a);
    fa_output(fa, "stdout", a, "late", 4);
    json_t *h = fb_hdr_new("exit", a);
    json_object_set_new(h, "code", json_null());
    json_object_set_new(h, "signal", json_integer(SIGKILL));
    fa_send(fa, h, NULL, 0);
    /* After the exit: more frames for the finished exec are dropped. */
    fa_output(fa, "stdout", a, "later", 5);
    fa_exit(fa, a, 0);
    serve_echo(fa);
}

static void test_reply_for_cancelled_exec(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_cancelled, 0);
    fb_exec *x = start_exec(sb, "x");
    fb_exec_cancel(x);
    fb_exec_cancel(x); /* idempotent: one signal frame */
    char out[64];
    fb_exec_event last;
    size_t n = read_all(x, out, sizeof out, &last, NULL);
    assert_int_equal(n, 4);
    assert_int_equal(last.kind, FB_EXEC_EV_EXIT);
    assert_int_equal(last.result.signal, SIGKILL);
    fb_exec_unref(x);
    /* The sandbox is fine. */
    fb_exec *y = start_exec(sb, "still-here");
    n = read_all(y, out, sizeof out, &last, NULL);
    assert_int_equal(n, 10);
    assert_int_equal(fb_sandbox_state(sb), FB_OK);
    fb_exec_unref(y);
    finish(&fa, sb);
}

/* ---- refusals that leave the sandbox usable (finding 10) ------------------------------ */

static void test_too_large_exec_is_refused_up_front(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, serve_echo, 0);
    static char values[70][1001];
    fb_env_var env[70];
    char keys[70][16];
    for (int i = 0; i < 70; i++) {
        memset(values[i], 'v', 1000);
        values[i][1000] = '\0';
        snprintf(keys[i], sizeof keys[i], "K%d", i);
        env[i] = (fb_env_var){keys[i], values[i]};
    }
    const char *argv[] = {"true", NULL};
    fb_exec_req req = {.argv = argv, .envv = env, .nenv = 70, .timeout_ms = 1000, .stdin_fd = -1};
    fb_exec *x = NULL;
    fb_err err = {{0}};
    assert_int_equal(fb_exec_start(sb, &req, &x, &err), FB_E_TOO_LARGE);
    assert_null(x);
    /* A command over 64 KiB. */
    static char big[70000];
    memset(big, 'a', sizeof big - 1);
    const char *argv2[] = {"echo", big, NULL};
    fb_exec_req req3 = {.argv = argv2, .timeout_ms = 1000, .stdin_fd = -1};
    assert_int_equal(fb_exec_start(sb, &req3, &x, &err), FB_E_TOO_LARGE);
    assert_non_null(strstr(err.msg, "limit is 65536"));
    /* Invalid UTF-8 and bad names are request errors too. */
    const char *argv3[] = {"echo", "\xff", NULL};
    fb_exec_req req4 = {.argv = argv3, .timeout_ms = 1000, .stdin_fd = -1};
    assert_int_equal(fb_exec_start(sb, &req4, &x, &err), FB_E_BAD_REQUEST);
    fb_env_var badenv[] = {{"1BAD", "x"}};
    fb_exec_req req5 = {.argv = argv, .envv = badenv, .nenv = 1, .timeout_ms = 1000, .stdin_fd = -1};
    assert_int_equal(fb_exec_start(sb, &req5, &x, &err), FB_E_BAD_REQUEST);
    /* And the sandbox still runs commands. */
    assert_int_equal(fb_sandbox_state(sb), FB_OK);
    x = start_exec(sb, "ok");
    fb_exec_result res;
    assert_int_equal(fb_exec_wait(x, 10000, &res, &err), FB_OK);
    assert_int_equal(res.exit_code, 0);
    fb_exec_unref(x);
    finish(&fa, sb);
}

/* ---- kill, busy, slow consumers ------------------------------------------------------- */

static void scenario_silent(fake *fa)
{
    fa_expect(fa, "never"); /* reads until the host closes */
}

static void test_kill_ends_inflight_execs_promptly(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_silent, 0);
    fb_exec *x[3];
    for (int i = 0; i < 3; i++)
        x[i] = start_exec(sb, "x");
    uint64_t t0 = fb_now_ns();
    fb_sandbox_kill(sb);
    for (int i = 0; i < 3; i++) {
        fb_exec_result res;
        fb_err err = {{0}};
        assert_int_equal(fb_exec_wait(x[i], 2000, &res, &err), FB_E_KILLED);
        assert_non_null(strstr(err.msg, "was killed"));
        fb_exec_unref(x[i]);
    }
    assert_true(fb_now_ns() - t0 < 1000000000ull);
    assert_int_equal(fb_sandbox_state(sb), FB_E_KILLED);
    fb_sandbox_kill(sb); /* idempotent */
    finish(&fa, sb);
}

/* An exec the agent never answers ends the sandbox at its deadline (its
 * timeout plus the slack).  The exec starts while the I/O thread sleeps in
 * its longest poll, and its start does not wake that thread
 * (fb_sup_send_by_locked): the deadline must be kept all the same. */
static void test_unanswered_exec_ends_sandbox_at_its_deadline(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, serve_silent, 0);
    usleep(200000); /* the I/O thread is asleep in poll */
    const char *argv[] = {"sleep", "1000", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 1, .stdin_fd = -1};
    fb_exec *x = NULL;
    fb_err err = {{0}};
    assert_int_equal(fb_exec_start(sb, &req, &x, &err), FB_OK);
    fb_exec_result res;
    assert_int_equal(fb_exec_wait(x, 60000, &res, &err), FB_E_UNRESPONSIVE);
    assert_non_null(strstr(err.msg, "stopped responding"));
    fb_exec_unref(x);
    finish(&fa, sb);
}

static void test_seventeenth_exec_is_busy(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_silent, 0);
    fb_exec *x[FB_MAX_EXECS];
    for (int i = 0; i < FB_MAX_EXECS; i++)
        x[i] = start_exec(sb, "x");
    fb_exec *y = NULL;
    const char *argv[] = {"true", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 1000, .stdin_fd = -1};
    fb_err err = {{0}};
    assert_int_equal(fb_exec_start(sb, &req, &y, &err), FB_E_BUSY);
    assert_int_equal(fb_sandbox_state(sb), FB_OK);
    for (int i = 0; i < FB_MAX_EXECS; i++)
        fb_exec_unref(x[i]);
    /* Destroy does not wait for the execs nobody reads. */
    uint64_t t0 = fb_now_ns();
    finish(&fa, sb);
    assert_true(fb_now_ns() - t0 < 5000000000ull);
}

/* Nobody reads exec A's output; exec B still completes and kill works. */
static void scenario_flood_then_echo(fake *fa)
{
    uint64_t a = fa_expect(fa, "exec");
    static uint8_t chunk[32768];
    memset(chunk, 'f', sizeof chunk);
    for (int i = 0; i < 64; i++) /* 2 MiB, within the default 8 MiB cap */
        fa_output(fa, "stdout", a, chunk, sizeof chunk);
    serve_echo(fa);
}

static void test_unread_exec_does_not_stall_others(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_flood_then_echo, 0);
    fb_exec *a = start_exec(sb, "a");
    fb_exec *b = start_exec(sb, "b-done");
    fb_exec_result res;
    fb_err err = {{0}};
    assert_int_equal(fb_exec_wait(b, 10000, &res, &err), FB_OK);
    assert_int_equal(res.exit_code, 0);
    fb_exec_unref(b);
    /* A's log holds all 2 MiB, unread; reading it now gets every byte. */
    fb_exec_event ev;
    uint64_t pos = 0, total = 0;
    while (fb_exec_next(a, pos, &ev, 0) == 1 && ev.kind == FB_EXEC_EV_STDOUT) {
        total += ev.len;
        pos = ev.next;
        fb_exec_event_clear(&ev);
    }
    fb_exec_event_clear(&ev);
    assert_int_equal(total, 64 * 32768);
    fb_sandbox_kill(sb);
    assert_int_equal(fb_exec_wait(a, 2000, &res, &err), FB_E_KILLED);
    fb_exec_unref(a);
    finish(&fa, sb);
}

/* ---- files ---------------------------------------------------------------------------- */

static void scenario_files(fake *fa)
{
    for (;;) {
        fb_frame f;
        if (fa_recv(fa, &f) < 0)
            return;
        if (strcmp(f.type, "file_get") == 0) {
            const char *path = json_string_value(json_object_get(f.hdr, "path"));
            if (strcmp(path, "/workspace/missing") == 0) {
                json_t *h = fb_hdr_new("error", f.id);
                json_object_set_new(h, "code", json_string("not_found"));
                json_object_set_new(h, "message", json_string("cannot read /workspace/missing"));
                fa_send(fa, h, NULL, 0);
            } else {
                json_t *h = fb_hdr_new("ok", f.id);
                json_object_set_new(h, "offset", json_integer(0));
                json_object_set_new(h, "size", json_integer(5000));
                json_object_set_new(h, "eof", json_true());
                fa_send(fa, h, NULL, 0);
            }
        } else if (strcmp(f.type, "shutdown") == 0) {
            fa_send(fa, fb_hdr_new("ok", f.id), NULL, 0);
            fb_frame_clear(&f);
            return;
        }
        fb_frame_clear(&f);
    }
}

static void test_file_errors_are_typed(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_files, 0);
    fb_err err = {{0}};
    int fd = open("/dev/null", O_WRONLY);
    assert_int_equal(fb_file_get(sb, "/workspace/missing", fd, 100, &err), FB_E_NOT_FOUND);
    assert_non_null(strstr(err.msg, "cannot get /workspace/missing"));
    assert_int_equal(fb_file_get(sb, "/workspace/big", fd, 100, &err), FB_E_TOO_LARGE);
    close(fd);
    assert_int_equal(fb_sandbox_state(sb), FB_OK);
    finish(&fa, sb);
}

/* Only shutdown is answered: everything else hangs. */
static void scenario_only_shutdown(fake *fa)
{
    uint64_t id = fa_expect(fa, "shutdown");
    if (id)
        fa_send(fa, fb_hdr_new("ok", id), NULL, 0);
}

typedef struct blocked_get {
    fb_sandbox *sb;
    fb_errc code;
    fb_err err;
} blocked_get;

static void *get_thread(void *arg)
{
    blocked_get *b = arg;
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    b->code = fb_file_get(b->sb, "/workspace/slow", fd, 100, &b->err);
    close(fd);
    return NULL;
}

/* Destroy waits for nobody: a transfer blocked on the agent is released
 * with FB_E_KILLED, and its thread may run again after the sandbox is gone. */
static void test_destroy_releases_blocked_transfer(void **state)
{
    (void)state;
    fake fa;
    fb_sandbox *sb = start(&fa, scenario_only_shutdown, 0);
    blocked_get b = {.sb = sb};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_thread, &b), 0);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t t0 = fb_now_ns();
    finish(&fa, sb);
    pthread_join(t, NULL);
    assert_true(fb_now_ns() - t0 < 3000000000ull);
    assert_int_equal(b.code, FB_E_KILLED);
    assert_non_null(strstr(b.err.msg, "was destroyed"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_and_files_against_echo_agent),
        cmocka_unit_test(test_interleaved_output_of_two_execs),
        cmocka_unit_test(test_consumers_resume_from_any_position),
        cmocka_unit_test(test_oversized_length_ends_sandbox),
        cmocka_unit_test(test_unissued_id_ends_sandbox),
        cmocka_unit_test(test_unknown_type_ends_sandbox),
        cmocka_unit_test(test_truncated_frame_then_eof),
        cmocka_unit_test(test_malformed_exit_ends_sandbox),
        cmocka_unit_test(test_endless_output_is_capped),
        cmocka_unit_test(test_descriptor_cap_records_dropped),
        cmocka_unit_test(test_reply_for_cancelled_exec),
        cmocka_unit_test(test_too_large_exec_is_refused_up_front),
        cmocka_unit_test(test_kill_ends_inflight_execs_promptly),
        cmocka_unit_test(test_unanswered_exec_ends_sandbox_at_its_deadline),
        cmocka_unit_test(test_seventeenth_exec_is_busy),
        cmocka_unit_test(test_unread_exec_does_not_stall_others),
        cmocka_unit_test(test_file_errors_are_typed),
        cmocka_unit_test(test_destroy_releases_blocked_transfer),
    };
    return cmocka_run_group_tests_name("sandbox_host", tests, NULL, NULL);
}
