/*
 * ledger.c - the CA directory's records: issued.jsonl (every certificate
 * issued) and revoked.jsonl (every revocation), one JSON object a line,
 * appended with O_APPEND so a crash leaves whole lines behind; and `ca
 * list` (ca.h), which joins the two.
 *
 * The CRL is regenerated from revoked.jsonl, so the ledger, not crl.pem,
 * is the record of truth: a lost CRL is re-signed with `ca revoke`'s
 * regeneration, never rebuilt by hand.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/internal.h"

#define LEDGER_MAX_LINES 1000000

static int append_line(const char *dir, const char *file, json_t *obj, fb_err *err)
{
    char path[4096];
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!line)
        return fb_fail_code(err, -FB_CA_EIO, "out of memory");
    int r = ca_path(dir, file, path, sizeof path, err);
    if (r == 0) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        size_t n = strlen(line);
        line[n] = '\n'; /* json_dumps' NUL becomes the newline; n+1 bytes written */
        if (fd < 0 || fb_write_all(fd, line, n + 1) < 0 || fsync(fd) < 0)
            r = fb_fail_code(err, -FB_CA_EIO, "cannot append to %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    free(line);
    return r;
}

int ca_ledger_append_issued(const char *dir, const char *serial, fb_ca_role role, const char *name,
                            long long not_after, fb_err *err)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "serial", serial, "role", fb_ca_role_name(role), "name", name,
                          "not_after", (json_int_t)not_after);
    return o ? append_line(dir, "issued.jsonl", o, err) : fb_fail_code(err, -FB_CA_EIO, "out of memory");
}

int ca_ledger_append_revoked(const char *dir, const char *serial, long long when, fb_err *err)
{
    json_t *o = json_pack("{s:s, s:I}", "serial", serial, "revoked_at", (json_int_t)when);
    return o ? append_line(dir, "revoked.jsonl", o, err) : fb_fail_code(err, -FB_CA_EIO, "out of memory");
}

/* Calls fn for every JSON object line of DIR/file (absent: none). */
static int each_line(const char *dir, const char *file, int (*fn)(json_t *o, void *arg), void *arg, fb_err *err)
{
    char path[4096];
    int r = ca_path(dir, file, path, sizeof path, err);
    if (r < 0)
        return r;
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? 0 : fb_fail_code(err, -FB_CA_EIO, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    size_t lineno = 0;
    r = 0;
    while (getline(&line, &cap, f) > 0) {
        if (++lineno > LEDGER_MAX_LINES) {
            r = fb_fail_code(err, -FB_CA_EIO, "%s: more than %d lines", path, LEDGER_MAX_LINES);
            break;
        }
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!json_is_object(o)) {
            json_decref(o);
            r = fb_fail_code(err, -FB_CA_EIO, "%s:%zu: not a JSON object (a damaged ledger; restore it)", path,
                             lineno);
            break;
        }
        int fr = fn(o, arg);
        json_decref(o);
        if (fr < 0) {
            r = fb_fail_code(err, -FB_CA_EIO, "%s:%zu: a record without its fields", path, lineno);
            break;
        }
    }
    free(line);
    fclose(f);
    return r;
}

/* v with room for one more element of size (capacity *cap, n used):
 * v itself, or a moved copy; NULL when out of memory (v is kept). */
static void *grow(void *v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return v;
    size_t nc = *cap ? *cap * 2 : 16;
    void *nv = realloc(v, nc * size);
    if (nv)
        *cap = nc;
    return nv;
}

struct revs {
    ca_revocation *v;
    size_t n, cap;
};

static int take_revoked(json_t *o, void *arg)
{
    struct revs *rv = arg;
    const char *s = json_string_value(json_object_get(o, "serial"));
    json_t *w = json_object_get(o, "revoked_at");
    if (!s || strlen(s) >= sizeof rv->v[0].serial || !json_is_integer(w))
        return -1;
    ca_revocation *nv = grow(rv->v, &rv->cap, rv->n, sizeof *nv);
    if (!nv)
        return -1;
    rv->v = nv;
    snprintf(rv->v[rv->n].serial, sizeof rv->v[0].serial, "%s", s);
    rv->v[rv->n].when = (long long)json_integer_value(w);
    rv->n++;
    return 0;
}

int ca_ledger_revoked(const char *dir, ca_revocation **out, size_t *n, fb_err *err)
{
    struct revs rv = {0};
    int r = each_line(dir, "revoked.jsonl", take_revoked, &rv, err);
    if (r < 0) {
        free(rv.v);
        return r;
    }
    *out = rv.v;
    *n = rv.n;
    return 0;
}

struct recs {
    fb_ca_record *v;
    size_t n, cap;
};

static int take_issued(json_t *o, void *arg)
{
    struct recs *rs = arg;
    const char *s = json_string_value(json_object_get(o, "serial"));
    const char *role = json_string_value(json_object_get(o, "role"));
    const char *name = json_string_value(json_object_get(o, "name"));
    json_t *na = json_object_get(o, "not_after");
    int r = fb_ca_role_from_name(role);
    if (!s || !name || r < 0 || !json_is_integer(na) || strlen(s) >= sizeof rs->v[0].serial ||
        strlen(name) >= sizeof rs->v[0].name)
        return -1;
    fb_ca_record *nv = grow(rs->v, &rs->cap, rs->n, sizeof *nv);
    if (!nv)
        return -1;
    rs->v = nv;
    fb_ca_record *rec = &rs->v[rs->n++];
    memset(rec, 0, sizeof *rec);
    snprintf(rec->serial, sizeof rec->serial, "%s", s);
    snprintf(rec->name, sizeof rec->name, "%s", name);
    rec->role = (fb_ca_role)r;
    rec->not_after = (long long)json_integer_value(na);
    return 0;
}

int fb_ca_list(const char *dir, fb_ca_record **out, size_t *n, fb_err *err)
{
    char p[4096];
    int r = ca_path(dir, "ca.crt", p, sizeof p, err);
    if (r < 0)
        return r;
    if (access(p, F_OK) < 0)
        return fb_fail_code(err, -FB_CA_ENOCA, "ca: %s holds no CA (run `forgebox ca init --dir %s`)", dir, dir);
    struct recs rs = {0};
    ca_revocation *rv = NULL;
    size_t nrv = 0;
    if ((r = each_line(dir, "issued.jsonl", take_issued, &rs, err)) < 0 ||
        (r = ca_ledger_revoked(dir, &rv, &nrv, err)) < 0) {
        free(rs.v);
        return r;
    }
    for (size_t i = 0; i < rs.n; i++)
        for (size_t j = 0; j < nrv; j++)
            if (strcmp(rs.v[i].serial, rv[j].serial) == 0)
                rs.v[i].revoked = true;
    free(rv);
    *out = rs.v;
    *n = rs.n;
    return 0;
}
