/*
 * llm.h - the provider layer: one turn of a conversation with a language
 * model, over either of the two wire formats the model servers speak.
 *
 *   kind openai     Chat Completions (POST {base_url}/chat/completions,
 *                   Authorization: Bearer): OpenAI, Ollama, vLLM,
 *                   llama.cpp's server, LM Studio.
 *   kind anthropic  Messages (POST {base_url}/v1/messages, x-api-key,
 *                   anthropic-version: 2023-06-01).
 *
 * Callers hold one provider-neutral conversation (fb_llm_conv: a system
 * prompt, user text, assistant text with tool calls, tool results) and a
 * list of tools (name, description, JSON schema), and ask for the next
 * assistant turn:
 *
 *     fb_llm_provider *p;
 *     if (fb_llm_provider_new(&opts, &p, &err) != FB_LLM_OK) ...
 *     fb_llm_request rq = {.model = "m", .conv = &conv, .tools = t, .ntools = n,
 *                          .stream = true, .on_text = show, .user = ctx};
 *     fb_llm_response r;
 *     int rc = fb_llm_complete(p, &rq, &r, &err);   // FB_LLM_OK or an errc
 *     ... r.text, r.calls[i] {id, name, input}, r.stop, r.usage ...
 *     fb_llm_conv_add_assistant(&conv, &r);          // the turn, verbatim
 *     fb_llm_conv_add_tool_result(&conv, id, "output", false);  // per call
 *     fb_llm_response_free(&r);
 *
 * Every failure is a typed code (fb_llm_errc) with a message for the
 * operator; the message never contains the provider's key (a provider
 * echoing the key back has it replaced by "[redacted]").  429 and 5xx are
 * retried with backoff (Retry-After honoured) up to max_retries times;
 * connecting and silence on the connection are timed; a response larger
 * than max_response_bytes is refused.  Keys are wiped from memory when the
 * provider is freed.
 *
 * Threads: a provider may be used by several threads at once (every call
 * has its own connection); a conversation or response by one at a time.
 */
#ifndef FB_LLM_H
#define FB_LLM_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

typedef enum {
    FB_LLM_OPENAI = 0,
    FB_LLM_ANTHROPIC,
} fb_llm_kind;

/* "openai" / "anthropic" -> kind; -1 for anything else. */
int fb_llm_kind_from_name(const char *name, fb_llm_kind *out);
const char *fb_llm_kind_name(fb_llm_kind kind);
/* An http:// or https:// URL with a host and no control bytes or spaces:
 * the only base_url a provider accepts. */
bool fb_llm_url_allowed(const char *url);

/* Typed errors: fb_llm_complete returns one of these (FB_LLM_OK is 0). */
typedef enum {
    FB_LLM_OK = 0,
    FB_LLM_EAUTH,        /* 401/403: the key is wrong or lacks access */
    FB_LLM_ERATE,        /* 429 on every attempt */
    FB_LLM_ESERVER,      /* 5xx on every attempt, or an error event in a stream */
    FB_LLM_EBADREQ,      /* other 4xx (unknown model, bad tool schema, ...): provider's message */
    FB_LLM_EMALFORMED,   /* the response is not what the wire format says */
    FB_LLM_ECUT,         /* the response ended before its end marker */
    FB_LLM_ETIMEOUT,     /* connecting, or the connection was silent too long */
    FB_LLM_ETOOLARGE,    /* the response is larger than max_response_bytes */
    FB_LLM_ETRANSPORT,   /* cannot connect, TLS, DNS, ... */
    FB_LLM_ECANCELLED,   /* *cancel became true, or a callback returned non-zero */
    FB_LLM_EINVAL,       /* the caller's options or request are invalid; out of memory */
} fb_llm_errc;

/* "auth", "rate_limited", "server", "bad_request", "malformed", "cut",
 * "timeout", "too_large", "transport", "cancelled", "invalid" ("ok"). */
const char *fb_llm_errc_name(int code);

/* ---- providers -------------------------------------------------------- */

#define FB_LLM_DEFAULT_TIMEOUT_S 120
#define FB_LLM_DEFAULT_CONNECT_TIMEOUT_S 10
#define FB_LLM_DEFAULT_MAX_RETRIES 3
#define FB_LLM_DEFAULT_MAX_RESPONSE_BYTES (8u * 1024 * 1024)
#define FB_LLM_DEFAULT_RETRY_BASE_MS 500
/* A Retry-After longer than this is waited for this long. */
#define FB_LLM_MAX_RETRY_WAIT_S 60

typedef struct fb_llm_provider_opts {
    fb_llm_kind kind;
    const char *name;            /* for messages ("provider local: ...") */
    const char *base_url;        /* http:// or https:// only */
    const char *api_key;         /* NULL or "": no key sent (a local server) */
    unsigned timeout_s;          /* idle: longest silence on the connection; 0: default */
    unsigned connect_timeout_s;  /* 0: default (at most timeout_s) */
    unsigned max_retries;        /* retries after a 429/5xx; attempts = 1 + this */
    bool max_retries_set;        /* false: FB_LLM_DEFAULT_MAX_RETRIES */
    size_t max_response_bytes;   /* 0: default */
    unsigned retry_base_ms;      /* backoff without Retry-After: base, doubling; 0: default */
} fb_llm_provider_opts;

typedef struct fb_llm_provider fb_llm_provider;

/* Copies opts (the key into memory that is wiped on free).  FB_LLM_EINVAL
 * for a base_url that is not http(s) or options out of range. */
int fb_llm_provider_new(const fb_llm_provider_opts *opts, fb_llm_provider **out, fb_err *err);
void fb_llm_provider_free(fb_llm_provider *p);
fb_llm_kind fb_llm_provider_kind(const fb_llm_provider *p);

/* ---- the conversation ------------------------------------------------- */

typedef struct fb_llm_tool_call {
    char *id;        /* the provider's call id, answered by a tool result */
    char *name;
    json_t *input;   /* a JSON object; NULL when the model's arguments were
                        not one (answer with an is_error result) */
    char *raw;       /* openai: the arguments text exactly as received, sent
                        back verbatim; NULL otherwise */
} fb_llm_tool_call;

typedef enum {
    FB_LLM_USER = 0,
    FB_LLM_ASSISTANT,
    FB_LLM_TOOL_RESULT,
} fb_llm_role;

typedef struct fb_llm_message {
    fb_llm_role role;
    char *text;              /* user / assistant text (may be NULL), tool result content */
    fb_llm_tool_call *calls; /* assistant */
    size_t ncalls;
    char *call_id;           /* tool result: the call it answers */
    bool is_error;           /* tool result: the call failed or was refused */
} fb_llm_message;

struct fb_llm_response;

typedef struct fb_llm_conv {
    char *system;            /* NULL: none */
    fb_llm_message *msgs;
    size_t n, cap;
} fb_llm_conv;

/* All return 0, or -1 when out of memory (conv unchanged). */
void fb_llm_conv_init(fb_llm_conv *conv);
void fb_llm_conv_free(fb_llm_conv *conv);
int fb_llm_conv_set_system(fb_llm_conv *conv, const char *text);
int fb_llm_conv_add_user(fb_llm_conv *conv, const char *text);
/* Appends r's text and tool calls (copied) as the assistant's turn. */
int fb_llm_conv_add_assistant(fb_llm_conv *conv, const struct fb_llm_response *r);
int fb_llm_conv_add_tool_result(fb_llm_conv *conv, const char *call_id, const char *content,
                                bool is_error);

/* The conversation as neutral JSON (for storing a transcript):
 *   {"system": s?, "messages": [
 *      {"role": "user", "content": s},
 *      {"role": "assistant", "content": s?, "tool_calls": [{id, name, input, raw?}]?},
 *      {"role": "tool", "tool_call_id": s, "content": s, "is_error": b?}]}
 * to_json returns a new reference (NULL: out of memory); from_json appends
 * to an initialised conv and fails with a message naming the bad field. */
json_t *fb_llm_conv_to_json(const fb_llm_conv *conv);
int fb_llm_conv_from_json(fb_llm_conv *conv, const json_t *j, fb_err *err);

/* ---- one turn --------------------------------------------------------- */

typedef struct fb_llm_tool {
    const char *name;
    const char *description;
    const json_t *schema;    /* JSON schema of the input (an object) */
} fb_llm_tool;

typedef enum {
    FB_LLM_STOP_END_TURN = 0,
    FB_LLM_STOP_TOOL_USE,
    FB_LLM_STOP_MAX_TOKENS,
    FB_LLM_STOP_OTHER,
} fb_llm_stop;

/* "end_turn", "tool_use", "max_tokens", "other". */
const char *fb_llm_stop_name(fb_llm_stop stop);

/* Streaming callbacks; a non-zero return ends the call with
 * FB_LLM_ECANCELLED.  on_tool_call sees each call once it is complete. */
typedef int (*fb_llm_on_text)(void *user, const char *delta, size_t len);
typedef int (*fb_llm_on_tool_call)(void *user, const fb_llm_tool_call *call);

typedef struct fb_llm_request {
    const char *model;
    const fb_llm_conv *conv;
    const fb_llm_tool *tools;
    size_t ntools;
    unsigned max_tokens;     /* 0: openai sends none, anthropic sends 4096 */
    bool stream;
    fb_llm_on_text on_text;            /* may be NULL; stream only */
    fb_llm_on_tool_call on_tool_call;  /* may be NULL; stream only */
    void *user;
    const atomic_bool *cancel;         /* may be NULL; polled while waiting */
} fb_llm_request;

typedef struct fb_llm_response {
    char *text;              /* all text of the turn ("" when none) */
    fb_llm_tool_call *calls;
    size_t ncalls;
    fb_llm_stop stop;
    char *stop_raw;          /* the provider's own word ("stop", "tool_calls", ...) or NULL */
    struct {
        uint64_t input_tokens, output_tokens;
    } usage;
    unsigned attempts;       /* HTTP requests made (1 + retries) */
} fb_llm_response;

/* One assistant turn.  Returns FB_LLM_OK with *out filled (free it with
 * fb_llm_response_free), or an errc with err filled and *out empty.
 * A stream is retried only while nothing of it has been delivered. */
int fb_llm_complete(fb_llm_provider *p, const fb_llm_request *rq, fb_llm_response *out, fb_err *err);
void fb_llm_response_free(fb_llm_response *r);

#endif
