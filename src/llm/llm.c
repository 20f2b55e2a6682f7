/*
 * llm.c - see llm.h.  The provider object (its options checked once, its
 * key held in memory that is wiped on free) and fb_llm_complete, which
 * picks the wire format, encodes, runs the exchange (http.c) and hands back
 * the turn or a typed error.
 *
 * Every error leaves through one place (finish_error), which prefixes the
 * provider's name and replaces any occurrence of the key with
 * "[redacted]": a provider that echoes the key in its error body (some do,
 * for a wrong one) must not put it in our logs, task errors or audit.
 */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm/internal.h"

static const char *const kind_names[] = {"openai", "anthropic"};

int fb_llm_kind_from_name(const char *name, fb_llm_kind *out)
{
    for (size_t i = 0; name && i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (fb_llm_kind)i;
            return 0;
        }
    return -1;
}

const char *fb_llm_kind_name(fb_llm_kind kind)
{
    return (size_t)kind < sizeof kind_names / sizeof kind_names[0] ? kind_names[kind] : "?";
}

const char *fb_llm_errc_name(int code)
{
    static const char *const names[] = {"ok", "auth", "rate_limited", "server", "bad_request",
                                        "malformed", "cut", "timeout", "too_large", "transport",
                                        "cancelled", "invalid"};
    return code >= 0 && (size_t)code < sizeof names / sizeof names[0] ? names[code] : "invalid";
}

const char *fb_llm_stop_name(fb_llm_stop stop)
{
    static const char *const names[] = {"end_turn", "tool_use", "max_tokens", "other"};
    return (size_t)stop < sizeof names / sizeof names[0] ? names[stop] : "other";
}

/* ---- the provider ------------------------------------------------------- */

bool fb_llm_url_allowed(const char *url)
{
    const char *rest = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    if (!rest || !*rest || *rest == '/')
        return false;
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return false;
    return true;
}

void fb_llm_provider_free(fb_llm_provider *p)
{
    if (!p)
        return;
    if (p->key) {
        sodium_memzero(p->key, p->key_len);
        free(p->key);
    }
    free(p->name);
    free(p->url);
    sodium_memzero(p, sizeof *p);
    free(p);
}

int fb_llm_provider_new(const fb_llm_provider_opts *o, fb_llm_provider **out, fb_err *err)
{
    *out = NULL;
    const char *name = o->name ? o->name : "?";
    if ((size_t)o->kind >= sizeof kind_names / sizeof kind_names[0])
        return fb_fail_code(err, FB_LLM_EINVAL, "provider %s: unknown kind", name);
    if (!o->base_url || !fb_llm_url_allowed(o->base_url))
        return fb_fail_code(err, FB_LLM_EINVAL, "provider %s: base_url must be an http:// or https:// URL",
                            name);
    fb_llm_provider *p = calloc(1, sizeof *p);
    if (!p)
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory");
    p->kind = o->kind;
    p->wire = o->kind == FB_LLM_OPENAI ? &llm_wire_openai : &llm_wire_anthropic;
    p->timeout_s = o->timeout_s ? o->timeout_s : FB_LLM_DEFAULT_TIMEOUT_S;
    p->connect_timeout_s = o->connect_timeout_s ? o->connect_timeout_s : FB_LLM_DEFAULT_CONNECT_TIMEOUT_S;
    if (p->connect_timeout_s > p->timeout_s)
        p->connect_timeout_s = p->timeout_s;
    p->max_retries = o->max_retries_set ? o->max_retries : FB_LLM_DEFAULT_MAX_RETRIES;
    p->retry_base_ms = o->retry_base_ms ? o->retry_base_ms : FB_LLM_DEFAULT_RETRY_BASE_MS;
    p->max_response_bytes = o->max_response_bytes ? o->max_response_bytes : FB_LLM_DEFAULT_MAX_RESPONSE_BYTES;
    size_t blen = strlen(o->base_url);
    while (blen > 0 && o->base_url[blen - 1] == '/')
        blen--; /* "http://h/v1/" + "/chat/completions" */
    bool ok = (p->name = strdup(name)) != NULL &&
              asprintf(&p->url, "%.*s%s", (int)blen, o->base_url, p->wire->path) >= 0;
    if (!ok)
        p->url = NULL;
    if (ok && o->api_key && o->api_key[0]) {
        if (strpbrk(o->api_key, "\r\n")) {
            fb_llm_provider_free(p);
            return fb_fail_code(err, FB_LLM_EINVAL, "provider %s: api_key contains a line break", name);
        }
        p->key_len = strlen(o->api_key);
        ok = (p->key = malloc(p->key_len + 1)) != NULL;
        if (ok)
            memcpy(p->key, o->api_key, p->key_len + 1);
    }
    if (!ok) {
        fb_llm_provider_free(p);
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory");
    }
    *out = p;
    return FB_LLM_OK;
}

fb_llm_kind fb_llm_provider_kind(const fb_llm_provider *p)
{
    return p->kind;
}

/* ---- one turn ----------------------------------------------------------- */

void llm_redact(char *msg, const char *key, size_t key_len)
{
    static const char mark[] = "[redacted]";
    char *hit;
    while (key && key_len && (hit = strstr(msg, key))) {
        size_t tail = strlen(hit + key_len);
        if (key_len >= sizeof mark - 1) {
            memcpy(hit, mark, sizeof mark - 1);
            memmove(hit + sizeof mark - 1, hit + key_len, tail + 1);
        } else {
            /* A key shorter than the mark: blank it out in place. */
            memset(hit, '*', key_len);
        }
    }
}

static int finish_error(const fb_llm_provider *p, int rc, fb_err *err)
{
    if (err) {
        llm_redact(err->msg, p->key, p->key_len);
        fb_fail_prefix(err, "provider %s", p->name);
        llm_redact(err->msg, p->key, p->key_len);
    }
    return rc;
}

int fb_llm_complete(fb_llm_provider *p, const fb_llm_request *rq, fb_llm_response *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!rq->model || !rq->model[0] || !rq->conv)
        return finish_error(p, fb_fail_code(err, FB_LLM_EINVAL, "a request needs a model and a conversation"),
                            err);
    for (size_t i = 0; i < rq->ntools; i++)
        if (!rq->tools[i].name || !json_is_object(rq->tools[i].schema))
            return finish_error(p, fb_fail_code(err, FB_LLM_EINVAL,
                                                "tool %zu needs a name and a JSON schema object", i),
                                err);
    json_t *body = p->wire->encode(rq, err);
    if (!body)
        return finish_error(p, FB_LLM_EINVAL, err);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return finish_error(p, fb_fail_code(err, FB_LLM_EINVAL, "out of memory encoding the request"), err);
    struct llm_turn t;
    llm_turn_init(&t, rq, p->max_response_bytes);
    unsigned attempts = 0;
    int rc = llm_http_exchange(p, rq, text, &t, &attempts, err);
    free(text);
    if (rc == 0)
        rc = llm_turn_result(&t, out, err);
    llm_turn_free(&t);
    if (rc) {
        fb_llm_response_free(out);
        return finish_error(p, rc, err);
    }
    out->attempts = attempts;
    return FB_LLM_OK;
}
