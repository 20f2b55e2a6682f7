/*
 * test_egress_proxy.c - the egress proxy's C API in process (src/egress/egress.h):
 * typed errors of start/add/adopt/remove, the listener's path and mode, and
 * a stream handed over with fb_egress_adopt tunnelling to a loopback echo
 * server started here, with its audit event.  The black-box behaviour
 * (refusals, limits, garbage) is tests/integration/test_egress_proxy.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "egress/egress.h"

/* ---- a loopback echo server ------------------------------------------------ */

static int echo_fd = -1;
static uint16_t echo_port;

static void *echo_main(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(echo_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[4096];
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0)
            if (fb_write_all(c, buf, (size_t)n) < 0)
                break;
        close(c);
    }
}

/* ---- audit events ------------------------------------------------------------ */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int n_events;
static fb_egress_event last;
static char last_sandbox[80], last_reason[400];

static void on_audit(const fb_egress_event *ev, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&lock);
    last = *ev;
    snprintf(last_sandbox, sizeof last_sandbox, "%s", ev->sandbox_id);
    snprintf(last_reason, sizeof last_reason, "%s", ev->reason);
    n_events++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void wait_events(int n)
{
    pthread_mutex_lock(&lock);
    while (n_events < n)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
}

static char dir[64];
static char private_text[32];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/fb-egress-unit-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    echo_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    if (bind(echo_fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(echo_fd, 8) < 0 ||
        getsockname(echo_fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    echo_port = ntohs(sin.sin_port);
    snprintf(private_text, sizeof private_text, "127.0.0.1:%u", (unsigned)echo_port);
    pthread_t t;
    return pthread_create(&t, NULL, echo_main, NULL) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    shutdown(echo_fd, SHUT_RDWR); /* the echo thread's accept fails and it returns */
    return rmdir(dir);
}

static fb_egress *start(fb_egress_settings *s, fb_egress_addr *priv, fb_egress_host *host)
{
    static const char *const addrs[] = {"127.0.0.1"};
    memset(s, 0, sizeof *s);
    assert_int_equal(fb_egress_addr_parse(private_text, false, priv, NULL), FB_EGRESS_OK);
    *host = (fb_egress_host){.name = "echo.test", .addrs = addrs, .n_addrs = 1};
    s->runtime_dir = dir;
    s->allow_private = priv;
    s->n_allow_private = 1;
    s->hosts = host;
    s->n_hosts = 1;
    s->dns_disabled = true;
    s->audit = on_audit;
    fb_egress *p = NULL;
    fb_err err = {{0}};
    if (fb_egress_start(s, &p, &err) != FB_EGRESS_RC_OK)
        fail_msg("start: %s", err.msg);
    return p;
}

static fb_egress_list grant_of(const char *text)
{
    fb_egress_list l = {0};
    if (text)
        assert_int_equal(fb_egress_list_add(&l, text, NULL), FB_EGRESS_OK);
    return l;
}

static void test_errors_are_typed(void **state)
{
    (void)state;
    fb_egress_settings s;
    fb_egress_addr priv;
    fb_egress_host host;
    fb_err err;
    fb_egress *p;

    fb_egress_settings bad = {0};
    assert_int_equal(fb_egress_start(&bad, &p, &err), FB_EGRESS_RC_INVALID);
    static const char *const literal[] = {"127.0.0.1"};
    fb_egress_host lit_name = {.name = "127.0.0.1", .addrs = literal, .n_addrs = 1};
    bad = (fb_egress_settings){.runtime_dir = dir, .hosts = &lit_name, .n_hosts = 1, .dns_disabled = true};
    assert_int_equal(fb_egress_start(&bad, &p, &err), FB_EGRESS_RC_INVALID);
    static const char *const with_port[] = {"127.0.0.1:80"};
    fb_egress_host port_addr = {.name = "a.test", .addrs = with_port, .n_addrs = 1};
    bad.hosts = &port_addr;
    assert_int_equal(fb_egress_start(&bad, &p, &err), FB_EGRESS_RC_INVALID);
    assert_non_null(strstr(err.msg, "not a numeric address"));

    fb_egress_list ceiling = grant_of("*.corp.test");
    p = start(&s, &priv, &host);
    fb_egress_stop(p);
    s.ceiling = &ceiling;
    assert_int_equal(fb_egress_start(&s, &p, &err), FB_EGRESS_RC_OK);
    char path[128];
    fb_egress_list inside = grant_of("www.corp.test"), outside = grant_of("evil.test");
    assert_int_equal(fb_egress_add_sandbox(p, "../x", &inside, path, sizeof path, &err), FB_EGRESS_RC_INVALID);
    assert_int_equal(fb_egress_add_sandbox(p, "", &inside, path, sizeof path, &err), FB_EGRESS_RC_INVALID);
    assert_int_equal(fb_egress_add_sandbox(p, "s1", &outside, path, sizeof path, &err), FB_EGRESS_RC_POLICY);
    assert_string_equal(err.msg, "network grant entry 'evil.test' is outside network.allow");
    assert_int_equal(fb_egress_add_sandbox(p, "s1", &inside, path, 8, &err), FB_EGRESS_RC_SYSTEM); /* cap */
    assert_int_equal(fb_egress_add_sandbox(p, "s1", &inside, path, sizeof path, &err), FB_EGRESS_RC_OK);
    assert_int_equal(fb_egress_add_sandbox(p, "s1", &inside, path, sizeof path, &err), FB_EGRESS_RC_EXISTS);
    int pair[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    assert_int_equal(fb_egress_adopt(p, "nobody", pair[0], &err), FB_EGRESS_RC_NOT_FOUND);
    char byte;
    assert_int_equal(read(pair[1], &byte, 1), 0); /* the proxy closed the end it was given */
    close(pair[1]);
    assert_int_equal(fb_egress_remove_sandbox(p, "nobody", &err), FB_EGRESS_RC_NOT_FOUND);
    assert_int_equal(fb_egress_remove_sandbox(p, "s1", &err), FB_EGRESS_RC_OK);
    fb_egress_stop(p);
    fb_egress_stop(NULL);
    assert_string_equal(fb_egress_outcome_name(FB_EGRESS_LIMITED), "limited");
}

static void test_listener_path_and_mode(void **state)
{
    (void)state;
    fb_egress_settings s;
    fb_egress_addr priv;
    fb_egress_host host;
    fb_egress *p = start(&s, &priv, &host);
    fb_egress_list g = grant_of("echo.test");
    char path[128], want[128];
    fb_err err;
    assert_int_equal(fb_egress_add_sandbox(p, "sb-A_1", &g, path, sizeof path, &err), FB_EGRESS_RC_OK);
    snprintf(want, sizeof want, "%s/egress-sb-A_1.sock", dir);
    assert_string_equal(path, want);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    fb_egress_stop(p); /* removes every sandbox */
    assert_int_equal(stat(path, &st), -1);
}

static void test_adopted_stream_tunnels_and_is_audited(void **state)
{
    (void)state;
    fb_egress_settings s;
    fb_egress_addr priv;
    fb_egress_host host;
    fb_egress *p = start(&s, &priv, &host);
    char entry[64], path[128], req[128];
    snprintf(entry, sizeof entry, "echo.test:%u", (unsigned)echo_port);
    fb_egress_list g = grant_of(entry);
    fb_err err;
    assert_int_equal(fb_egress_add_sandbox(p, "s2", &g, path, sizeof path, &err), FB_EGRESS_RC_OK);
    int pair[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    int before = n_events;
    assert_int_equal(fb_egress_adopt(p, "s2", pair[0], &err), FB_EGRESS_RC_OK);
    int n = snprintf(req, sizeof req, "CONNECT echo.test:%u HTTP/1.1\r\n\r\nping", (unsigned)echo_port);
    assert_int_equal(fb_write_all(pair[1], req, (size_t)n), 0);
    shutdown(pair[1], SHUT_WR);
    static const char want[] = "HTTP/1.1 200 Connection established\r\n\r\nping";
    char got[128];
    size_t len = 0;
    assert_int_equal(fb_read_up_to(pair[1], got, sizeof got, &len), 0);
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(got, want, len);
    close(pair[1]);
    wait_events(before + 1);
    pthread_mutex_lock(&lock);
    assert_string_equal(last_sandbox, "s2");
    assert_int_equal(last.outcome, FB_EGRESS_ALLOWED);
    assert_int_equal(last.status, 200);
    assert_int_equal(last.bytes_up, 4);
    assert_int_equal(last.bytes_down, 4);
    assert_int_equal(last.port, echo_port);
    snprintf(entry, sizeof entry, "allowed by grant entry 'echo.test:%u'", (unsigned)echo_port);
    assert_string_equal(last_reason, entry);
    pthread_mutex_unlock(&lock);
    fb_egress_stop(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_are_typed),
        cmocka_unit_test(test_listener_path_and_mode),
        cmocka_unit_test(test_adopted_stream_tunnels_and_is_audited),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
