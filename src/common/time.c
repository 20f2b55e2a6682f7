/*
 * time.c - see time.h.
 *
 * The parser reads fixed-width fields left to right and checks every range
 * before any arithmetic, so no input can overflow anything: the largest
 * value ever computed is the seconds of 9999-12-31 plus a day.  Civil dates
 * are converted with Howard Hinnant's algorithms (public domain,
 * http://howardhinnant.github.io/date_algorithms.html), exact for the
 * proleptic Gregorian calendar, instead of timegm/gmtime_r: no time zone
 * state, no locale, and the same answer on every libc.
 */
#define _GNU_SOURCE
#include "common/time.h"

#include <stdio.h>
#include <string.h>

#define NS_PER_S 1000000000L
#define SECS_PER_DAY 86400

/* 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z in seconds since the epoch. */
#define MIN_SECS (-62135596800LL)
#define END_SECS (253402300800LL)

static bool leap_year(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap_year(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* ---- clocks ------------------------------------------------------------------ */

struct timespec fb_time_now_ts(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        ts = (struct timespec){0, 0}; /* cannot fail with a valid clock id */
    return ts;
}

int64_t fb_time_realtime_ns(void)
{
    struct timespec ts = fb_time_now_ts();
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

uint64_t fb_time_monotonic_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * (uint64_t)NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- formatting ---------------------------------------------------------------- */

int fb_time_format(const struct timespec *ts, char out[FB_TIME_MAX])
{
    out[0] = '\0';
    int64_t s = (int64_t)ts->tv_sec;
    if (s < MIN_SECS || s >= END_SECS || ts->tv_nsec < 0 || ts->tv_nsec >= NS_PER_S)
        return -1;
    int64_t days = s >= 0 ? s / SECS_PER_DAY : -((-s + SECS_PER_DAY - 1) / SECS_PER_DAY);
    int64_t rem = s - days * SECS_PER_DAY;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int n = snprintf(out, FB_TIME_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", (int)y, m, d, (int)(rem / 3600),
                     (int)(rem / 60 % 60), (int)(rem % 60), (long)ts->tv_nsec);
    if (n != FB_TIME_TEXT_LEN) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

int fb_time_format_after(struct timespec base, int64_t offset_s, char out[FB_TIME_MAX])
{
    if (offset_s > END_SECS - MIN_SECS || offset_s < MIN_SECS - END_SECS) {
        out[0] = '\0';
        return -1;
    }
    base.tv_sec += (time_t)offset_s;
    return fb_time_format(&base, out);
}

void fb_time_now(char out[FB_TIME_MAX])
{
    struct timespec ts = fb_time_now_ts();
    if (fb_time_format(&ts, out) < 0)
        snprintf(out, FB_TIME_MAX, "1970-01-01T00:00:00.000000000Z");
}

int fb_time_cmp(const struct timespec *a, const struct timespec *b)
{
    if (a->tv_sec != b->tv_sec)
        return a->tv_sec < b->tv_sec ? -1 : 1;
    if (a->tv_nsec != b->tv_nsec)
        return a->tv_nsec < b->tv_nsec ? -1 : 1;
    return 0;
}

/* ---- parsing ------------------------------------------------------------------- */

/* Exactly n decimal digits at *p, advancing past them. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool take(const char **p, char a, char b)
{
    if (**p != a && **p != b)
        return false;
    (*p)++;
    return true;
}

static int parse(const char *s, bool filter, struct timespec *out)
{
    if (!s)
        return -1;
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
    long ns = 0;
    if (!digits(&p, 4, &y) || !take(&p, '-', '-') || !digits(&p, 2, &mo) || !take(&p, '-', '-') ||
        !digits(&p, 2, &d))
        return -1;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    bool date_only = filter && *p == '\0';
    if (!date_only) {
        if (!(take(&p, 'T', 't') || (filter && take(&p, ' ', ' '))) || !digits(&p, 2, &h) || !take(&p, ':', ':') ||
            !digits(&p, 2, &mi) || !take(&p, ':', ':') || !digits(&p, 2, &sec))
            return -1;
        if (*p == '.') {
            int nd = 0;
            for (p++; *p >= '0' && *p <= '9'; p++, nd++) {
                if (nd == 9)
                    return -1; /* finer than a nanosecond */
                ns = ns * 10 + (*p - '0');
            }
            if (nd == 0)
                return -1;
            for (; nd < 9; nd++)
                ns *= 10;
        }
        if (take(&p, 'Z', 'z'))
            sign = 0;
        else if (take(&p, '+', '+'))
            sign = 1;
        else if (take(&p, '-', '-'))
            sign = -1;
        else
            return -1;
        if (sign && (!digits(&p, 2, &oh) || !take(&p, ':', ':') || !digits(&p, 2, &om)))
            return -1;
        if (*p != '\0' || h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
            return -1;
    }
    bool leap_second = sec == 60;
    int64_t t = days_from_civil(y, mo, d) * SECS_PER_DAY + (int64_t)h * 3600 + (int64_t)mi * 60 +
                (leap_second ? 59 : sec) - (int64_t)sign * ((int64_t)oh * 3600 + (int64_t)om * 60);
    /* A leap second exists only as 23:59:60 UTC; it becomes the next second. */
    if (leap_second) {
        int64_t r = t % SECS_PER_DAY;
        if (r < 0)
            r += SECS_PER_DAY;
        if (r != SECS_PER_DAY - 1)
            return -1;
        t++;
    }
    if (t < MIN_SECS || t >= END_SECS)
        return -1;
    out->tv_sec = (time_t)t;
    out->tv_nsec = ns;
    return 0;
}

int fb_time_parse(const char *text, struct timespec *out)
{
    return parse(text, false, out);
}

int fb_time_parse_filter(const char *text, struct timespec *out)
{
    return parse(text, true, out);
}

int fb_time_normalise(const char *text, char out[FB_TIME_MAX])
{
    struct timespec ts;
    if (fb_time_parse(text, &ts) < 0)
        return -1;
    return fb_time_format(&ts, out);
}
