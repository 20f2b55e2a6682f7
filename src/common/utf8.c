/*
 * utf8.c - the incremental UTF-8 cleaner and validator (utf8.h).
 *
 * A small state machine over the table of well-formed byte sequences
 * (Unicode 15, table 3-7): the lead byte fixes how many continuation bytes
 * follow and the range the first of them must fall in (that is where
 * overlong forms, surrogates and values above U+10FFFF are excluded); the
 * others are 80..BF.  A byte that does not fit ends the pending sequence as
 * one U+FFFD and is then looked at again as the start of a new one.
 */
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

void fb_utf8_cleaner_init(fb_utf8_cleaner *c)
{
    memset(c, 0, sizeof *c);
}

size_t fb_utf8_clean_bound(size_t n)
{
    /* Held-back bytes (at most 3) can come out with this chunk as one
     * U+FFFD, so 3 extra bytes on top of 3 per input byte. */
    if (n > (SIZE_MAX - 3) / 3)
        return SIZE_MAX;
    return n * 3 + 3;
}

/* For a lead byte: how many continuation bytes, and the first one's range.
 * Returns false for a byte that cannot start a sequence. */
static bool lead(uint8_t b, uint8_t *need, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        *need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        *need = 2;
        if (b == 0xE0)
            *lo = 0xA0; /* no overlong 3-byte forms */
        else if (b == 0xED)
            *hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        *need = 3;
        if (b == 0xF0)
            *lo = 0x90; /* no overlong 4-byte forms */
        else if (b == 0xF4)
            *hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return false;
    return true;
}

static size_t put_replacement(char *out)
{
    memcpy(out, FB_UTF8_REPLACEMENT, 3);
    return 3;
}

size_t fb_utf8_clean_chunk(fb_utf8_cleaner *c, const void *in, size_t n, char *out)
{
    const uint8_t *p = in;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b = p[i];
        if (c->need > 0) {
            if (b >= c->lo && b <= c->hi) {
                c->pend[c->npend++] = b;
                c->lo = 0x80;
                c->hi = 0xBF;
                if (--c->need == 0) {
                    memcpy(out + k, c->pend, c->npend);
                    k += c->npend;
                    c->npend = 0;
                }
                i++;
                continue;
            }
            /* The sequence ends here, unfinished: one U+FFFD for it, then
             * this byte is looked at afresh (no i++). */
            k += put_replacement(out + k);
            c->npend = 0;
            c->need = 0;
            continue;
        }
        if (b < 0x80) {
            if (b == 0)
                k += put_replacement(out + k);
            else
                out[k++] = (char)b;
            i++;
            continue;
        }
        if (lead(b, &c->need, &c->lo, &c->hi)) {
            c->pend[0] = b;
            c->npend = 1;
        } else {
            k += put_replacement(out + k);
        }
        i++;
    }
    return k;
}

size_t fb_utf8_clean_finish(fb_utf8_cleaner *c, char *out)
{
    size_t k = c->need > 0 ? put_replacement(out) : 0;
    fb_utf8_cleaner_init(c);
    return k;
}

char *fb_utf8_clean(const void *in, size_t n, size_t *out_len)
{
    size_t cap = fb_utf8_clean_bound(n);
    if (cap == SIZE_MAX)
        return NULL;
    char *o = malloc(cap + 1);
    if (!o)
        return NULL;
    fb_utf8_cleaner c;
    fb_utf8_cleaner_init(&c);
    size_t k = fb_utf8_clean_chunk(&c, in, n, o);
    k += fb_utf8_clean_finish(&c, o + k);
    o[k] = '\0';
    if (out_len)
        *out_len = k;
    return o;
}

bool fb_utf8_valid(const void *s, size_t n, bool allow_nul)
{
    const uint8_t *p = s;
    for (size_t i = 0; i < n;) {
        uint8_t b = p[i], need, lo, hi;
        if (b < 0x80) {
            if (b == 0 && !allow_nul)
                return false;
            i++;
            continue;
        }
        if (!lead(b, &need, &lo, &hi) || n - i - 1 < need)
            return false;
        for (uint8_t j = 1; j <= need; j++) {
            if (p[i + j] < lo || p[i + j] > hi)
                return false;
            lo = 0x80;
            hi = 0xBF;
        }
        i += 1u + need;
    }
    return true;
}
