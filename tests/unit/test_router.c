/*
 * test_router.c - unit tests for the gateway's route matching
 * (src/gateway/router.h) and its real route table (gw.h).
 *
 * Pattern matching with and without {id}, the id alphabet and length,
 * trailing slashes and prefixes, methods (first match wins, 405 versus
 * 404), and the assembled table: every route resolves to itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/gw.h"
#include "gateway/router.h"

static const gw_route_def defs[] = {
    {"GET", "/healthz"},
    {"POST", "/v1/sandboxes"},
    {"GET", "/v1/sandboxes"},
    {"GET", "/v1/sandboxes/{id}"},
    {"DELETE", "/v1/sandboxes/{id}"},
    {"POST", "/v1/sandboxes/{id}/exec"},
    {"GET", "/v1/things/{id}/parts/{part_id}"},
};
#define NDEFS (sizeof defs / sizeof defs[0])

static void test_literal_routes(void **state)
{
    (void)state;
    gw_params p;
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", "/healthz", &p), 0);
    assert_int_equal(p.n, 0);
    assert_int_equal(gw_route_find(defs, NDEFS, "POST", "/v1/sandboxes", &p), 1);
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", "/v1/sandboxes", &p), 2);
}

static void test_ids_are_captured(void **state)
{
    (void)state;
    gw_params p;
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", "/v1/sandboxes/sb-0123_abc", &p), 3);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.v[0], "sb-0123_abc");
    assert_int_equal(gw_route_find(defs, NDEFS, "POST", "/v1/sandboxes/X/exec", &p), 5);
    assert_string_equal(p.v[0], "X");
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", "/v1/things/a/parts/b", &p), 6);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.v[0], "a");
    assert_string_equal(p.v[1], "b");
}

static void test_bad_ids_do_not_match(void **state)
{
    (void)state;
    gw_params p;
    static const char *const bad[] = {
        "/v1/sandboxes/",          "/v1/sandboxes/a.b",     "/v1/sandboxes/..",  "/v1/sandboxes/a%2fb",
        "/v1/sandboxes/a b",       "/v1/sandboxes/\xc3\xa9", "/v1/sandboxes/a/",  "/v1/sandboxes//exec",
        "/v1/sandboxes/a/exec/",   "/v1/sandboxes/a/execx", "/v1/sandboxesx",     "/v1/sandboxes/a?b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(gw_route_find(defs, NDEFS, "GET", bad[i], &p), GW_ROUTE_NONE);
}

static void test_id_length_limit(void **state)
{
    (void)state;
    char path[200], id[80];
    gw_params p;
    memset(id, 'a', 64);
    id[64] = '\0';
    snprintf(path, sizeof path, "/v1/sandboxes/%s", id);
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", path, &p), 3);
    assert_string_equal(p.v[0], id);
    id[64] = 'a';
    id[65] = '\0';
    snprintf(path, sizeof path, "/v1/sandboxes/%s", id);
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", path, &p), GW_ROUTE_NONE);
}

static void test_methods(void **state)
{
    (void)state;
    gw_params p;
    assert_int_equal(gw_route_find(defs, NDEFS, "PATCH", "/v1/sandboxes", &p), GW_ROUTE_BAD_METHOD);
    assert_int_equal(gw_route_find(defs, NDEFS, "DELETE", "/v1/sandboxes/x", &p), 4);
    assert_int_equal(gw_route_find(defs, NDEFS, "PUT", "/v1/sandboxes/x", &p), GW_ROUTE_BAD_METHOD);
    assert_int_equal(gw_route_find(defs, NDEFS, "get", "/healthz", &p), GW_ROUTE_BAD_METHOD);
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", "/nothing", &p), GW_ROUTE_NONE);
    assert_int_equal(gw_route_find(defs, NDEFS, "GET", "", &p), GW_ROUTE_NONE);
}

/* The real table: every declared route finds itself, ids and all, and
 * `forgebox routes` lists exactly the table. */
static void test_real_table(void **state)
{
    (void)state;
    size_t n = gw_routes_count();
    assert_true(n >= 18);
    const char *const *listed = fb_gateway_routes();
    for (size_t i = 0; i < n; i++) {
        const gw_route *rt = gw_route_at(i);
        char path[128], want[128];
        size_t k = 0;
        for (const char *c = rt->def.pattern; *c && k < sizeof path - 8;) {
            if (*c == '{') { /* any {name} segment */
                memcpy(path + k, "id-1", 4);
                k += 4;
                c = strchr(c, '}') + 1;
            } else {
                path[k++] = *c++;
            }
        }
        path[k] = '\0';
        gw_params p;
        int found = gw_route_find(gw_route_defs(), n, rt->def.method, path, &p);
        assert_int_equal(found, (int)i);
        snprintf(want, sizeof want, "%s %s", rt->def.method, rt->def.pattern);
        assert_string_equal(listed[i], want);
        /* Every route that reads a JSON body declares its fields; every
         * stream declares its operations; a permission where one is due. */
        if (rt->body == GW_BODY_JSON)
            assert_non_null(rt->fields);
        if (rt->body == GW_BODY_STREAM)
            assert_non_null(rt->stream);
        else
            assert_non_null(rt->fn);
        /* Routes that take any key (MCP) leave every decision to the
         * services they call, and declare none. */
        if (rt->resolve != GW_RES_PUBLIC && rt->resolve != GW_RES_KEY &&
            rt->resolve != GW_RES_SELF)
            assert_true(rt->perm != 0);
        if (rt->resolve == GW_RES_KEY)
            assert_true(rt->perm == 0);
    }
    assert_null(listed[n]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_routes), cmocka_unit_test(test_ids_are_captured),
        cmocka_unit_test(test_bad_ids_do_not_match), cmocka_unit_test(test_id_length_limit),
        cmocka_unit_test(test_methods), cmocka_unit_test(test_real_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
