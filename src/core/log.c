/*
 * log.c - structured JSON logs on stderr (core.h).
 *
 * One object per line: time, level, request id, message and fields.  Any
 * field whose name suggests a secret is replaced by "[redacted]" before it
 * is written, so a handler that logs a whole request object cannot leak a
 * key or a password by accident.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <time.h>

#include "common/time.h"
#include "core/core.h"

static int min_level = 1; /* 0 debug, 1 info, 2 warn, 3 error */

static int level_num(const char *l)
{
    if (strcmp(l, "debug") == 0) return 0;
    if (strcmp(l, "warn") == 0) return 2;
    if (strcmp(l, "error") == 0) return 3;
    return 1;
}

void fb_log_set_level(const char *level)
{
    min_level = level_num(level);
}

static bool secret_name(const char *k)
{
    static const char *const words[] = {"key", "token", "password", "secret", "authorization", NULL};
    for (const char *const *w = words; *w; w++)
        if (strcasestr(k, *w))
            return true;
    return false;
}

static void redact(json_t *v)
{
    const char *k;
    json_t *x;
    if (json_is_object(v)) {
        json_object_foreach(v, k, x) {
            /* ids of keys are not secrets; everything else key-ish is,
             * except numbers, booleans and nulls, which cannot hold one
             * (tasks.max_tokens in the start-up dump is a budget) */
            bool inert = json_is_number(x) || json_is_boolean(x) || json_is_null(x);
            if (secret_name(k) && strcmp(k, "key_id") != 0 && !inert)
                json_object_set_new(v, k, json_string("[redacted]"));
            else
                redact(x);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_array_foreach(v, i, x) redact(x);
    }
}

void fb_log(const char *level, const char *request_id, const char *msg, json_t *fields)
{
    if (level_num(level) < min_level) {
        json_decref(fields);
        return;
    }
    char t[FB_TIME_MAX];
    fb_time_now(t);
    json_t *o = fields && json_is_object(fields) ? fields : json_object();
    if (fields && o != fields)
        json_decref(fields);
    redact(o);
    json_object_set_new(o, "time", json_string(t));
    json_object_set_new(o, "level", json_string(level));
    if (request_id)
        json_object_set_new(o, "request_id", json_string(request_id));
    json_t *m = json_string(msg);
    json_object_set_new(o, "msg", m ? m : json_string("(invalid UTF-8)"));
    char *line = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    if (line) {
        fprintf(stderr, "%s\n", line);
        free(line);
    }
    json_decref(o);
}
