/*
 * test_lazylib.c - libraries loaded on first use (src/common/lazylib.h):
 * a library that is missing is a typed error naming it and what needs it,
 * asked again it answers the same without retrying; a present one loads
 * once and its shims reach the real functions (libpq, libcurl, GnuTLS and
 * libmicrohttpd through calls that need no server; libsqlite3, libevent,
 * c-ares and libyaml likewise, with the variadic sqlite3_db_config and
 * evbuffer_add_printf).  A shim whose library cannot be loaded ends the
 * process naming it.  The binary itself
 * must not link them: that is the point (tested here on this executable,
 * which links like build/forgebox).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ares.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <gnutls/gnutls.h>
#include <libpq-fe.h>
#include <link.h>
#include <microhttpd.h>
#include <signal.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml.h>

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

/* The four small libraries (session 5): not loaded until called, then the
 * calls reach them with their arguments intact. */
static void test_small_libraries_load_on_first_use_only(void **state)
{
    (void)state;
    assert_false(loaded("libsqlite3.so"));
    assert_false(loaded("libevent-2.1.so"));
    assert_false(loaded("libcares.so"));
    assert_false(loaded("libyaml-0.so"));

    /* SQLite, and sqlite3_db_config's variadic arguments: the on/off
     * option's int reaches SQLite and the setting comes back through the
     * int *, both ways (the store relies on this for DEFENSIVE and
     * TRUSTED_SCHEMA, sqlite_sql.c); MAINDBNAME's string arrives too. */
    assert_true(sqlite3_threadsafe() != 0);
    assert_true(loaded("libsqlite3.so"));
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     NULL),
                     SQLITE_OK);
    int on = -7;
    assert_int_equal(sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, &on), SQLITE_OK);
    assert_int_equal(on, 1);
    assert_int_equal(sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 0, &on), SQLITE_OK);
    assert_int_equal(on, 0);
    on = -7;
    assert_int_equal(sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, -1, &on), SQLITE_OK);
    assert_int_equal(on, 1); /* the default, asked without changing it */
    assert_int_equal(sqlite3_db_config(db, SQLITE_DBCONFIG_MAINDBNAME, "lazymain"), SQLITE_OK);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT name FROM pragma_database_list WHERE seq = 0",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "lazymain");
    assert_int_equal(sqlite3_finalize(s), SQLITE_OK);
    assert_int_equal(sqlite3_close_v2(db), SQLITE_OK);

    /* libevent, and evbuffer_add_printf's arguments (int, string, size_t). */
    struct event_base *base = event_base_new();
    assert_non_null(base);
    assert_true(loaded("libevent-2.1.so"));
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    assert_non_null(bev);
    struct evbuffer *out = bufferevent_get_output(bev);
    assert_int_equal(evbuffer_add_printf(out, "%d %s %zu", -42, "lazy", (size_t)1 << 40), 22);
    assert_int_equal(evbuffer_get_length(out), 22);
    /* (an output buffer's start is frozen: read it in place) */
    const unsigned char *got = evbuffer_pullup(out, -1);
    assert_non_null(got);
    assert_memory_equal(got, "-42 lazy 1099511627776", 22);
    bufferevent_free(bev);
    event_base_free(base);

    /* c-ares and libyaml. */
    assert_non_null(strstr(ares_strerror(ARES_ENOTFOUND), "not found"));
    assert_true(loaded("libcares.so"));
    yaml_parser_t p;
    yaml_document_t d;
    assert_int_equal(yaml_parser_initialize(&p), 1);
    assert_true(loaded("libyaml-0.so"));
    static const char doc[] = "lazy: [1, 2]\n";
    yaml_parser_set_input_string(&p, (const unsigned char *)doc, sizeof doc - 1);
    assert_int_equal(yaml_parser_load(&p, &d), 1);
    yaml_node_t *root = yaml_document_get_root_node(&d);
    assert_non_null(root);
    assert_int_equal(root->type, YAML_MAPPING_NODE);
    yaml_node_t *key = yaml_document_get_node(&d, root->data.mapping.pairs.start->key);
    assert_non_null(key);
    assert_string_equal((const char *)key->data.scalar.value, "lazy");
    yaml_document_delete(&d);
    yaml_parser_delete(&p);
}

/* A shim whose library cannot be loaded stops the process (it has no error
 * value to return) with a message naming the library and what needs it,
 * instead of calling through a null pointer.  In a child, with the
 * library's soname pointed at one that does not exist. */
static void test_a_shim_without_its_library_stops_naming_it(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        /* Runs before anything calls libyaml (main's order): a shim
         * that has looked its function up already would not look again. */
        if (fb_lazy_libyaml.tried)
            _exit(3);
        fb_lazy_libyaml.soname = "libyaml-forgebox-missing.so.0";
        yaml_parser_t p;
        (void)yaml_parser_initialize(&p);
        _exit(0); /* not reached: a test failure if it is */
    }
    close(fds[1]);
    char msg[1024] = {0};
    size_t n = 0;
    ssize_t r;
    while (n < sizeof msg - 1 && (r = read(fds[0], msg + n, sizeof msg - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(msg, "forgebox: cannot load libyaml-forgebox-missing.so.0"));
    assert_non_null(strstr(msg, "reading forgebox.yaml"));
    assert_non_null(strstr(msg, "scripts/install-deps.sh"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_missing_library_is_a_typed_error),
        cmocka_unit_test(test_a_shim_without_its_library_stops_naming_it),
        cmocka_unit_test(test_small_libraries_load_on_first_use_only),
        cmocka_unit_test(test_libraries_load_on_first_use_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
