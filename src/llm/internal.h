/*
 * internal.h - private to src/llm: the SSE parser, the turn accumulator the
 * two wire formats share, the wire-format table and the HTTP exchange.
 * Unit tests include it to test the SSE parser byte by byte.
 */
#ifndef FB_LLM_INTERNAL_H
#define FB_LLM_INTERNAL_H

#include "llm/llm.h"

/* ---- SSE (sse.c) -------------------------------------------------------- */

/* A line, or the data of one event, longer than this is malformed. */
#define LLM_SSE_MAX_LINE (1024 * 1024)
#define LLM_SSE_MAX_EVENT_NAME 64

/* Called once per event with data: event is "" when the event had no
 * "event:" field; data is NUL-terminated (len excludes the NUL).  Returns
 * 0 or an fb_llm_errc, which stops the parse. */
typedef int (*llm_sse_cb)(void *user, const char *event, const char *data, size_t len, fb_err *err);

struct llm_sse {
    size_t max;           /* longest line and longest event data */
    char *line;
    size_t len, cap;
    char *data;
    size_t dlen, dcap;
    bool has_data;
    bool after_cr;        /* the last byte was CR: a following LF ends nothing */
    char event[LLM_SSE_MAX_EVENT_NAME + 1];
};

void llm_sse_init(struct llm_sse *s, size_t max_line);
/* Feeds n bytes (any split: lines may cross calls).  Returns 0, the
 * callback's code, or FB_LLM_EMALFORMED (oversize line, NUL byte) /
 * FB_LLM_EINVAL (out of memory) with err filled. */
int llm_sse_feed(struct llm_sse *s, const char *buf, size_t n, llm_sse_cb cb, void *user, fb_err *err);
void llm_sse_free(struct llm_sse *s);

/* ---- a turn being received (turn.c) ------------------------------------- */

struct llm_call_acc {
    long index;           /* the provider's index for this call (or content block) */
    char *id, *name;
    char *args;           /* arguments text as it arrives in pieces */
    size_t alen, acap;
    json_t *start_input;  /* anthropic: input in content_block_start */
    bool bad_input;       /* anthropic: an input that is not an object */
    bool finished;
};

struct llm_turn {
    const fb_llm_request *rq;
    size_t cap;           /* most bytes of text + arguments kept */
    size_t kept;
    char *text;
    size_t tlen, tcap;
    struct llm_call_acc *acc;
    size_t nacc;
    fb_llm_tool_call *calls;   /* finished, in order */
    size_t ncalls;
    fb_llm_stop stop;
    char *stop_raw;
    uint64_t input_tokens, output_tokens;
    bool done;            /* the end marker was seen */
    bool delivered;       /* a callback has seen something: no retry */
};

void llm_turn_init(struct llm_turn *t, const fb_llm_request *rq, size_t cap);
void llm_turn_free(struct llm_turn *t);
int llm_turn_text(struct llm_turn *t, const char *s, size_t len, fb_err *err);
/* The accumulator for index, created on first use (NULL: out of memory or
 * too many calls, err filled). */
struct llm_call_acc *llm_turn_call(struct llm_turn *t, long index, fb_err *err);
int llm_turn_call_args(struct llm_turn *t, struct llm_call_acc *a, const char *s, size_t len, fb_err *err);
/* Parses the arguments and hands the call to on_tool_call (once). */
int llm_turn_call_finish(struct llm_turn *t, struct llm_call_acc *a, fb_err *err);
int llm_turn_set_stop(struct llm_turn *t, const char *raw, fb_llm_stop stop, fb_err *err);
/* Finishes the remaining calls and moves everything into r. */
int llm_turn_result(struct llm_turn *t, fb_llm_response *r, fb_err *err);

/* Copies one tool call (conv.c). */
int llm_call_copy(fb_llm_tool_call *dst, const fb_llm_tool_call *src);
void llm_call_clear(fb_llm_tool_call *c);
/* Sets body's "tools" to shape(tool) for each of rq's tools (none: no
 * key); -1 when out of memory. */
int llm_encode_tools(json_t *body, const fb_llm_request *rq, json_t *(*shape)(const fb_llm_tool *t));
/* Drops body, fills err and returns NULL: the end of a failed encode. */
json_t *llm_encode_failed(json_t *body, fb_err *err);
/* A JSON string's text, or NULL. */
const char *llm_jstr(const json_t *obj, const char *key);
/* A non-negative JSON integer, or 0. */
uint64_t llm_juint(const json_t *obj, const char *key);

/* ---- wire formats (openai.c, anthropic.c) ------------------------------- */

struct llm_wire {
    const char *path;          /* appended to base_url */
    const char *auth_fmt;      /* the key's header, "%s" the key */
    const char *extra_header;  /* NULL or one more header */
    /* The request body; NULL and err filled on failure. */
    json_t *(*encode)(const fb_llm_request *rq, fb_err *err);
    /* A whole (non-stream) response into t. */
    int (*decode)(struct llm_turn *t, const json_t *body, fb_err *err);
    /* One SSE event into t. */
    int (*event)(struct llm_turn *t, const char *event, const char *data, size_t len, fb_err *err);
    /* The provider's own error text from an error body (out "" when none). */
    void (*error_text)(const json_t *body, char *out, size_t cap);
};

extern const struct llm_wire llm_wire_openai;
extern const struct llm_wire llm_wire_anthropic;

/* ---- the provider and the HTTP exchange (llm.c, http.c) ----------------- */

struct fb_llm_provider {
    fb_llm_kind kind;
    const struct llm_wire *wire;
    char *name;
    char *url;                 /* base_url + wire path */
    char *key;                 /* NULL: none; wiped on free */
    size_t key_len;
    unsigned timeout_s, connect_timeout_s, max_retries, retry_base_ms;
    size_t max_response_bytes;
};

/* Replaces every occurrence of key in the NUL-terminated msg (in place,
 * never longer) with "[redacted]" (or '*'s for a key shorter than that). */
void llm_redact(char *msg, const char *key, size_t key_len);

/* POSTs body and fills t, with the retries; returns 0 or an errc. */
int llm_http_exchange(const fb_llm_provider *p, const fb_llm_request *rq, const char *body,
                      struct llm_turn *t, unsigned *attempts, fb_err *err);

#endif
