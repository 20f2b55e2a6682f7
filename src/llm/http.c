/*
 * http.c - one provider call over libcurl: the POST, its retries, and the
 * mapping of everything that can go wrong onto fb_llm_errc.
 *
 * Why each limit: the connect timeout and the idle timeout (no byte for
 * timeout_s, checked in the progress callback: libcurl's own low-speed
 * check averages over a window, so a burst then silence goes unnoticed
 * for longer than asked) mean a provider that accepts and then says
 * nothing cannot hold a task forever, while a long answer that keeps
 * streaming is never cut.  The response cap bounds memory whatever the
 * server sends.  Only http and https are allowed and redirects are not
 * followed, so a base_url or a Location header cannot turn the call into
 * file:// or a request that carries the key somewhere else; for the same
 * reason the *_proxy environment variables are not used (the key goes
 * where base_url says).  The write callback looks at the status before
 * the first body byte: a 2xx stream goes to the SSE parser as it arrives,
 * anything else is buffered (an error body only up to ERR_BODY_CAP, the
 * rest dropped) to be decoded at the end.
 *
 * Retries: 429 and 5xx, at most max_retries times, waiting Retry-After
 * seconds when the server says so (capped at FB_LLM_MAX_RETRY_WAIT_S),
 * else retry_base_ms doubling.  A stream whose text already reached the
 * caller is never retried (the caller would see it twice).  The key is in
 * one header line only; those lines are wiped before they are freed.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "llm/internal.h"

#define ERR_BODY_CAP (64 * 1024)

struct xfer {
    const fb_llm_provider *p;
    const fb_llm_request *rq;
    struct llm_turn *t;
    CURL *h;
    long status;              /* 0 until the body starts */
    struct llm_sse sse;
    char *body;
    size_t blen, bcap, total;
    long retry_after;         /* seconds, -1 when not given */
    struct timespec last_rx;  /* when a byte last arrived (or the start) */
    int errc;                 /* set by a callback that stopped the transfer */
    fb_err err;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void init_curl(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int on_event(void *user, const char *event, const char *data, size_t len, fb_err *err)
{
    struct xfer *x = user;
    return x->p->wire->event(x->t, event, data, len, err);
}

static void touch(struct xfer *x)
{
    clock_gettime(CLOCK_MONOTONIC, &x->last_rx);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    size_t n = size * nmemb;
    touch(x);
    if (x->status == 0)
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    bool ok = x->status >= 200 && x->status < 300;
    /* Error bodies count too: an endless one would otherwise never end. */
    if (n > x->p->max_response_bytes - x->total) {
        x->errc = fb_fail_code(&x->err, FB_LLM_ETOOLARGE, "the response is larger than %zu bytes",
                               x->p->max_response_bytes);
        return 0;
    }
    x->total += n;
    if (ok && x->rq->stream) {
        int rc = llm_sse_feed(&x->sse, ptr, n, on_event, x, &x->err);
        if (rc) {
            x->errc = rc;
            return 0;
        }
        return n;
    }
    size_t keep = n;
    if (!ok && x->blen + keep > ERR_BODY_CAP)
        keep = ERR_BODY_CAP - x->blen;
    if (x->blen + keep + 1 > x->bcap) {
        size_t ncap = x->bcap ? x->bcap : 16384;
        while (ncap < x->blen + keep + 1)
            ncap *= 2;
        char *nb = realloc(x->body, ncap);
        if (!nb) {
            x->errc = fb_fail_code(&x->err, FB_LLM_EINVAL, "out of memory receiving a response");
            return 0;
        }
        x->body = nb;
        x->bcap = ncap;
    }
    memcpy(x->body + x->blen, ptr, keep);
    x->blen += keep;
    x->body[x->blen] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *user)
{
    struct xfer *x = user;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    touch(x);
    if (n > 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        x->retry_after = -1; /* a new response (after a 100 Continue, say) */
    } else if (n > sizeof name - 1 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        const char *v = ptr + sizeof name - 1;
        const char *end = ptr + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        long secs = 0;
        bool digits = v < end && isdigit((unsigned char)*v);
        for (; v < end && isdigit((unsigned char)*v); v++)
            secs = secs < 100000 ? secs * 10 + (*v - '0') : secs;
        /* An HTTP-date is not honoured: the backoff applies instead. */
        if (digits)
            x->retry_after = secs;
    }
    return n;
}

static int on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    struct xfer *x = user;
    if (x->rq->cancel && atomic_load(x->rq->cancel)) {
        x->errc = fb_fail_code(&x->err, FB_LLM_ECANCELLED, "cancelled");
        return 1;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - x->last_rx.tv_sec > (time_t)x->p->timeout_s ||
        (now.tv_sec - x->last_rx.tv_sec == (time_t)x->p->timeout_s && now.tv_nsec >= x->last_rx.tv_nsec)) {
        if (x->status == 0 && x->total == 0)
            x->errc = fb_fail_code(&x->err, FB_LLM_ETIMEOUT, "no response within %u s", x->p->timeout_s);
        else
            x->errc = fb_fail_code(&x->err, FB_LLM_ETIMEOUT, "the response stalled for %u s", x->p->timeout_s);
        return 1;
    }
    return 0;
}

static void wipe_headers(struct curl_slist *h)
{
    for (struct curl_slist *l = h; l; l = l->next)
        sodium_memzero(l->data, strlen(l->data));
    curl_slist_free_all(h);
}

static struct curl_slist *headers_for(const fb_llm_provider *p)
{
    struct curl_slist *h = NULL, *n;
    const char *fixed[] = {"Content-Type: application/json", "Accept: application/json, text/event-stream",
                           "Expect:", p->wire->extra_header};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (!fixed[i])
            continue;
        if (!(n = curl_slist_append(h, fixed[i])))
            goto fail;
        h = n;
    }
    if (p->key) {
        size_t cap = strlen(p->wire->auth_fmt) + p->key_len + 1;
        char *line = malloc(cap);
        if (!line)
            goto fail;
        snprintf(line, cap, p->wire->auth_fmt, p->key);
        n = curl_slist_append(h, line);
        sodium_memzero(line, cap);
        free(line);
        if (!n)
            goto fail;
        h = n;
    }
    return h;
fail:
    wipe_headers(h);
    return NULL;
}

/* The provider's error message from an error body, made safe to show. */
static void provider_message(struct xfer *x, char *out, size_t cap)
{
    char raw[400] = "";
    /* The key out first, so that no cut below can leave a piece of it. */
    if (x->body)
        llm_redact(x->body, x->p->key, x->p->key_len);
    json_t *j = x->body ? json_loadb(x->body, strlen(x->body), 0, NULL) : NULL;
    if (j)
        x->p->wire->error_text(j, raw, sizeof raw);
    json_decref(j);
    if (!raw[0] && x->body)
        snprintf(raw, sizeof raw, "%s", x->body);
    size_t o = 0;
    for (const char *s = raw; *s && o + 1 < cap; s++)
        out[o++] = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
    out[o] = '\0';
}

static int curl_failure(const struct xfer *x, CURLcode cc, fb_err *err)
{
    const char *what = curl_easy_strerror(cc);
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        /* Only the connect timeout is libcurl's; idle is on_progress's. */
        return fb_fail_code(err, FB_LLM_ETIMEOUT, "could not connect within %u s (%s)",
                            x->p->connect_timeout_s, what);
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
        if (x->status)
            return fb_fail_code(err, FB_LLM_ECUT, "the response was cut off (%s)", what);
        return fb_fail_code(err, FB_LLM_ETRANSPORT, "%s", what);
    case CURLE_UNSUPPORTED_PROTOCOL:
        return fb_fail_code(err, FB_LLM_EINVAL, "only http and https are allowed (%s)", what);
    default:
        return fb_fail_code(err, FB_LLM_ETRANSPORT, "%s", what);
    }
}

/* The end of one attempt with status: 0 done, 1 retry, or an errc. */
static int judge(struct xfer *x, fb_err *err)
{
    const fb_llm_provider *p = x->p;
    char msg[320];
    if (x->status >= 200 && x->status < 300) {
        if (x->rq->stream) {
            if (!x->t->done)
                return fb_fail_code(err, FB_LLM_ECUT, "the stream ended before its end marker");
            return 0;
        }
        json_t *body = json_loadb(x->body ? x->body : "", x->blen, 0, NULL);
        if (!json_is_object(body)) {
            json_decref(body);
            return fb_fail_code(err, FB_LLM_EMALFORMED, "the response is not a JSON object");
        }
        int rc = p->wire->decode(x->t, body, err);
        json_decref(body);
        return rc;
    }
    provider_message(x, msg, sizeof msg);
    const char *sep = msg[0] ? ": " : "";
    if (x->status == 401 || x->status == 403)
        return fb_fail_code(err, FB_LLM_EAUTH, "HTTP %ld (check the provider's api_key)%s%s", x->status, sep, msg);
    if (x->status == 429 || x->status >= 500)
        return fb_fail_code(err, x->status == 429 ? FB_LLM_ERATE : FB_LLM_ESERVER, "HTTP %ld%s%s",
                            x->status, sep, msg);
    if (x->status >= 400)
        return fb_fail_code(err, FB_LLM_EBADREQ, "HTTP %ld%s%s", x->status, sep, msg);
    return fb_fail_code(err, FB_LLM_ETRANSPORT, "unexpected HTTP status %ld", x->status);
}

static int attempt(struct xfer *x, struct curl_slist *headers, const char *body, fb_err *err)
{
    const fb_llm_provider *p = x->p;
    CURL *h = curl_easy_init();
    if (!h)
        return fb_fail_code(err, FB_LLM_EINVAL, "cannot start an HTTP request (out of memory)");
    x->h = h;
    curl_easy_setopt(h, CURLOPT_URL, p->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* no *_proxy from the environment */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)p->connect_timeout_s);
    touch(x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "forgebox");
    CURLcode cc = curl_easy_perform(h);
    if (x->status == 0)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
    curl_easy_cleanup(h);
    x->h = NULL;
    if (x->errc) {
        *err = x->err;
        return x->errc;
    }
    if (cc != CURLE_OK)
        return curl_failure(x, cc, err);
    return judge(x, err);
}

/* Sleeps ms in small steps so that a cancel is noticed; -1 if cancelled. */
static int wait_ms(const fb_llm_request *rq, long ms)
{
    while (ms > 0) {
        if (rq->cancel && atomic_load(rq->cancel))
            return -1;
        long step = ms < 50 ? ms : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
    return rq->cancel && atomic_load(rq->cancel) ? -1 : 0;
}

static bool retryable(int rc, const struct xfer *x)
{
    return (rc == FB_LLM_ERATE || rc == FB_LLM_ESERVER) && x->status != 0 && !x->t->delivered;
}

int llm_http_exchange(const fb_llm_provider *p, const fb_llm_request *rq, const char *body,
                      struct llm_turn *t, unsigned *attempts, fb_err *err)
{
    pthread_once(&curl_once, init_curl);
    if (curl_init_rc != CURLE_OK)
        return fb_fail_code(err, FB_LLM_ETRANSPORT, "libcurl did not initialise");
    struct curl_slist *headers = headers_for(p);
    if (!headers)
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory building request headers");
    int rc = 0;
    *attempts = 0;
    for (unsigned i = 0;; i++) {
        struct xfer x = {.p = p, .rq = rq, .t = t, .retry_after = -1};
        llm_sse_init(&x.sse, 0);
        llm_turn_free(t);
        llm_turn_init(t, rq, p->max_response_bytes);
        (*attempts)++;
        rc = attempt(&x, headers, body, err);
        bool again = retryable(rc, &x) && i < p->max_retries;
        long wait = x.retry_after >= 0 ? (x.retry_after > FB_LLM_MAX_RETRY_WAIT_S ? FB_LLM_MAX_RETRY_WAIT_S
                                                                                 : x.retry_after) * 1000L
                                       : (long)p->retry_base_ms << (i < 6 ? i : 6);
        llm_sse_free(&x.sse);
        free(x.body);
        if (!again)
            break;
        if (wait_ms(rq, wait) < 0) {
            rc = fb_fail_code(err, FB_LLM_ECANCELLED, "cancelled while waiting to retry");
            break;
        }
    }
    if (rc && (rc == FB_LLM_ERATE || rc == FB_LLM_ESERVER) && *attempts > 1)
        fb_fail_prefix(err, "after %u attempts", *attempts);
    wipe_headers(headers);
    return rc;
}
