/*
 * test_egress_request.c - unit tests for the egress proxy's request-head
 * parser and the head it sends upstream (src/egress/request.c).
 *
 * The parser decides which host a connection is for, so every ambiguity
 * a client could use to make two parsers disagree (bare LF, NUL, folded
 * lines, a user part, a second space) must be refused, and the rewrite
 * must drop the client's Host and Proxy-* headers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "egress/egress.h"

static int parse(const char *head, fb_egress_request *r)
{
    fb_err err = {{0}};
    return fb_egress_request_parse(head, strlen(head), r, &err);
}

static void test_connect(void **state)
{
    (void)state;
    fb_egress_request r;
    assert_int_equal(parse("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\nTLS...", &r), 0);
    assert_true(r.connect);
    assert_string_equal(r.host, "pypi.org");
    assert_int_equal(r.port, 443);
    assert_int_equal(r.head_len, strlen("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n"));
    assert_int_equal(parse("CONNECT [::1]:443 HTTP/1.0\r\n\r\n", &r), 0);
    assert_string_equal(r.host, "[::1]");
    assert_int_equal(r.minor, 0);
    assert_int_equal(parse("CONNECT pypi.org HTTP/1.1\r\n\r\n", &r), 400);       /* no port */
    assert_int_equal(parse("CONNECT pypi.org:0 HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("CONNECT pypi.org:65536 HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("CONNECT pypi.org:44x HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("CONNECT ::1:443 HTTP/1.1\r\n\r\n", &r), 400);        /* ambiguous */
    assert_int_equal(parse("CONNECT u@pypi.org:443 HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("CONNECT :443 HTTP/1.1\r\n\r\n", &r), 400);
}

static void test_absolute(void **state)
{
    (void)state;
    fb_egress_request r;
    const char *h = "GET http://Example.com/a/b?c=d HTTP/1.1\r\nHost: evil.com\r\nAccept: */*\r\n\r\n";
    assert_int_equal(parse(h, &r), 0);
    assert_false(r.connect);
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.host, "Example.com");
    assert_int_equal(r.port, 80);
    assert_memory_equal(h + r.path_off, "/a/b?c=d", r.path_len);
    assert_int_equal(parse("POST HTTP://example.com:8080 HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.port, 8080);
    assert_int_equal(r.path_len, 0);
    assert_int_equal(parse("GET https://example.com/ HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET ftp://example.com/ HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", &r), 400); /* origin form */
    assert_int_equal(parse("GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET http://example.com?x HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET http:///x HTTP/1.1\r\n\r\n", &r), 400);
}

static void test_malformed(void **state)
{
    (void)state;
    fb_egress_request r;
    static const char *const bad[] = {
        "GET http://a.example/ HTTP/1.1\r\n",                        /* incomplete */
        "GET http://a.example/ HTTP/1.1\n\n",                        /* bare LF */
        "GET http://a.example/ HTTP/1.1\r\nX: a\nb\r\n\r\n",         /* bare LF inside */
        "GET http://a.example/ HTTP/1.1\r\nX: a\rb\r\n\r\n",         /* bare CR */
        "GET http://a.example/ HTTP/1.1\r\n folded\r\n\r\n",         /* obs-fold */
        "GET http://a.example/ HTTP/1.1\r\nno colon\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET  http://a.example/ HTTP/1.1\r\n\r\n",                   /* two spaces */
        "GET http://a.example/ HTTP/1.1 x\r\n\r\n",
        "GET http://a.example/ HTTP/2.0\r\n\r\n",
        "GET http://a.example/ HTTP/1.10\r\n\r\n",
        "get http://a.example/ HTTP/1.1\r\n\r\n",
        "GETTTTTTTTTTTTTTTTTTT http://a.example/ HTTP/1.1\r\n\r\n",
        "\r\n\r\n",
        "garbage\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], &r) != 400)
            fail_msg("accepted: %s", bad[i]);
    const char nul[] = "GET http://a.example/ HTTP/1.1\r\nX: a\0b\r\n\r\n";
    fb_err err;
    assert_int_equal(fb_egress_request_parse(nul, sizeof nul - 1, &r, &err), 400);
}

static void test_rewrite(void **state)
{
    (void)state;
    fb_egress_request r;
    const char *h = "POST http://api.example:8080/v1?x=1 HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: "
                    "Basic x\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 2\r\n"
                    "X-A: b\r\n\r\n";
    assert_int_equal(parse(h, &r), 0);
    char out[512];
    size_t n = fb_egress_request_rewrite(h, &r, out, sizeof out);
    const char *want = "POST /v1?x=1 HTTP/1.1\r\nHost: api.example:8080\r\nContent-Length: 2\r\nX-A: b\r\n"
                       "Connection: close\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    assert_int_equal(parse("GET http://a.example HTTP/1.0\r\n\r\n", &r), 0);
    n = fb_egress_request_rewrite("GET http://a.example HTTP/1.0\r\n\r\n", &r, out, sizeof out);
    want = "GET / HTTP/1.0\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    assert_int_equal(fb_egress_request_rewrite(h, &r, out, 10), 0); /* too small */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_absolute),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
