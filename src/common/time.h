/*
 * time.h - the one place ForgeBox reads clocks and reads or writes times.
 *
 * Stored and shown times are RFC 3339 in UTC with nanoseconds, always the
 * same 30 characters ("2026-11-29T10:31:07.123456789Z"), so that comparing
 * two of them as text compares the times (the store and the audit log rely
 * on that).  The parser is strict RFC 3339 (section 5.6):
 *
 *   - YYYY-MM-DD "T" hh:mm:ss, an optional fraction of 1 to 9 digits, then
 *     "Z" or a numeric offset "+hh:mm"/"-hh:mm" (hh <= 23, mm <= 59);
 *     't' and 'z' are accepted as RFC 3339 allows;
 *   - years 0001 to 9999, real month lengths (Feb 29 only in leap years:
 *     divisible by 4, except centuries not divisible by 400);
 *   - a leap second is accepted only where one can occur, at 23:59:60 UTC
 *     (after the offset is applied), and is folded into the next second:
 *     POSIX time has no leap seconds, and nothing here produces one;
 *   - nothing before or after the time, no spaces, no missing fields.
 * The result, after the offset, must again lie within years 0001-9999.
 *
 * fb_time_parse_filter additionally takes a bare date ("2026-11-29",
 * midnight UTC) and a space for the 'T': the forms people type into a
 * query filter.  Nothing stored is ever written that way.
 *
 * Pure arithmetic (no timegm, no time zone files): the civil-date
 * conversions are Howard Hinnant's days_from_civil / civil_from_days.
 */
#ifndef FB_TIME_H
#define FB_TIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Buffer for the canonical text, NUL included (30 characters are used). */
#define FB_TIME_MAX 40
#define FB_TIME_TEXT_LEN 30

/* Wall clock (CLOCK_REALTIME) in nanoseconds since the epoch. */
int64_t fb_time_realtime_ns(void);
/* CLOCK_MONOTONIC in nanoseconds: for durations and deadlines. */
uint64_t fb_time_monotonic_ns(void);
/* The wall clock as a timespec. */
struct timespec fb_time_now_ts(void);

/* ts (UTC) as "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ".  -1 (and out "") when ts
 * is outside years 0001-9999 or tv_nsec is not in [0, 1e9). */
int fb_time_format(const struct timespec *ts, char out[FB_TIME_MAX]);
/* Seconds since the epoch plus offset_s, formatted as above: a deadline
 * "ttl_s from now" is fb_time_format_after(fb_time_now_ts(), ttl_s). */
int fb_time_format_after(struct timespec base, int64_t offset_s, char out[FB_TIME_MAX]);
/* Now, formatted. */
void fb_time_now(char out[FB_TIME_MAX]);

/* Strict RFC 3339 (see above) into UTC.  0, or -1 for anything else
 * (NULL included); *out is untouched on failure. */
int fb_time_parse(const char *text, struct timespec *out);
/* The same, also accepting a bare date and ' ' for 'T'. */
int fb_time_parse_filter(const char *text, struct timespec *out);
/* Parses (strictly) and re-writes in the canonical form.  0 or -1. */
int fb_time_normalise(const char *text, char out[FB_TIME_MAX]);

/* -1, 0 or 1 as a is before, equal to or after b. */
int fb_time_cmp(const struct timespec *a, const struct timespec *b);

#endif
