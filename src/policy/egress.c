/*
 * egress.c - the network egress rules (policy.h, "egress"): the grammar of
 * a grant entry, whether a grant fits the organisation's ceiling, whether
 * one (host, port) may be reached, and whether a resolved address may be.
 *
 * Pure functions of their arguments, like the rest of src/policy: the
 * proxy (src/egress) and the gateway hand over what they have and act on
 * the verdict, so every rule is written once and unit-tested alone.
 *
 * Names, never addresses: a grant that could name an address would let a
 * sandbox reach whatever that address is today (a metadata service, a
 * host on the LAN) without the address check below ever seeing a name.
 * inet_aton(3) is the judge of what "looks like an IPv4 address", because
 * it is what resolvers and libc clients accept (127.1, 0x7f.1, 2130706433);
 * a numeric last label is refused besides, since no top-level domain is
 * numeric and some resolvers treat such names as addresses.
 *
 * Addresses: everything that is not plainly a public unicast address is
 * refused (loopback, private, link-local, CGNAT, multicast, documentation,
 * reserved; for IPv6 anything outside 2000::/3), and IPv6 forms that carry
 * an IPv4 address inside them are judged by that IPv4 address, so
 * ::ffff:127.0.0.1 is loopback.  The one escape is allow_private, which
 * names an exact address and port.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "policy/say.h"

#define ENTRY_TEXT_MAX 300

/* ---- the grammar ---------------------------------------------------------- */

/* Printable, shortened copy of untrusted text for an error message. */
static void shown(const char *text, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; text[i] && o + 4 < cap; i++)
        out[o++] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
    if (strlen(text) >= cap - 4)
        memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* A last label that some resolver could read as a number. */
static bool numeric_label(const char *s, size_t n)
{
    if (all_digits(s, n))
        return true;
    if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (size_t i = 2; i < n; i++)
            if (!isxdigit((unsigned char)s[i]))
                return false;
        return true;
    }
    return false;
}

/* Checks a name (no wildcard, no port) of len bytes and writes it
 * lowercased into out; the message says what is wrong with it. */
static fb_egress_code name_check(const char *name, size_t len, const char *entry, char *out, fb_err *err)
{
    char show[80];
    shown(entry, show, sizeof show);
    if (len > 0 && name[len - 1] == '.')
        len--; /* one trailing dot: the root, same host */
    if (len == 0)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s': empty host name", show);
    if (len > FB_EGRESS_HOST_MAX)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s': host name longer than %d characters",
                            show, FB_EGRESS_HOST_MAX);
    char copy[FB_EGRESS_HOST_MAX + 1];
    memcpy(copy, name, len);
    copy[len] = '\0';
    struct in_addr a4;
    if (inet_aton(copy, &a4))
        return fb_fail_code(err, FB_EGRESS_ELITERAL,
                            "network entry '%s' is an IP address; name hosts, never addresses", show);
    size_t labels = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && copy[i] != '.') {
            unsigned char c = (unsigned char)copy[i];
            if (!isalnum(c) && c != '-')
                return fb_fail_code(err, FB_EGRESS_EINVAL,
                                    "network entry '%s': '%c' is not allowed in a host name (letters, digits, "
                                    "'-' and '.'; no URLs or paths)",
                                    show, isprint(c) ? c : '?');
            out[i] = (char)tolower(c);
            continue;
        }
        size_t n = i - start;
        if (n == 0)
            return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s': empty label in host name", show);
        if (n > 63)
            return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s': a label is longer than 63 characters",
                                show);
        if (copy[start] == '-' || copy[i - 1] == '-')
            return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s': a label starts or ends with '-'",
                                show);
        labels++;
        if (i == len && numeric_label(copy + start, n))
            return fb_fail_code(err, FB_EGRESS_ELITERAL,
                                "network entry '%s' looks like a numeric address; name hosts, never addresses",
                                show);
        if (i < len)
            out[i] = '.';
        start = i + 1;
    }
    out[len] = '\0';
    if (labels < 2)
        return fb_fail_code(err, FB_EGRESS_EINVAL,
                            "network entry '%s': a single-label name; give the full domain name", show);
    return FB_EGRESS_OK;
}

/* Refusals that are about the shape of the entry, before its name. */
static fb_egress_code shape_check(const char *text, const char *show, fb_err *err)
{
    if (strstr(text, "://"))
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s' is a URL; give a host name (and :port)",
                            show);
    if (strchr(text, '[') || strchr(text, ']') || strchr(text, ':') != strrchr(text, ':'))
        return fb_fail_code(err, FB_EGRESS_ELITERAL,
                            "network entry '%s' is an IPv6 address; name hosts, never addresses", show);
    if (strpbrk(text, "/?#@\\"))
        return fb_fail_code(err, FB_EGRESS_EINVAL,
                            "network entry '%s' has a path or user part; give a host name (and :port)", show);
    return FB_EGRESS_OK;
}

static fb_egress_code port_parse(const char *p, const char *show, uint16_t *port, fb_err *err)
{
    size_t n = strlen(p);
    if (n == 0 || n > 5 || !all_digits(p, n) || atoi(p) < 1 || atoi(p) > 65535)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s': the port must be a number 1..65535", show);
    *port = (uint16_t)atoi(p);
    return FB_EGRESS_OK;
}

fb_egress_code fb_egress_entry_parse(const char *text, fb_egress_entry *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    if (!text)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry missing");
    char show[80];
    shown(text, show, sizeof show);
    size_t len = strlen(text);
    if (len == 0)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry is empty");
    if (len > ENTRY_TEXT_MAX)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s' is too long", show);
    fb_egress_code rc = shape_check(text, show, err);
    if (rc != FB_EGRESS_OK)
        return rc;
    const char *colon = strchr(text, ':');
    size_t name_len = colon ? (size_t)(colon - text) : len;
    if (colon && (rc = port_parse(colon + 1, show, &out->port, err)) != FB_EGRESS_OK)
        return rc;
    const char *name = text;
    if (name_len >= 1 && name[0] == '*') {
        if (name_len == 1)
            return fb_fail_code(err, FB_EGRESS_EINVAL,
                                "network entry '%s': '*' alone would allow everything; list domains", show);
        if (name[1] != '.')
            return fb_fail_code(err, FB_EGRESS_EINVAL,
                                "network entry '%s': a wildcard must be a whole first label ('*.example.com')", show);
        out->wildcard = true;
        name += 2;
        name_len -= 2;
    }
    if (memchr(name, '*', name_len))
        return fb_fail_code(err, FB_EGRESS_EINVAL,
                            "network entry '%s': a wildcard must be a whole first label ('*.example.com')", show);
    rc = name_check(name, name_len, text, out->host, err);
    if (rc != FB_EGRESS_OK)
        return rc;
    return FB_EGRESS_OK;
}

fb_egress_code fb_egress_host_parse(const char *text, char *out, size_t cap, fb_err *err)
{
    if (!text || cap <= FB_EGRESS_HOST_MAX)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "host name missing");
    char show[80];
    shown(text, show, sizeof show);
    size_t len = strlen(text);
    if (len > ENTRY_TEXT_MAX)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "network entry '%s' is too long", show);
    fb_egress_code rc = shape_check(text, show, err);
    if (rc != FB_EGRESS_OK)
        return rc;
    if (strpbrk(text, ":*"))
        return fb_fail_code(err, FB_EGRESS_EINVAL, "host '%s' is not a plain host name", show);
    return name_check(text, len, text, out, err);
}

static bool same_entry(const fb_egress_entry *a, const fb_egress_entry *b)
{
    return a->wildcard == b->wildcard && a->port == b->port && strcmp(a->host, b->host) == 0;
}

fb_egress_code fb_egress_list_add(fb_egress_list *list, const char *text, fb_err *err)
{
    fb_egress_entry e;
    fb_egress_code rc = fb_egress_entry_parse(text, &e, err);
    if (rc != FB_EGRESS_OK)
        return rc;
    for (size_t i = 0; i < list->count; i++)
        if (same_entry(&list->entries[i], &e))
            return FB_EGRESS_OK;
    if (list->count >= FB_EGRESS_MAX_ENTRIES)
        return fb_fail_code(err, FB_EGRESS_ETOOMANY, "more than %d network entries", FB_EGRESS_MAX_ENTRIES);
    list->entries[list->count++] = e;
    return FB_EGRESS_OK;
}

fb_egress_code fb_egress_list_parse(const char *const *texts, size_t n, fb_egress_list *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        fb_egress_code rc = fb_egress_list_add(out, texts[i], err);
        if (rc != FB_EGRESS_OK)
            return rc;
    }
    return FB_EGRESS_OK;
}

void fb_egress_entry_format(const fb_egress_entry *e, char *out, size_t cap)
{
    char port[8] = "";
    if (e->port)
        snprintf(port, sizeof port, ":%u", (unsigned)e->port);
    snprintf(out, cap, "%s%s%s", e->wildcard ? "*." : "", e->host, port);
}

/* ---- matching ---------------------------------------------------------------- */

/* host is a proper subdomain of domain ("a.b.c" of "b.c", not "b.c"). */
static bool is_subdomain(const char *host, const char *domain)
{
    size_t h = strlen(host), d = strlen(domain);
    return h > d + 1 && host[h - d - 1] == '.' && strcmp(host + h - d, domain) == 0;
}

static bool port_ok(uint16_t entry_port, uint16_t port, bool deny_style)
{
    if (entry_port)
        return port == entry_port;
    return deny_style || port == 80 || port == 443;
}

bool fb_egress_entry_matches(const fb_egress_entry *e, const char *host, uint16_t port, bool deny_style)
{
    bool name = e->wildcard ? is_subdomain(host, e->host) : strcmp(host, e->host) == 0;
    return name && port_ok(e->port, port, deny_style);
}

bool fb_egress_entry_within(const fb_egress_entry *inner, const fb_egress_entry *outer)
{
    bool ports = outer->port ? inner->port == outer->port
                             : (inner->port == 0 || inner->port == 80 || inner->port == 443);
    if (!ports)
        return false;
    if (!outer->wildcard)
        return !inner->wildcard && strcmp(inner->host, outer->host) == 0;
    return is_subdomain(inner->host, outer->host) || (inner->wildcard && strcmp(inner->host, outer->host) == 0);
}

/* Whether a deny entry covers all of a grant entry (a port-less deny
 * entry covers every port).  Partial overlaps are left to the decision at
 * connection time, where deny wins. */
static bool denied_whole(const fb_egress_entry *grant, const fb_egress_entry *deny)
{
    if (deny->port && grant->port != deny->port)
        return false;
    fb_egress_entry any_port = *deny;
    any_port.port = grant->port;
    return fb_egress_entry_within(grant, &any_port);
}

fb_verdict fb_egress_grant_check(const fb_egress_list *grant, const fb_egress_list *ceiling,
                                 const fb_egress_list *deny, fb_decision *out)
{
    char text[FB_EGRESS_HOST_MAX + 16];
    for (size_t i = 0; i < grant->count; i++) {
        const fb_egress_entry *g = &grant->entries[i];
        fb_egress_entry_format(g, text, sizeof text);
        if (ceiling) {
            bool inside = false;
            for (size_t j = 0; j < ceiling->count && !inside; j++)
                inside = fb_egress_entry_within(g, &ceiling->entries[j]);
            if (!inside)
                return fb_policy_say(out, FB_DENY, "network grant entry '%.100s' is outside network.allow", text);
        }
        for (size_t j = 0; deny && j < deny->count; j++)
            if (denied_whole(g, &deny->entries[j]))
                return fb_policy_say(out, FB_DENY, "network grant entry '%.100s' is inside network.deny", text);
    }
    return fb_policy_say(out, FB_ALLOW, "allowed");
}

fb_verdict fb_egress_decide(const char *host, uint16_t port, const fb_egress_list *grant,
                            const fb_egress_list *ceiling, const fb_egress_list *deny, fb_decision *out)
{
    char name[FB_EGRESS_HOST_MAX + 1];
    fb_err err;
    fb_egress_code rc = fb_egress_host_parse(host, name, sizeof name, &err);
    if (rc == FB_EGRESS_ELITERAL)
        return fb_policy_say(out, FB_DENY, "IP literal: name hosts, never addresses");
    if (rc != FB_EGRESS_OK)
        return fb_policy_say(out, FB_DENY, "not a valid host name");
    if (port == 0)
        return fb_policy_say(out, FB_DENY, "port 0");
    for (size_t i = 0; deny && i < deny->count; i++)
        if (fb_egress_entry_matches(&deny->entries[i], name, port, true))
            return fb_policy_say(out, FB_DENY, "denied by network.deny");
    bool in_ceiling = !ceiling;
    for (size_t i = 0; ceiling && i < ceiling->count && !in_ceiling; i++)
        in_ceiling = fb_egress_entry_matches(&ceiling->entries[i], name, port, false);
    for (size_t i = 0; grant && i < grant->count; i++) {
        if (!fb_egress_entry_matches(&grant->entries[i], name, port, false))
            continue;
        if (!in_ceiling)
            return fb_policy_say(out, FB_DENY, "outside network.allow");
        char text[FB_EGRESS_HOST_MAX + 16];
        fb_egress_entry_format(&grant->entries[i], text, sizeof text);
        return fb_policy_say(out, FB_ALLOW, "allowed by grant entry '%.100s'", text);
    }
    return fb_policy_say(out, FB_DENY, "not in this sandbox's allowlist");
}

/* ---- addresses ------------------------------------------------------------------ */

static bool in4(uint32_t a, uint32_t net, unsigned bits)
{
    uint32_t mask = bits ? ~(uint32_t)0 << (32 - bits) : 0;
    return (a & mask) == net;
}

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))

static fb_addr_class class4(uint32_t a)
{
    static const struct {
        uint32_t net;
        unsigned bits;
        fb_addr_class c;
    } ranges[] = {
        {V4(0, 0, 0, 0), 8, FB_ADDR_THIS_NETWORK},     {V4(10, 0, 0, 0), 8, FB_ADDR_PRIVATE},
        {V4(100, 64, 0, 0), 10, FB_ADDR_CGNAT},        {V4(127, 0, 0, 0), 8, FB_ADDR_LOOPBACK},
        {V4(169, 254, 0, 0), 16, FB_ADDR_LINK_LOCAL},  {V4(172, 16, 0, 0), 12, FB_ADDR_PRIVATE},
        {V4(192, 0, 0, 0), 24, FB_ADDR_RESERVED},      {V4(192, 0, 2, 0), 24, FB_ADDR_DOCUMENTATION},
        {V4(192, 88, 99, 0), 24, FB_ADDR_RESERVED},    {V4(192, 168, 0, 0), 16, FB_ADDR_PRIVATE},
        {V4(198, 18, 0, 0), 15, FB_ADDR_RESERVED},     {V4(198, 51, 100, 0), 24, FB_ADDR_DOCUMENTATION},
        {V4(203, 0, 113, 0), 24, FB_ADDR_DOCUMENTATION}, {V4(224, 0, 0, 0), 4, FB_ADDR_MULTICAST},
        {V4(255, 255, 255, 255), 32, FB_ADDR_BROADCAST}, {V4(240, 0, 0, 0), 4, FB_ADDR_RESERVED},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (in4(a, ranges[i].net, ranges[i].bits))
            return ranges[i].c;
    return FB_ADDR_PUBLIC;
}

static uint32_t be32(const uint8_t *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | (uint32_t)b[3];
}

static bool zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* The IPv4 address an IPv6 form carries (mapped, compatible, NAT64,
 * 6to4); false when it carries none. */
static bool embedded4(const uint8_t *b, uint32_t *v4)
{
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    if ((zero(b, 10) && b[10] == 0xff && b[11] == 0xff) || memcmp(b, nat64, 12) == 0 ||
        (zero(b, 12) && be32(b + 12) > 1)) {
        *v4 = be32(b + 12);
        return true;
    }
    if (b[0] == 0x20 && b[1] == 0x02) {
        *v4 = be32(b + 2);
        return true;
    }
    return false;
}

fb_addr_class fb_egress_addr_class(const fb_egress_addr *a)
{
    if (a->family == AF_INET)
        return class4(be32(a->bytes));
    if (a->family != AF_INET6)
        return FB_ADDR_RESERVED;
    const uint8_t *b = a->bytes;
    uint32_t v4;
    if (zero(b, 16))
        return FB_ADDR_THIS_NETWORK;
    if (zero(b, 15) && b[15] == 1)
        return FB_ADDR_LOOPBACK;
    if (embedded4(b, &v4))
        return class4(v4);
    if (b[0] == 0xff)
        return FB_ADDR_MULTICAST;
    if ((b[0] & 0xfe) == 0xfc)
        return FB_ADDR_PRIVATE;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return FB_ADDR_LINK_LOCAL;
    if ((b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) || (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0))
        return FB_ADDR_DOCUMENTATION;
    if ((b[0] & 0xe0) != 0x20)
        return FB_ADDR_RESERVED; /* outside 2000::/3: fec0::/10, 64:ff9b:1::/48, 100::/64, unassigned */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02)
        return FB_ADDR_RESERVED; /* 2001::/23 IETF protocol assignments: Teredo, ORCHID, benchmarking */
    return FB_ADDR_PUBLIC;
}

const char *fb_addr_class_name(fb_addr_class c)
{
    static const char *const names[] = {
        [FB_ADDR_PUBLIC] = "public",           [FB_ADDR_THIS_NETWORK] = "unspecified",
        [FB_ADDR_LOOPBACK] = "loopback",       [FB_ADDR_PRIVATE] = "private",
        [FB_ADDR_LINK_LOCAL] = "link-local",   [FB_ADDR_CGNAT] = "carrier-grade NAT",
        [FB_ADDR_MULTICAST] = "multicast",     [FB_ADDR_BROADCAST] = "broadcast",
        [FB_ADDR_DOCUMENTATION] = "documentation", [FB_ADDR_RESERVED] = "reserved",
    };
    if ((size_t)c >= sizeof names / sizeof names[0])
        return "reserved";
    return names[c];
}

fb_egress_code fb_egress_addr_parse(const char *text, bool allow_no_port, fb_egress_addr *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    char show[80], host[64];
    shown(text ? text : "", show, sizeof show);
    if (!text || strlen(text) >= sizeof host)
        return fb_fail_code(err, FB_EGRESS_EINVAL, "address '%s' is not address:port", show);
    const char *port = NULL;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || (close[1] && close[1] != ':') || (!close[1] && !allow_no_port))
            return fb_fail_code(err, FB_EGRESS_EINVAL, "address '%s' is not [IPv6]:port", show);
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port = close[1] ? close + 2 : NULL;
    } else {
        const char *colon = strrchr(text, ':');
        bool v6 = colon && strchr(text, ':') != colon;
        size_t n = (colon && !v6) ? (size_t)(colon - text) : strlen(text);
        memcpy(host, text, n);
        host[n] = '\0';
        port = (colon && !v6) ? colon + 1 : NULL;
        if (!port && !allow_no_port)
            return fb_fail_code(err, FB_EGRESS_EINVAL, "address '%s' needs a :port", show);
    }
    if (inet_pton(AF_INET, host, out->bytes) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, host, out->bytes) == 1)
        out->family = AF_INET6;
    else
        return fb_fail_code(err, FB_EGRESS_EINVAL, "address '%s' is not a numeric IPv4 or IPv6 address", show);
    if (port && port_parse(port, show, &out->port, err) != FB_EGRESS_OK)
        return FB_EGRESS_EINVAL;
    return FB_EGRESS_OK;
}

void fb_egress_addr_format(const fb_egress_addr *a, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    inet_ntop(a->family == AF_INET ? AF_INET : AF_INET6, a->bytes, host, sizeof host);
    if (!a->port)
        snprintf(out, cap, "%s", host);
    else if (a->family == AF_INET)
        snprintf(out, cap, "%s:%u", host, (unsigned)a->port);
    else
        snprintf(out, cap, "[%s]:%u", host, (unsigned)a->port);
}

/* ::ffff:a.b.c.d -> a.b.c.d, so the two spellings compare equal. */
static fb_egress_addr unmapped(const fb_egress_addr *a)
{
    fb_egress_addr r = *a;
    if (a->family == AF_INET6 && zero(a->bytes, 10) && a->bytes[10] == 0xff && a->bytes[11] == 0xff) {
        r.family = AF_INET;
        memset(r.bytes, 0, sizeof r.bytes);
        memcpy(r.bytes, a->bytes + 12, 4);
    }
    return r;
}

fb_verdict fb_egress_addr_decide(const fb_egress_addr *a, const fb_egress_addr *allow_private, size_t n_private,
                                 fb_decision *out)
{
    fb_addr_class c = fb_egress_addr_class(a);
    if (c == FB_ADDR_PUBLIC)
        return fb_policy_say(out, FB_ALLOW, "public address");
    fb_egress_addr x = unmapped(a);
    size_t len = x.family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < n_private; i++) {
        fb_egress_addr p = unmapped(&allow_private[i]);
        if (p.family == x.family && p.port == x.port && memcmp(p.bytes, x.bytes, len) == 0)
            return fb_policy_say(out, FB_ALLOW, "%s address listed in network.allow_private", fb_addr_class_name(c));
    }
    return fb_policy_say(out, FB_DENY, "%s address", fb_addr_class_name(c));
}
