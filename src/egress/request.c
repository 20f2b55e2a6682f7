/*
 * request.c - the proxy's reading of a client's first request head, and
 * the head it sends upstream for absolute-form requests (egress.h).
 *
 * Strict on purpose: the bytes come from code we do not trust, and
 * anything a real client does not send (bare CR or LF, NUL, folded header
 * lines, a user part in the URL, a second space in the request line) is
 * answered 400 rather than guessed at, so no two parsers can disagree
 * about which host a request is for.  Only http:// is taken in absolute
 * form; TLS goes through CONNECT, where the proxy never sees inside.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "egress/egress.h"

/* Every line ends in CRLF, no NUL, no bare CR or LF, no other control
 * byte but TAB. */
static bool clean_bytes(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '\r') {
            if (i + 1 >= n || h[i + 1] != '\n')
                return false;
            i++;
        } else if (c == '\n' || c == 0x7f || (c < 0x20 && c != '\t')) {
            return false;
        }
    }
    return true;
}

static int parse_port(const char *p, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* "host:port", "[v6]:port", or without :port when default_port != 0. */
static int parse_authority(const char *a, size_t n, uint16_t default_port, fb_egress_request *r, fb_err *err)
{
    if (n == 0)
        return fb_fail_code(err, 400, "no host in the request target");
    if (memchr(a, '@', n))
        return fb_fail_code(err, 400, "user information in the request target");
    const char *colon = NULL;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (!close)
            return fb_fail_code(err, 400, "unterminated [ in the request target");
        if ((size_t)(close + 1 - a) < n) {
            if (close[1] != ':')
                return fb_fail_code(err, 400, "junk after ] in the request target");
            colon = close + 1;
        }
    } else {
        colon = memchr(a, ':', n);
        if (colon && memchr(colon + 1, ':', n - (size_t)(colon + 1 - a)))
            colon = NULL; /* an unbracketed IPv6 literal: no port part */
    }
    size_t host_len = colon ? (size_t)(colon - a) : n;
    if (host_len == 0 || host_len >= sizeof r->host)
        return fb_fail_code(err, 400, "host in the request target is empty or too long");
    memcpy(r->host, a, host_len);
    r->host[host_len] = '\0';
    if (colon) {
        if (parse_port(colon + 1, n - host_len - 1, &r->port) < 0)
            return fb_fail_code(err, 400, "bad port in the request target");
    } else if (default_port) {
        r->port = default_port;
    } else {
        return fb_fail_code(err, 400, "CONNECT needs host:port");
    }
    return 0;
}

static int parse_target(const char *t, size_t n, size_t t_off, fb_egress_request *r, fb_err *err)
{
    if (r->connect)
        return parse_authority(t, n, 0, r, err);
    static const char scheme[] = "http://";
    if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
        return fb_fail_code(err, 400, "https:// in absolute form: use CONNECT for TLS");
    if (n < sizeof scheme - 1 || strncasecmp(t, scheme, sizeof scheme - 1) != 0)
        return fb_fail_code(err, 400, "not a proxy request: the target must be http://host/... or CONNECT host:port");
    const char *auth = t + sizeof scheme - 1;
    size_t rest = n - (sizeof scheme - 1), alen = 0;
    while (alen < rest && auth[alen] != '/' && auth[alen] != '?' && auth[alen] != '#')
        alen++;
    int rc = parse_authority(auth, alen, 80, r, err);
    if (rc)
        return rc;
    if (alen < rest && auth[alen] != '/')
        return fb_fail_code(err, 400, "the path must start with /");
    r->path_off = t_off + (size_t)(auth + alen - t);
    r->path_len = rest - alen;
    return 0;
}

static int parse_headers(const char *h, size_t start, size_t end, fb_err *err)
{
    size_t i = start;
    while (i < end) {
        const char *eol = memmem(h + i, end - i, "\r\n", 2);
        size_t len = (size_t)(eol - (h + i));
        if (len == 0)
            break; /* the blank line */
        if (h[i] == ' ' || h[i] == '\t')
            return fb_fail_code(err, 400, "folded header line");
        const char *colon = memchr(h + i, ':', len);
        if (!colon || colon == h + i)
            return fb_fail_code(err, 400, "header line without a name");
        for (const char *c = h + i; c < colon; c++)
            if (!isgraph((unsigned char)*c))
                return fb_fail_code(err, 400, "bad character in a header name");
        i += len + 2;
    }
    return 0;
}

int fb_egress_request_parse(const char *head, size_t len, fb_egress_request *r, fb_err *err)
{
    memset(r, 0, sizeof *r);
    const char *end = memmem(head, len, "\r\n\r\n", 4);
    if (!end)
        return fb_fail_code(err, 400, "incomplete request head");
    r->head_len = (size_t)(end - head) + 4;
    if (!clean_bytes(head, r->head_len))
        return fb_fail_code(err, 400, "control characters or bare CR/LF in the request head");
    const char *eol = memmem(head, r->head_len, "\r\n", 2);
    size_t line = (size_t)(eol - head);
    const char *sp1 = memchr(head, ' ', line);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', line - (size_t)(sp1 + 1 - head)) : NULL;
    if (!sp1 || !sp2 || memchr(sp2 + 1, ' ', line - (size_t)(sp2 + 1 - head)))
        return fb_fail_code(err, 400, "the request line is not METHOD TARGET VERSION");
    size_t mlen = (size_t)(sp1 - head);
    if (mlen == 0 || mlen >= sizeof r->method)
        return fb_fail_code(err, 400, "bad method");
    for (size_t i = 0; i < mlen; i++)
        if (!isupper((unsigned char)head[i]))
            return fb_fail_code(err, 400, "bad method");
    memcpy(r->method, head, mlen);
    size_t vlen = line - (size_t)(sp2 + 1 - head);
    if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
        return fb_fail_code(err, 400, "the version must be HTTP/1.0 or HTTP/1.1");
    r->minor = sp2[8] - '0';
    r->connect = strcmp(r->method, "CONNECT") == 0;
    size_t toff = (size_t)(sp1 + 1 - head);
    int rc = parse_target(sp1 + 1, (size_t)(sp2 - sp1 - 1), toff, r, err);
    if (rc)
        return rc;
    return parse_headers(head, line + 2, r->head_len, err);
}

/* Headers the proxy replaces or that concern the hop to the proxy only. */
static bool hop_header(const char *name, size_t n)
{
    static const char *const drop[] = {"host", "connection", "keep-alive", "te", "upgrade"};
    if (n >= 6 && strncasecmp(name, "proxy-", 6) == 0)
        return true;
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strlen(drop[i]) == n && strncasecmp(name, drop[i], n) == 0)
            return true;
    return false;
}

size_t fb_egress_request_rewrite(const char *head, const fb_egress_request *r, char *out, size_t cap)
{
    char port[8] = "";
    if (r->port != 80)
        snprintf(port, sizeof port, ":%u", (unsigned)r->port);
    int n = snprintf(out, cap, "%s %.*s HTTP/1.%d\r\nHost: %s%s\r\n", r->method, r->path_len ? (int)r->path_len : 1,
                     r->path_len ? head + r->path_off : "/", r->minor, r->host, port);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    size_t o = (size_t)n;
    const char *p = memmem(head, r->head_len, "\r\n", 2) + 2;
    const char *end = head + r->head_len - 2; /* the blank line */
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        size_t len = (size_t)(eol - p) + 2;
        const char *colon = memchr(p, ':', len);
        if (!hop_header(p, (size_t)(colon - p))) {
            if (o + len >= cap)
                return 0;
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
    }
    static const char tail[] = "Connection: close\r\n\r\n";
    if (o + sizeof tail > cap)
        return 0;
    memcpy(out + o, tail, sizeof tail);
    return o + sizeof tail - 1;
}
