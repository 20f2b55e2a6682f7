/*
 * store_url.h - lets a store unit test run against PostgreSQL as well.
 *
 * With FORGEBOX_TEST_STORE_URL unset, test_store_open is fb_store_open (the
 * SQLite store under the state directory).  With it set (a postgresql://
 * URL; tests/integration/test_store_postgres.py sets it against a
 * PostgreSQL it starts), test_store_open opens that database instead, after
 * emptying it (its public schema dropped and re-created), so every test
 * starts from a fresh store just as it does with a fresh state directory.
 */
#ifndef FB_TEST_STORE_URL_H
#define FB_TEST_STORE_URL_H

#include <libpq-fe.h>
#include <stdlib.h>

#include "store/store.h"

static inline int test_store_open(const char *dir, fb_store **st, fb_err *err)
{
    const char *url = getenv("FORGEBOX_TEST_STORE_URL");
    if (url && *url) {
        PGconn *c = PQconnectdb(url);
        PGresult *r = PQexec(c, "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fb_fail(err, "cannot empty the test database: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        if (!ok)
            return -1;
    }
    return fb_store_open_url(dir, url, st, err);
}

#endif
