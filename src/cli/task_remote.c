/*
 * task_remote.c - `forgebox task list|show|approve|deny|cancel|events`: the
 * tasks of a gateway, from a shell (docs/cli.md, "Tasks on a gateway").
 *
 * A thin client of the HTTP API (docs/openapi.yaml), through libcurl, so
 * that it works against any gateway the user can reach, local or not; it
 * holds no rule of its own: every decision (permissions, teams, states) is
 * the gateway's, and a refusal is printed with the gateway's error code and
 * message.
 *
 * The API key comes from FORGEBOX_API_KEY or --key-file, never from an
 * argument: a command line is visible to every user of the host (ps,
 * /proc/PID/cmdline).  It lives in one buffer, is sent only in the
 * Authorization header of requests to --url, never follows a redirect, and
 * is wiped before exit.  What the gateway returns is the model's and the
 * tools' text, so everything shown on a terminal is stripped of control
 * bytes (an escape sequence in a tool's output must not drive the
 * terminal); --json prints the API's JSON as it came.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "common/util.h"

#define KEY_MAX 512
#define BODY_MAX (64u * 1024 * 1024)
#define SSE_LINE_MAX (16u * 1024 * 1024)

typedef struct remote {
    char url[1024];       /* no trailing slash */
    char key[KEY_MAX];    /* "" when none */
    bool json;
    fb_ca_client tls;     /* FORGEBOX_CLIENT_*: mutual TLS (src/ca/client.c) */
} remote;

static int usage(FILE *out, int rc)
{
    fprintf(out,
            "usage: forgebox task list [--json]\n"
            "       forgebox task show TASK [--json]\n"
            "       forgebox task approve TASK APPROVAL [--reason TEXT]\n"
            "       forgebox task deny TASK APPROVAL [--reason TEXT]\n"
            "       forgebox task cancel TASK\n"
            "       forgebox task events TASK [--after SEQ] [--json]\n"
            "       forgebox task run ...         (runs a task locally: forgebox task run --help)\n"
            "options of every verb: --url URL (else $FORGEBOX_URL), --key-file FILE (else\n"
            "$FORGEBOX_API_KEY; never the key itself as an argument: others can read argv)\n"
            "mutual TLS: $FORGEBOX_CLIENT_CERT, _KEY, _CA, _CRL (docs/certificates.md)\n");
    return rc;
}

/* ---- terminal-safe text --------------------------------------------------- */

/* Writes s with every control byte but \n and \t shown as '?', so that text
 * from the model or a tool cannot move the cursor or retitle the terminal. */
static void put_safe(FILE *out, const char *s, size_t max)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n < max; p++, n++) {
        unsigned char ch = *p;
        fputc((ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f ? '?' : ch, out);
    }
    if (s[n] != '\0')
        fputs("...", out);
}

/* One line: newlines shown as spaces, at most max bytes. */
static void put_line(FILE *out, const char *s, size_t max)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n < max; p++, n++)
        fputc(*p < 0x20 || *p == 0x7f ? ' ' : *p, out);
    if (s[n] != '\0')
        fputs("...", out);
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long jint(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* Compact JSON of o (NULL: "null"); free it. */
static char *jdump(const json_t *o)
{
    return o ? json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
}

/* ---- the connection ---------------------------------------------------------- */

static int read_key_file(const char *path, char *key, fb_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return fb_fail_errno(err, "cannot read --key-file %s", path);
    size_t n = fread(key, 1, KEY_MAX - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    key[n] = '\0';
    n = strcspn(key, "\r\n");
    key[n] = '\0';
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t'))
        key[--n] = '\0';
    if (more && n == KEY_MAX - 1)
        return fb_fail(err, "--key-file %s: the key is longer than %d bytes", path, KEY_MAX - 1);
    if (n == 0)
        return fb_fail(err, "--key-file %s holds no key on its first line", path);
    return 0;
}

static int remote_setup(remote *r, const char *url, const char *key_file, fb_err *err)
{
    if (!url || !*url)
        url = getenv("FORGEBOX_URL");
    if (!url || !*url)
        return fb_fail(err, "no gateway: give --url URL or set FORGEBOX_URL (e.g. http://127.0.0.1:8420)");
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return fb_fail(err, "--url must start with http:// or https://, not '%.64s'", url);
    if (strlen(url) >= sizeof r->url || strpbrk(url, " \t\r\n"))
        return fb_fail(err, "--url is not a usable URL");
    snprintf(r->url, sizeof r->url, "%s", url);
    if (fb_ca_client_from_env(&r->tls, err) < 0)
        return -1;
    size_t n = strlen(r->url);
    while (n > 0 && r->url[n - 1] == '/')
        r->url[--n] = '\0';
    if (key_file)
        return read_key_file(key_file, r->key, err);
    const char *env = getenv("FORGEBOX_API_KEY");
    if (!env || !*env)
        return fb_fail(err, "no API key: set FORGEBOX_API_KEY or give --key-file FILE");
    if (strlen(env) >= KEY_MAX || strpbrk(env, "\r\n"))
        return fb_fail(err, "FORGEBOX_API_KEY is not a usable key");
    snprintf(r->key, sizeof r->key, "%s", env);
    return 0;
}

/* Makes *buf hold at least need bytes (doubling), refusing beyond max. */
static int grow(char **buf, size_t *cap, size_t need, size_t max)
{
    if (need <= *cap)
        return 0;
    if (need > max)
        return -1;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    char *n = realloc(*buf, c);
    if (!n)
        return -1;
    *buf = n;
    *cap = c;
    return 0;
}

typedef struct body_buf {
    char *data;
    size_t len, cap;
    bool too_big;
} body_buf;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    body_buf *b = user;
    size_t n = size * nmemb;
    if (grow(&b->data, &b->cap, b->len + n + 1, BODY_MAX) < 0) {
        b->too_big = b->len + n + 1 > BODY_MAX;
        return 0;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* A request handle for url + path, with the key and (body non-NULL) a JSON
 * body; *hdrs is freed by the caller. */
static CURL *remote_handle(const remote *r, const char *method, const char *path, const char *body,
                           const char *extra_header, struct curl_slist **hdrs)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", r->url, path);
    char auth[KEY_MAX + 32];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", r->key);
    *hdrs = curl_slist_append(NULL, auth);
    sodium_memzero(auth, sizeof auth);
    *hdrs = curl_slist_append(*hdrs, "Accept: application/json");
    *hdrs = curl_slist_append(*hdrs, "User-Agent: forgebox-cli/1");
    if (extra_header)
        *hdrs = curl_slist_append(*hdrs, extra_header);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        *hdrs = curl_slist_append(*hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
    if (fb_ca_client_apply(&r->tls, h, NULL) < 0) {
        curl_easy_cleanup(h);
        return NULL;
    }
    return h;
}

/* Prints the gateway's error answer: "forgebox task: 404 not_found: no
 * such task (request req-…)". */
static int report_error(long status, const char *body, const char *request_id)
{
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    json_t *e = json_object_get(doc, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    fprintf(stderr, "forgebox task: %ld %s: ", status, code ? code : "error");
    if (msg)
        put_line(stderr, msg, 1000);
    else
        put_line(stderr, body && *body ? body : "(no body)", 200);
    if (request_id && *request_id)
        fprintf(stderr, " (request %s)", request_id);
    fputc('\n', stderr);
    json_decref(doc);
    return 1;
}

typedef struct hdr_state {
    char request_id[64];
} hdr_state;

static size_t header_cb(char *buf, size_t size, size_t nitems, void *user)
{
    hdr_state *hs = user;
    size_t n = size * nitems;
    static const char name[] = "x-request-id:";
    if (n > sizeof name && strncasecmp(buf, name, sizeof name - 1) == 0) {
        const char *v = buf + sizeof name - 1;
        size_t vn = n - (sizeof name - 1);
        while (vn && (*v == ' ' || *v == '\t'))
            v++, vn--;
        while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
            vn--;
        snprintf(hs->request_id, sizeof hs->request_id, "%.*s", (int)(vn < 63 ? vn : 63), v);
    }
    return n;
}

/* Runs the request with write_fn receiving the body; the status in
 * *status, the request id in *hs.  Frees h and hdrs. */
static CURLcode perform(CURL *h, struct curl_slist *hdrs, curl_write_callback write_fn, void *write_data,
                        hdr_state *hs, long *status)
{
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_fn);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, write_data);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, hs);
    CURLcode rc = curl_easy_perform(h);
    *status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(h);
    for (struct curl_slist *l = hdrs; l; l = l->next)     /* one of them holds the key */
        sodium_memzero(l->data, strlen(l->data));
    curl_slist_free_all(hdrs);
    return rc;
}

/* One request; on 2xx *out is the decoded JSON (NULL for an empty body)
 * and 0 is returned; otherwise the error is printed and 1 returned. */
static int remote_call(const remote *r, const char *method, const char *path, json_t *body, json_t **out)
{
    *out = NULL;
    cleanup_free char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hdrs = NULL;
    CURL *h = remote_handle(r, method, path, text, NULL, &hdrs);
    if (!h) {
        fprintf(stderr, "forgebox task: out of memory\n");
        return 1;
    }
    body_buf b = {0};
    hdr_state hs = {{0}};
    long status;
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = perform(h, hdrs, body_write, &b, &hs, &status);
    int ret = 0;
    if (rc != CURLE_OK) {
        fprintf(stderr, "forgebox task: %s %s: %s\n", method, r->url,
                b.too_big ? "the answer is larger than 64 MiB" : curl_easy_strerror(rc));
        ret = 1;
    } else if (status >= 400) {
        ret = report_error(status, b.data, hs.request_id);
    } else if (b.len > 0) {
        json_error_t je;
        *out = json_loadb(b.data, b.len, 0, &je);
        if (!*out) {
            fprintf(stderr, "forgebox task: the gateway's answer is not JSON (%s)\n", je.text);
            ret = 1;
        }
    }
    free(b.data);
    return ret;
}

/* "/v1/tasks/<escaped id><suffix>" */
static int task_path(char *out, size_t cap, const char *id, const char *suffix)
{
    char *esc = curl_easy_escape(NULL, id, 0);
    if (!esc)
        return -1;
    int n = snprintf(out, cap, "/v1/tasks/%s%s", esc, suffix ? suffix : "");
    curl_free(esc);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- printing -------------------------------------------------------------------- */

static void print_json(const json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s) {
        puts(s);
        free(s);
    }
}

static void print_list(const json_t *doc)
{
    const json_t *tasks = json_object_get(doc, "tasks");
    printf("%-24s %-16s %-24s %5s %5s %-20s %s\n", "ID", "STATE", "PROVIDER/MODEL", "TURNS", "TOOLS",
           "CREATED", "PROMPT");
    size_t i;
    const json_t *t;
    json_array_foreach(tasks, i, t) {
        const json_t *u = json_object_get(t, "usage");
        char pm[128];
        snprintf(pm, sizeof pm, "%s/%s", jstr(t, "provider"), jstr(t, "model"));
        put_line(stdout, jstr(t, "id"), 24);
        printf("%*s ", (int)(strlen(jstr(t, "id")) < 24 ? 24 - strlen(jstr(t, "id")) : 0), "");
        printf("%-16s ", jstr(t, "state"));
        put_line(stdout, pm, 24);
        printf("%*s ", (int)(strlen(pm) < 24 ? 24 - strlen(pm) : 0), "");
        printf("%5lld %5lld %-20.20s ", jint(u, "turns"), jint(u, "tool_calls"), jstr(t, "created_at"));
        put_line(stdout, jstr(t, "prompt"), 60);
        putchar('\n');
    }
    if (json_array_size(tasks) == 0)
        printf("(no tasks)\n");
}

static void print_field(const char *name, const char *value)
{
    printf("%-12s ", name);
    put_line(stdout, value && *value ? value : "-", 2000);
    putchar('\n');
}

static void print_json_field(const char *name, const json_t *v)
{
    char *s = jdump(v);
    print_field(name, s);
    free(s);
}

static void print_task(const json_t *t, const json_t *approvals)
{
    static const char *const plain[] = {"id", "state", "provider", "model", "backend", "sandbox_id",
                                        "team_id", "created_by", "created_at", "started_at",
                                        "finished_at"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        print_field(plain[i], jstr(t, plain[i]));
    static const char *const structured[] = {"tools", "approvals", "network", "limits", "usage"};
    for (size_t i = 0; i < sizeof structured / sizeof structured[0]; i++)
        print_json_field(structured[i], json_object_get(t, structured[i]));
    print_field("error", jstr(t, "error"));
    printf("prompt:\n");
    put_safe(stdout, jstr(t, "prompt"), 4000);
    printf("\nresult:\n");
    put_safe(stdout, jstr(t, "result"), 64 * 1024);
    putchar('\n');
    const json_t *list = json_object_get(approvals, "approvals");
    if (json_array_size(list) == 0)
        return;
    printf("approvals:\n");
    size_t i;
    const json_t *a;
    json_array_foreach(list, i, a) {
        char *in = jdump(json_object_get(a, "input"));
        printf("  %s  %-8s %-10s ", jstr(a, "id"), jstr(a, "state"), jstr(a, "tool"));
        put_line(stdout, in ? in : "", 100);
        if (*jstr(a, "decided_by")) {
            printf("  (by %s", jstr(a, "decided_by"));
            if (*jstr(a, "reason")) {
                fputs(": ", stdout);
                put_line(stdout, jstr(a, "reason"), 200);
            }
            putchar(')');
        }
        putchar('\n');
        free(in);
    }
}

/* One event, readable: text deltas run on as they come; everything else is
 * a line of its own. */
typedef struct event_printer {
    bool json;
    bool in_text;      /* the last thing printed was a text delta */
    char final[32];    /* the last state event's state */
    long long last_seq;
} event_printer;

static void print_event(event_printer *p, const json_t *ev)
{
    const char *type = jstr(ev, "type");
    const json_t *d = json_object_get(ev, "data");
    p->last_seq = jint(ev, "seq");
    if (strcmp(type, "state") == 0)
        snprintf(p->final, sizeof p->final, "%s", jstr(d, "state"));
    if (p->json) {
        char *s = jdump(ev);
        puts(s ? s : "null");
        free(s);
        fflush(stdout);
        return;
    }
    if (strcmp(type, "text") == 0) {
        put_safe(stdout, jstr(d, "delta"), 1u << 20);
        p->in_text = true;
        fflush(stdout);
        return;
    }
    if (p->in_text)
        putchar('\n');
    p->in_text = false;
    char *in = NULL;
    if (strcmp(type, "tool_call") == 0) {
        in = jdump(json_object_get(d, "input"));
        printf("-> %s ", jstr(d, "tool"));
        put_line(stdout, in ? in : "", 300);
    } else if (strcmp(type, "tool_result") == 0) {
        printf("<- %s%s\n", jstr(d, "tool"), json_is_true(json_object_get(d, "is_error")) ? " (error)" : "");
        put_safe(stdout, jstr(d, "output"), 2000);
    } else if (strcmp(type, "approval_required") == 0) {
        in = jdump(json_object_get(d, "input"));
        printf("?? approval %s: %s ", jstr(d, "approval_id"), jstr(d, "tool"));
        put_line(stdout, in ? in : "", 300);
        printf("\n   decide with: forgebox task approve|deny TASK %s", jstr(d, "approval_id"));
    } else if (strcmp(type, "approval_resolved") == 0) {
        printf("!! approval %s %s", jstr(d, "approval_id"), jstr(d, "decision"));
        if (*jstr(d, "decided_by"))
            printf(" by %s", jstr(d, "decided_by"));
    } else if (strcmp(type, "message") == 0) {
        printf("[%s] ", jstr(d, "role"));
        put_safe(stdout, jstr(d, "content"), 4000);
    } else if (strcmp(type, "state") == 0) {
        printf("== %s", jstr(d, "state"));
        if (*jstr(d, "error")) {
            fputs(": ", stdout);
            put_line(stdout, jstr(d, "error"), 1000);
        }
    } else if (strcmp(type, "usage") == 0) {
        printf("   usage: %lld in, %lld out, %lld turns, %lld tool calls", jint(d, "input_tokens"),
               jint(d, "output_tokens"), jint(d, "turns"), jint(d, "tool_calls"));
    } else {
        in = jdump(d);
        printf("%s ", type);
        put_line(stdout, in ? in : "", 300);
    }
    free(in);
    putchar('\n');
    fflush(stdout);
}

/* ---- events (SSE) ------------------------------------------------------------------ */

typedef struct sse_state {
    event_printer *printer;
    char *line;           /* the line being read */
    size_t len, cap;
    char *data;           /* data: lines of the current event */
    size_t dlen, dcap;
    bool bad;
    body_buf err;         /* the body of an error answer */
    long status;
    CURL *h;
} sse_state;

static void sse_line(sse_state *s)
{
    char *l = s->line;
    l[s->len] = '\0';
    if (s->len && l[s->len - 1] == '\r')
        l[--s->len] = '\0';
    if (s->len == 0) {              /* the end of an event */
        if (s->dlen) {
            json_t *ev = json_loadb(s->data, s->dlen, 0, NULL);
            if (json_is_object(ev))
                print_event(s->printer, ev);
            json_decref(ev);
        }
        s->dlen = 0;
        return;
    }
    if (strncmp(l, "data:", 5) != 0)
        return;                     /* id:, event: and comments: the data holds all of it */
    const char *v = l + 5;
    if (*v == ' ')
        v++;
    size_t n = strlen(v);
    if (grow(&s->data, &s->dcap, s->dlen + n + 2, SSE_LINE_MAX) < 0) {
        s->bad = true;
        return;
    }
    if (s->dlen)
        s->data[s->dlen++] = '\n';
    memcpy(s->data + s->dlen, v, n);
    s->dlen += n;
}

static size_t sse_write(char *ptr, size_t size, size_t nmemb, void *user)
{
    sse_state *s = user;
    size_t n = size * nmemb;
    if (!s->status)
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status >= 300)
        return body_write(ptr, size, nmemb, &s->err);
    for (size_t i = 0; i < n; i++) {
        if (ptr[i] == '\n') {
            if (grow(&s->line, &s->cap, s->len + 1, SSE_LINE_MAX) < 0)
                return 0;
            sse_line(s);
            s->len = 0;
            if (s->bad)
                return 0;
            continue;
        }
        if (grow(&s->line, &s->cap, s->len + 2, SSE_LINE_MAX) < 0) {
            s->bad = true;
            return 0;
        }
        s->line[s->len++] = ptr[i];
    }
    return n;
}

static int follow_events(const remote *r, const char *path, long long after, event_printer *p)
{
    char last[64] = "";
    if (after >= 0)
        snprintf(last, sizeof last, "Last-Event-ID: %lld", after);
    struct curl_slist *hdrs = NULL;
    CURL *h = remote_handle(r, "GET", path, NULL, last[0] ? last : NULL, &hdrs);
    if (!h) {
        fprintf(stderr, "forgebox task: out of memory\n");
        return 1;
    }
    hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    sse_state s = {.printer = p, .h = h};
    hdr_state hs = {{0}};
    long status;
    CURLcode rc = perform(h, hdrs, sse_write, &s, &hs, &status);
    int ret = 0;
    if (p->in_text)
        putchar('\n');
    if (status >= 300 && status != 304)
        ret = report_error(status, s.err.data, hs.request_id);
    else if (rc != CURLE_OK)
        ret = (fprintf(stderr, "forgebox task: the event stream broke after event %lld: %s%s\n", p->last_seq,
                       s.bad ? "an event line too long, " : "", curl_easy_strerror(rc)), 1);
    free(s.line);
    free(s.data);
    free(s.err.data);
    return ret;
}

/* ---- the verbs ----------------------------------------------------------------------- */

static int verb_list(const remote *r)
{
    json_t *doc;
    if (remote_call(r, "GET", "/v1/tasks", NULL, &doc))
        return 1;
    r->json ? print_json(doc) : print_list(doc);
    json_decref(doc);
    return 0;
}

static int verb_show(const remote *r, const char *id)
{
    char path[512], apath[512];
    if (task_path(path, sizeof path, id, NULL) < 0 || task_path(apath, sizeof apath, id, "/approvals") < 0)
        return (fprintf(stderr, "forgebox task: task id too long\n"), FB_EXIT_USAGE);
    json_t *t, *a = NULL;
    if (remote_call(r, "GET", path, NULL, &t))
        return 1;
    if (remote_call(r, "GET", apath, NULL, &a)) {
        json_decref(t);
        return 1;
    }
    if (r->json) {
        json_object_set(t, "approval_list", json_object_get(a, "approvals"));
        print_json(t);
    } else {
        print_task(t, a);
    }
    json_decref(t);
    json_decref(a);
    return 0;
}

static int verb_decide(const remote *r, const char *id, const char *aid, bool approve, const char *reason)
{
    char path[1024];
    char *esc = curl_easy_escape(NULL, aid, 0);
    char suffix[600];
    int n = esc ? snprintf(suffix, sizeof suffix, "/approvals/%s", esc) : -1;
    curl_free(esc);
    if (n < 0 || (size_t)n >= sizeof suffix || task_path(path, sizeof path, id, suffix) < 0)
        return (fprintf(stderr, "forgebox task: id too long\n"), FB_EXIT_USAGE);
    json_t *body = json_pack("{s:s}", "decision", approve ? "approve" : "deny");
    if (reason)
        json_object_set_new(body, "reason", json_string(reason));
    json_t *out;
    int rc = remote_call(r, "POST", path, body, &out);
    json_decref(body);
    if (rc)
        return 1;
    if (r->json)
        print_json(out);
    else
        printf("approval %s of task %s: %s\n", aid, id, *jstr(out, "state") ? jstr(out, "state")
                                                                             : approve ? "approved" : "denied");
    json_decref(out);
    return 0;
}

static int verb_cancel(const remote *r, const char *id)
{
    char path[512];
    if (task_path(path, sizeof path, id, "/cancel") < 0)
        return (fprintf(stderr, "forgebox task: task id too long\n"), FB_EXIT_USAGE);
    json_t *out;
    if (remote_call(r, "POST", path, NULL, &out))
        return 1;
    if (r->json)
        print_json(out);
    else
        printf("task %s: %s\n", id, *jstr(out, "state") ? jstr(out, "state") : "cancelled");
    json_decref(out);
    return 0;
}

/* Follows the task's events until it ends; exits 0 when it succeeded, 1
 * otherwise (so that a script can wait on a task). */
static int verb_events(const remote *r, const char *id, long long after)
{
    char path[512];
    if (task_path(path, sizeof path, id, "/events") < 0)
        return (fprintf(stderr, "forgebox task: task id too long\n"), FB_EXIT_USAGE);
    event_printer p = {.json = r->json, .last_seq = after};
    if (follow_events(r, path, after, &p))
        return 1;
    return p.final[0] == '\0' || strcmp(p.final, "succeeded") == 0 ? 0 : 1;
}

static int parse_seq(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

int fb_cli_task_remote(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},   {"key-file", required_argument, NULL, 'k'},
        {"json", no_argument, NULL, 'j'},        {"reason", required_argument, NULL, 'r'},
        {"after", required_argument, NULL, 'a'}, {"help", no_argument, NULL, 'h'},
        {"key", required_argument, NULL, 'K'},   {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return usage(stderr, FB_EXIT_USAGE);
    const char *verb = argv[1];
    if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0)
        return usage(stdout, 0);
    const char *url = NULL, *key_file = NULL, *reason = NULL;
    long long after = -1;
    bool json = false;
    /* Options may come before or after the verb's arguments. */
    int oargc = argc - 1;
    char **oargv = argv + 1;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(oargc, oargv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 'k': key_file = optarg; break;
        case 'j': json = true; break;
        case 'r': reason = optarg; break;
        case 'a':
            if (parse_seq(optarg, &after) < 0) {
                fprintf(stderr, "forgebox task: --after takes an event number, not '%.32s'\n", optarg);
                return FB_EXIT_USAGE;
            }
            break;
        case 'h': return usage(stdout, 0);
        case 'K':
            /* Refused on purpose, without echoing it: argv is public. */
            fprintf(stderr, "forgebox task: a key is never taken as an argument (others can read the "
                            "command line); set FORGEBOX_API_KEY or use --key-file\n");
            return FB_EXIT_USAGE;
        default:
            fprintf(stderr, "forgebox task: unknown or incomplete option '%.64s'\n", oargv[optind - 1]);
            return usage(stderr, FB_EXIT_USAGE);
        }
    }
    int nargs = oargc - optind;
    char **args = oargv + optind;
    struct { const char *name; int nargs; } verbs[] = {
        {"list", 0}, {"show", 1}, {"approve", 2}, {"deny", 2}, {"cancel", 1}, {"events", 1},
    };
    int want = -1;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strcmp(verb, verbs[i].name) == 0)
            want = verbs[i].nargs;
    if (want < 0) {
        fprintf(stderr, "forgebox task: unknown task command '%.32s' (run, list, show, approve, deny, cancel, "
                        "events)\n", verb);
        return usage(stderr, FB_EXIT_USAGE);
    }
    if (nargs != want) {
        fprintf(stderr, "forgebox task %s: takes %d argument%s, got %d\n", verb, want, want == 1 ? "" : "s",
                nargs);
        return usage(stderr, FB_EXIT_USAGE);
    }
    remote r = {.json = json};
    fb_err err = {{0}};
    if (remote_setup(&r, url, key_file, &err) < 0) {
        sodium_memzero(r.key, sizeof r.key);
        fprintf(stderr, "forgebox task: %s\n", err.msg);
        return FB_EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        sodium_memzero(r.key, sizeof r.key);
        fprintf(stderr, "forgebox task: libcurl failed to initialise\n");
        return 1;
    }
    int rc;
    if (strcmp(verb, "list") == 0)
        rc = verb_list(&r);
    else if (strcmp(verb, "show") == 0)
        rc = verb_show(&r, args[0]);
    else if (strcmp(verb, "approve") == 0 || strcmp(verb, "deny") == 0)
        rc = verb_decide(&r, args[0], args[1], strcmp(verb, "approve") == 0, reason);
    else if (strcmp(verb, "cancel") == 0)
        rc = verb_cancel(&r, args[0]);
    else
        rc = verb_events(&r, args[0], after);
    sodium_memzero(r.key, sizeof r.key);
    curl_global_cleanup();
    return rc;
}
