/*
 * utf8.h - UTF-8 validation and cleaning, done once for everybody.
 *
 * Program output is bytes; JSON strings (API responses, SSE events) must be
 * UTF-8.  Output also arrives in chunks (protocol frames, 32 KiB pipe reads)
 * whose boundaries fall anywhere, in the middle of a character too.  The
 * incremental cleaner carries an incomplete sequence over to the next chunk
 * and replaces only what is really invalid, so that cleaning a stream chunk
 * by chunk gives exactly the bytes of cleaning it in one piece.
 *
 * What counts as invalid is the Unicode standard's (RFC 3629): overlong
 * forms, UTF-16 surrogates (U+D800..U+DFFF), code points above U+10FFFF,
 * stray continuation bytes, a sequence cut short.  Each maximal invalid
 * subpart becomes one U+FFFD (the "substitution of maximal subparts"
 * practice of Unicode 3.9 and WHATWG's decoder): "\xE2\x82" followed by "A"
 * gives U+FFFD then "A", not two replacements.  An incomplete sequence at
 * the end of the stream gives one U+FFFD.
 *
 * NUL: valid UTF-8, but it ends a C string and several consumers (logs,
 * terminals, clients that treat JSON strings as C strings) mistreat it, so
 * the cleaner replaces NUL with U+FFFD too (the gateway's behaviour since
 * the start).  fb_utf8_valid() lets the caller choose.
 */
#ifndef FB_UTF8_H
#define FB_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* U+FFFD REPLACEMENT CHARACTER in UTF-8. */
#define FB_UTF8_REPLACEMENT "\xEF\xBF\xBD"

typedef struct fb_utf8_cleaner {
    uint8_t pend[4]; /* the valid prefix of an unfinished sequence */
    uint8_t npend;
    uint8_t need;    /* continuation bytes still expected */
    uint8_t lo, hi;  /* allowed range of the next continuation byte */
} fb_utf8_cleaner;

void fb_utf8_cleaner_init(fb_utf8_cleaner *c);

/* Most bytes fb_utf8_clean_chunk() or fb_utf8_clean_finish() can write for
 * n bytes of input (every byte may become 3), or SIZE_MAX on overflow. */
size_t fb_utf8_clean_bound(size_t n);

/* Cleans one chunk into out (at least fb_utf8_clean_bound(n) bytes; not
 * NUL-terminated) and returns the bytes written.  An unfinished sequence at
 * the end of the chunk is held back for the next call. */
size_t fb_utf8_clean_chunk(fb_utf8_cleaner *c, const void *in, size_t n, char *out);

/* End of stream: writes one U+FFFD (3 bytes) if a sequence was cut short,
 * and resets the cleaner.  Returns the bytes written (0 or 3). */
size_t fb_utf8_clean_finish(fb_utf8_cleaner *c, char *out);

/* One shot: a newly allocated, NUL-terminated clean copy of in[0..n), its
 * length in *out_len.  NULL only when out of memory. */
char *fb_utf8_clean(const void *in, size_t n, size_t *out_len);

/* True if s[0..n) is well-formed UTF-8 (and has no NUL unless allow_nul). */
bool fb_utf8_valid(const void *s, size_t n, bool allow_nul);

#endif
