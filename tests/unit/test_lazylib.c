/*
 * test_lazylib.c - libraries loaded on first use (src/common/lazylib.h):
 * a library that is missing is a typed error naming it and what needs it,
 * asked again it answers the same without retrying; a present one loads
 * once and its shims reach the real functions (libpq, libcurl, GnuTLS and
 * libmicrohttpd through calls that need no server).  The binary itself
 * must not link them: that is the point (tested here on this executable,
 * which links like build/forgebox).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <libpq-fe.h>
#include <link.h>
#include <microhttpd.h>
#include <string.h>

#include "common/lazylib.h"

static void test_a_missing_library_is_a_typed_error(void **state)
{
    (void)state;
    fb_lazylib lib = FB_LAZYLIB_INIT("libforgebox-does-not-exist.so.9", "this test");
    fb_err err = {{0}};
    assert_int_equal(fb_lazylib_require(&lib, &err), -1);
    assert_non_null(strstr(err.msg, "libforgebox-does-not-exist.so.9"));
    assert_non_null(strstr(err.msg, "this test"));
    fb_err again = {{0}};
    assert_int_equal(fb_lazylib_require(&lib, &again), -1);
    assert_string_equal(err.msg, again.msg);
}

static size_t write_nothing(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

static int linked(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    return strstr(info->dlpi_name, (const char *)data) != NULL;
}

/* Whether a library whose path contains `name` is mapped in this process. */
static bool loaded(const char *name)
{
    return dl_iterate_phdr(linked, (void *)name) != 0;
}

static void test_libraries_load_on_first_use_only(void **state)
{
    (void)state;
    /* Nothing has called them yet: not linked, not loaded. */
    assert_false(loaded("libpq.so"));
    assert_false(loaded("libcurl"));
    assert_false(loaded("libgnutls.so"));
    assert_false(loaded("libmicrohttpd.so"));

    /* A call through each shim loads the library and returns its answer. */
    assert_string_equal(PQresStatus(PGRES_COMMAND_OK), "PGRES_COMMAND_OK");
    assert_true(loaded("libpq.so"));
    assert_string_equal(curl_easy_strerror(CURLE_OK), "No error");
    assert_true(loaded("libcurl"));
    assert_non_null(strstr(gnutls_strerror(GNUTLS_E_MEMORY_ERROR), "memory"));
    assert_true(loaded("libgnutls.so"));
    struct MHD_Response *r = MHD_create_response_from_buffer(2, "ok", MHD_RESPMEM_PERSISTENT);
    assert_non_null(r);
    assert_int_equal(MHD_add_response_header(r, "X-Test", "1"), MHD_YES);
    MHD_destroy_response(r);
    assert_true(loaded("libmicrohttpd.so"));

    /* curl_easy_setopt's one variadic argument reaches libcurl intact
     * whatever its type (long, pointer, function, curl_off_t): the
     * private pointer comes back out through curl_easy_getinfo. */
    CURL *c = curl_easy_init();
    assert_non_null(c);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1500L), CURLE_OK);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_nothing), CURLE_OK);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)1 << 40), CURLE_OK);
    static int marker;
    assert_int_equal(curl_easy_setopt(c, CURLOPT_PRIVATE, &marker), CURLE_OK);
    void *back = NULL;
    assert_int_equal(curl_easy_getinfo(c, CURLINFO_PRIVATE, &back), CURLE_OK);
    assert_ptr_equal(back, &marker);
    /* A long out of range is refused and one in range taken: the value
     * arrived as itself, not as garbage that might pass either way. */
    assert_int_equal(curl_easy_setopt(c, CURLOPT_PORT, 70000L), CURLE_BAD_FUNCTION_ARGUMENT);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_PORT, 8080L), CURLE_OK);
    curl_easy_cleanup(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_missing_library_is_a_typed_error),
        cmocka_unit_test(test_libraries_load_on_first_use_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
