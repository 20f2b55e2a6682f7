/*
 * test_egress_policy.c - unit tests for the egress rules (src/policy/egress.c):
 * the grant grammar, the ceiling and deny decisions, and address classes.
 *
 * Tables of inputs with the exact expected result: every spelling of an IP
 * literal that inet_aton or a resolver would take, every blocked range at
 * both of its edges (first and last address) and just outside them, and
 * every IPv6 form that carries an IPv4 address.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "policy/policy.h"

/* ---- grammar ------------------------------------------------------------------ */

static void test_entries_accepted(void **state)
{
    (void)state;
    static const struct {
        const char *text, *host;
        bool wildcard;
        uint16_t port;
        const char *canonical;
    } ok[] = {
        {"pypi.org", "pypi.org", false, 0, "pypi.org"},
        {"PyPI.Org", "pypi.org", false, 0, "pypi.org"},
        {"pypi.org.", "pypi.org", false, 0, "pypi.org"},
        {"*.pythonhosted.org", "pythonhosted.org", true, 0, "*.pythonhosted.org"},
        {"api.example.com:8443", "api.example.com", false, 8443, "api.example.com:8443"},
        {"*.example.com:1", "example.com", true, 1, "*.example.com:1"},
        {"a-b.c-d.example:65535", "a-b.c-d.example", false, 65535, "a-b.c-d.example:65535"},
        {"1.2.3.example.com", "1.2.3.example.com", false, 0, "1.2.3.example.com"},
        {"0x1.example.com", "0x1.example.com", false, 0, "0x1.example.com"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example", false, 0, "xn--bcher-kva.example"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        fb_egress_entry e;
        fb_err err = {{0}};
        assert_int_equal(fb_egress_entry_parse(ok[i].text, &e, &err), FB_EGRESS_OK);
        assert_string_equal(e.host, ok[i].host);
        assert_int_equal(e.wildcard, ok[i].wildcard);
        assert_int_equal(e.port, ok[i].port);
        char text[300];
        fb_egress_entry_format(&e, text, sizeof text);
        assert_string_equal(text, ok[i].canonical);
    }
}

static void test_entries_refused(void **state)
{
    (void)state;
    char label64[80], name254[400], label63[80];
    memset(label64, 'a', 64), label64[64] = '\0';
    memset(label63, 'a', 63), label63[63] = '\0';
    strcat(label64, ".com");
    /* 4 labels of 63 and 3 dots are 255 characters; cut to 254 */
    snprintf(name254, sizeof name254, "%s.%s.%s.%s", label63, label63, label63, label63);
    name254[254] = '\0';
    static const struct {
        const char *text;
        fb_egress_code code;
        const char *says;
    } bad[] = {
        {"", FB_EGRESS_EINVAL, "empty"},
        {"*", FB_EGRESS_EINVAL, "'*' alone"},
        {"*.com", FB_EGRESS_EINVAL, "single-label"},
        {"*example.com", FB_EGRESS_EINVAL, "whole first label"},
        {"a.*.example.com", FB_EGRESS_EINVAL, "whole first label"},
        {"**.example.com", FB_EGRESS_EINVAL, "whole first label"},
        {"127.0.0.1", FB_EGRESS_ELITERAL, "IP address"},
        {"127.1", FB_EGRESS_ELITERAL, "IP address"},
        {"2130706433", FB_EGRESS_ELITERAL, "IP address"},
        {"0x7f.1", FB_EGRESS_ELITERAL, "IP address"},
        {"0x7f000001", FB_EGRESS_ELITERAL, "IP address"},
        {"017700000001", FB_EGRESS_ELITERAL, "IP address"},
        {"169.254.169.254:80", FB_EGRESS_ELITERAL, "IP address"},
        {"1.2.3.4.5", FB_EGRESS_ELITERAL, "numeric"},
        {"example.0x10", FB_EGRESS_ELITERAL, "numeric"},
        {"example.123", FB_EGRESS_ELITERAL, "numeric"},
        {"::1", FB_EGRESS_ELITERAL, "IPv6"},
        {"[::1]", FB_EGRESS_ELITERAL, "IPv6"},
        {"[::1]:443", FB_EGRESS_ELITERAL, "IPv6"},
        {"[::ffff:127.0.0.1]:80", FB_EGRESS_ELITERAL, "IPv6"},
        {"fe80::1%eth0", FB_EGRESS_ELITERAL, "IPv6"},
        {"https://pypi.org", FB_EGRESS_EINVAL, "URL"},
        {"pypi.org/simple", FB_EGRESS_EINVAL, "path"},
        {"user@pypi.org", FB_EGRESS_EINVAL, "user part"},
        {"pypi.org?x", FB_EGRESS_EINVAL, "path"},
        {"pypi..org", FB_EGRESS_EINVAL, "empty label"},
        {".pypi.org", FB_EGRESS_EINVAL, "empty label"},
        {"pypi.org..", FB_EGRESS_EINVAL, "empty label"},
        {"-pypi.org", FB_EGRESS_EINVAL, "starts or ends"},
        {"pypi-.org", FB_EGRESS_EINVAL, "starts or ends"},
        {"py_pi.org", FB_EGRESS_EINVAL, "not allowed"},
        {"py pi.org", FB_EGRESS_EINVAL, "not allowed"},
        {"localhost", FB_EGRESS_EINVAL, "single-label"},
        {"pypi.org:", FB_EGRESS_EINVAL, "port"},
        {"pypi.org:0", FB_EGRESS_EINVAL, "port"},
        {"pypi.org:65536", FB_EGRESS_EINVAL, "port"},
        {"pypi.org:+80", FB_EGRESS_EINVAL, "port"},
        {"pypi.org:080a", FB_EGRESS_EINVAL, "port"},
        {"pypi.org:443:1", FB_EGRESS_ELITERAL, "IPv6"},
        {":443", FB_EGRESS_EINVAL, "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fb_egress_entry e;
        fb_err err = {{0}};
        fb_egress_code rc = fb_egress_entry_parse(bad[i].text, &e, &err);
        if (rc != bad[i].code || !strstr(err.msg, bad[i].says))
            fail_msg("'%s': rc %d, message '%s'", bad[i].text, rc, err.msg);
        if (bad[i].text[0] && bad[i].text[0] != ':')
            assert_non_null(strstr(err.msg, "network entry '"));
    }
    fb_egress_entry e;
    fb_err err;
    assert_int_equal(fb_egress_entry_parse(label64, &e, &err), FB_EGRESS_EINVAL);
    assert_non_null(strstr(err.msg, "63"));
    assert_int_equal(fb_egress_entry_parse(name254, &e, &err), FB_EGRESS_EINVAL);
    assert_non_null(strstr(err.msg, "253"));
    name254[253] = '\0'; /* exactly 253: fine */
    assert_int_equal(fb_egress_entry_parse(name254, &e, &err), FB_EGRESS_OK);
    assert_int_equal(fb_egress_entry_parse(NULL, &e, &err), FB_EGRESS_EINVAL);
}

static void test_list(void **state)
{
    (void)state;
    const char *texts[] = {"a.example", "A.example", "*.b.example", "a.example:80"};
    fb_egress_list l;
    fb_err err;
    assert_int_equal(fb_egress_list_parse(texts, 4, &l, &err), FB_EGRESS_OK);
    assert_int_equal(l.count, 3); /* the duplicate is kept once */
    const char *bad[] = {"a.example", "http://x.example"};
    assert_int_equal(fb_egress_list_parse(bad, 2, &l, &err), FB_EGRESS_EINVAL);
    assert_non_null(strstr(err.msg, "http://x.example"));
    memset(&l, 0, sizeof l);
    char name[32];
    for (int i = 0; i < FB_EGRESS_MAX_ENTRIES; i++) {
        snprintf(name, sizeof name, "h%d.example", i);
        assert_int_equal(fb_egress_list_add(&l, name, &err), FB_EGRESS_OK);
    }
    assert_int_equal(fb_egress_list_add(&l, "one-more.example", &err), FB_EGRESS_ETOOMANY);
}

static void test_host_parse(void **state)
{
    (void)state;
    char out[FB_EGRESS_HOST_MAX + 1];
    fb_err err;
    assert_int_equal(fb_egress_host_parse("API.Example.COM.", out, sizeof out, &err), FB_EGRESS_OK);
    assert_string_equal(out, "api.example.com");
    assert_int_equal(fb_egress_host_parse("*.example.com", out, sizeof out, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_host_parse("example.com:80", out, sizeof out, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_host_parse("0x7f.1", out, sizeof out, &err), FB_EGRESS_ELITERAL);
    assert_int_equal(fb_egress_host_parse("[::1]", out, sizeof out, &err), FB_EGRESS_ELITERAL);
    assert_int_equal(fb_egress_host_parse("example.com", out, 10, &err), FB_EGRESS_EINVAL);
}

/* ---- decisions ----------------------------------------------------------------- */

static fb_egress_list list_of(const char *a, const char *b, const char *c)
{
    const char *texts[] = {a, b, c};
    size_t n = c ? 3 : b ? 2 : a ? 1 : 0;
    fb_egress_list l;
    fb_err err;
    assert_int_equal(fb_egress_list_parse(texts, n, &l, &err), FB_EGRESS_OK);
    return l;
}

static void expect(const char *host, uint16_t port, const fb_egress_list *grant, const fb_egress_list *ceiling,
                   const fb_egress_list *deny, fb_verdict v, const char *reason)
{
    fb_decision d;
    fb_verdict got = fb_egress_decide(host, port, grant, ceiling, deny, &d);
    if (got != v || strcmp(d.reason, reason) != 0)
        fail_msg("%s:%u: got %s '%s', want %s '%s'", host, port, fb_verdict_name(got), d.reason, fb_verdict_name(v),
                 reason);
}

static void test_decide(void **state)
{
    (void)state;
    fb_egress_list g = list_of("pypi.org", "*.pythonhosted.org", "api.example.com:8443");
    const char *notin = "not in this sandbox's allowlist";
    expect("pypi.org", 443, &g, NULL, NULL, FB_ALLOW, "allowed by grant entry 'pypi.org'");
    expect("PYPI.ORG.", 80, &g, NULL, NULL, FB_ALLOW, "allowed by grant entry 'pypi.org'");
    expect("pypi.org", 8080, &g, NULL, NULL, FB_DENY, notin);
    expect("www.pypi.org", 443, &g, NULL, NULL, FB_DENY, notin);
    expect("files.pythonhosted.org", 443, &g, NULL, NULL, FB_ALLOW, "allowed by grant entry '*.pythonhosted.org'");
    expect("a.b.pythonhosted.org", 80, &g, NULL, NULL, FB_ALLOW, "allowed by grant entry '*.pythonhosted.org'");
    expect("pythonhosted.org", 443, &g, NULL, NULL, FB_DENY, notin); /* apex */
    expect("evilpythonhosted.org", 443, &g, NULL, NULL, FB_DENY, notin);
    expect("pythonhosted.org.evil.com", 443, &g, NULL, NULL, FB_DENY, notin);
    expect("api.example.com", 8443, &g, NULL, NULL, FB_ALLOW, "allowed by grant entry 'api.example.com:8443'");
    expect("api.example.com", 443, &g, NULL, NULL, FB_DENY, notin);
    expect("other.org", 443, &g, NULL, NULL, FB_DENY, notin);
    expect("127.0.0.1", 443, &g, NULL, NULL, FB_DENY, "IP literal: name hosts, never addresses");
    expect("2130706433", 80, &g, NULL, NULL, FB_DENY, "IP literal: name hosts, never addresses");
    expect("[::1]", 80, &g, NULL, NULL, FB_DENY, "IP literal: name hosts, never addresses");
    expect("pypi.org/x", 80, &g, NULL, NULL, FB_DENY, "not a valid host name");
    expect("pypi.org", 0, &g, NULL, NULL, FB_DENY, "port 0");
    expect("pypi.org", 443, NULL, NULL, NULL, FB_DENY, notin);
    fb_egress_list empty = {0};
    expect("pypi.org", 443, &empty, NULL, NULL, FB_DENY, notin);

    /* deny always wins; a port-less deny entry covers every port */
    fb_egress_list deny = list_of("pypi.org", "*.bad.pythonhosted.org", NULL);
    expect("pypi.org", 443, &g, NULL, &deny, FB_DENY, "denied by network.deny");
    expect("x.bad.pythonhosted.org", 443, &g, NULL, &deny, FB_DENY, "denied by network.deny");
    expect("bad.pythonhosted.org", 443, &g, NULL, &deny, FB_ALLOW, "allowed by grant entry '*.pythonhosted.org'");
    fb_egress_list deny_port = list_of("api.example.com:8443", NULL, NULL);
    expect("api.example.com", 8443, &g, NULL, &deny_port, FB_DENY, "denied by network.deny");

    /* the ceiling binds at connection time too */
    fb_egress_list ceiling = list_of("*.pythonhosted.org", NULL, NULL);
    expect("files.pythonhosted.org", 443, &g, &ceiling, NULL, FB_ALLOW, "allowed by grant entry '*.pythonhosted.org'");
    expect("pypi.org", 443, &g, &ceiling, NULL, FB_DENY, "outside network.allow");
    fb_egress_list none = {0};
    expect("pypi.org", 443, &g, &none, NULL, FB_DENY, "outside network.allow");
}

static void within(const char *inner, const char *outer, bool want)
{
    fb_egress_entry i, o;
    assert_int_equal(fb_egress_entry_parse(inner, &i, NULL), FB_EGRESS_OK);
    assert_int_equal(fb_egress_entry_parse(outer, &o, NULL), FB_EGRESS_OK);
    if (fb_egress_entry_within(&i, &o) != want)
        fail_msg("'%s' within '%s' should be %d", inner, outer, want);
}

static void test_within(void **state)
{
    (void)state;
    within("pypi.org", "pypi.org", true);
    within("pypi.org:443", "pypi.org", true);
    within("pypi.org:80", "pypi.org", true);
    within("pypi.org:8080", "pypi.org", false);
    within("pypi.org", "pypi.org:443", false); /* 80 too */
    within("pypi.org:443", "pypi.org:443", true);
    within("a.pypi.org", "pypi.org", false);
    within("a.pypi.org", "*.pypi.org", true);
    within("a.b.pypi.org", "*.pypi.org", true);
    within("pypi.org", "*.pypi.org", false);
    within("*.pypi.org", "*.pypi.org", true);
    within("*.a.pypi.org", "*.pypi.org", true);
    within("*.pypi.org", "pypi.org", false);
    within("*.pypi.org", "*.a.pypi.org", false);
    within("xpypi.org", "*.pypi.org", false);
    within("*.pypi.org:8443", "*.pypi.org", false);
    within("*.pypi.org:8443", "*.pypi.org:8443", true);
}

static void test_grant_check(void **state)
{
    (void)state;
    fb_decision d;
    fb_egress_list g = list_of("pypi.org", "*.pythonhosted.org", NULL);
    fb_egress_list ceiling = list_of("pypi.org", "*.pythonhosted.org", "*.example.com");
    assert_int_equal(fb_egress_grant_check(&g, &ceiling, NULL, &d), FB_ALLOW);
    assert_int_equal(fb_egress_grant_check(&g, NULL, NULL, &d), FB_ALLOW);
    fb_egress_list narrow = list_of("pypi.org", NULL, NULL);
    assert_int_equal(fb_egress_grant_check(&g, &narrow, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "network grant entry '*.pythonhosted.org' is outside network.allow");
    fb_egress_list empty = {0};
    assert_int_equal(fb_egress_grant_check(&g, &empty, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "network grant entry 'pypi.org' is outside network.allow");
    assert_int_equal(fb_egress_grant_check(&empty, &empty, NULL, &d), FB_ALLOW);

    /* a grant entry wholly inside network.deny is refused at creation */
    fb_egress_list deny = list_of("pypi.org", NULL, NULL);
    assert_int_equal(fb_egress_grant_check(&g, NULL, &deny, &d), FB_DENY);
    assert_string_equal(d.reason, "network grant entry 'pypi.org' is inside network.deny");
    fb_egress_list deny_wild = list_of("*.pythonhosted.org", NULL, NULL);
    assert_int_equal(fb_egress_grant_check(&g, NULL, &deny_wild, &d), FB_DENY);
    assert_string_equal(d.reason, "network grant entry '*.pythonhosted.org' is inside network.deny");
    fb_egress_list g_port = list_of("pypi.org:8443", NULL, NULL);
    fb_egress_list deny_port = list_of("pypi.org:8443", NULL, NULL);
    assert_int_equal(fb_egress_grant_check(&g_port, NULL, &deny_port, &d), FB_DENY);
    assert_int_equal(fb_egress_grant_check(&g_port, NULL, &deny, &d), FB_DENY); /* port-less deny: every port */
    /* partial overlaps pass here and are refused per connection */
    fb_egress_list partial = list_of("files.pythonhosted.org:443", "pypi.org:8080", "*.pypi.org");
    assert_int_equal(fb_egress_grant_check(&g, NULL, &partial, &d), FB_ALLOW);
    assert_int_equal(fb_egress_grant_check(&g_port, NULL, &partial, &d), FB_ALLOW);
    assert_int_equal(fb_egress_grant_check(&g, &ceiling, &partial, &d), FB_ALLOW);
    expect("files.pythonhosted.org", 443, &g, NULL, &partial, FB_DENY, "denied by network.deny");
    expect("files.pythonhosted.org", 80, &g, NULL, &partial, FB_ALLOW, "allowed by grant entry '*.pythonhosted.org'");
}

/* ---- addresses ------------------------------------------------------------------ */

static fb_egress_addr addr(const char *text)
{
    fb_egress_addr a;
    fb_err err;
    if (fb_egress_addr_parse(text, true, &a, &err) != FB_EGRESS_OK)
        fail_msg("%s: %s", text, err.msg);
    return a;
}

static void test_addr_classes(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        fb_addr_class c;
    } t[] = {
        {"0.0.0.0", FB_ADDR_THIS_NETWORK}, {"0.255.255.255", FB_ADDR_THIS_NETWORK}, {"1.0.0.0", FB_ADDR_PUBLIC},
        {"9.255.255.255", FB_ADDR_PUBLIC}, {"10.0.0.0", FB_ADDR_PRIVATE}, {"10.255.255.255", FB_ADDR_PRIVATE},
        {"11.0.0.0", FB_ADDR_PUBLIC}, {"100.63.255.255", FB_ADDR_PUBLIC}, {"100.64.0.0", FB_ADDR_CGNAT},
        {"100.127.255.255", FB_ADDR_CGNAT}, {"100.128.0.0", FB_ADDR_PUBLIC}, {"126.255.255.255", FB_ADDR_PUBLIC},
        {"127.0.0.0", FB_ADDR_LOOPBACK}, {"127.0.0.1", FB_ADDR_LOOPBACK}, {"127.255.255.255", FB_ADDR_LOOPBACK},
        {"128.0.0.0", FB_ADDR_PUBLIC}, {"169.253.255.255", FB_ADDR_PUBLIC}, {"169.254.0.0", FB_ADDR_LINK_LOCAL},
        {"169.254.169.254", FB_ADDR_LINK_LOCAL}, {"169.254.255.255", FB_ADDR_LINK_LOCAL},
        {"169.255.0.0", FB_ADDR_PUBLIC}, {"172.15.255.255", FB_ADDR_PUBLIC}, {"172.16.0.0", FB_ADDR_PRIVATE},
        {"172.31.255.255", FB_ADDR_PRIVATE}, {"172.32.0.0", FB_ADDR_PUBLIC}, {"192.0.0.0", FB_ADDR_RESERVED},
        {"192.0.0.255", FB_ADDR_RESERVED}, {"192.0.1.0", FB_ADDR_PUBLIC}, {"192.0.2.0", FB_ADDR_DOCUMENTATION},
        {"192.0.2.255", FB_ADDR_DOCUMENTATION}, {"192.88.99.1", FB_ADDR_RESERVED}, {"192.167.255.255", FB_ADDR_PUBLIC},
        {"192.168.0.0", FB_ADDR_PRIVATE}, {"192.168.255.255", FB_ADDR_PRIVATE}, {"192.169.0.0", FB_ADDR_PUBLIC},
        {"198.17.255.255", FB_ADDR_PUBLIC}, {"198.18.0.0", FB_ADDR_RESERVED}, {"198.19.255.255", FB_ADDR_RESERVED},
        {"198.20.0.0", FB_ADDR_PUBLIC}, {"198.51.100.7", FB_ADDR_DOCUMENTATION},
        {"203.0.113.255", FB_ADDR_DOCUMENTATION}, {"223.255.255.255", FB_ADDR_PUBLIC},
        {"224.0.0.0", FB_ADDR_MULTICAST}, {"239.255.255.255", FB_ADDR_MULTICAST}, {"240.0.0.0", FB_ADDR_RESERVED},
        {"255.255.255.254", FB_ADDR_RESERVED}, {"255.255.255.255", FB_ADDR_BROADCAST}, {"8.8.8.8", FB_ADDR_PUBLIC},
        /* IPv6 */
        {"::", FB_ADDR_THIS_NETWORK}, {"::1", FB_ADDR_LOOPBACK}, {"::2", FB_ADDR_THIS_NETWORK},
        {"::ffff:127.0.0.1", FB_ADDR_LOOPBACK}, {"::ffff:169.254.169.254", FB_ADDR_LINK_LOCAL},
        {"::ffff:10.1.2.3", FB_ADDR_PRIVATE}, {"::ffff:8.8.8.8", FB_ADDR_PUBLIC}, {"::127.0.0.1", FB_ADDR_LOOPBACK},
        {"::10.0.0.1", FB_ADDR_PRIVATE}, {"64:ff9b::7f00:1", FB_ADDR_LOOPBACK},
        {"64:ff9b::a9fe:a9fe", FB_ADDR_LINK_LOCAL}, {"64:ff9b::808:808", FB_ADDR_PUBLIC},
        {"64:ff9b:1::1", FB_ADDR_RESERVED}, {"2002:7f00:1::", FB_ADDR_LOOPBACK}, {"2002:a9fe:a9fe::1", FB_ADDR_LINK_LOCAL},
        {"2002:c0a8:101::1", FB_ADDR_PRIVATE}, {"2002:808:808::1", FB_ADDR_PUBLIC}, {"2001::1", FB_ADDR_RESERVED},
        {"2001:0:4136:e378::1", FB_ADDR_RESERVED}, {"2001:2::1", FB_ADDR_RESERVED}, {"2001:10::1", FB_ADDR_RESERVED},
        {"2001:1ff::1", FB_ADDR_RESERVED}, {"2001:200::1", FB_ADDR_PUBLIC}, {"2001:db8::1", FB_ADDR_DOCUMENTATION},
        {"3fff::1", FB_ADDR_DOCUMENTATION}, {"3ffe::1", FB_ADDR_PUBLIC}, {"2606:4700::1111", FB_ADDR_PUBLIC},
        {"fc00::1", FB_ADDR_PRIVATE}, {"fdff:ffff::1", FB_ADDR_PRIVATE}, {"fe80::1", FB_ADDR_LINK_LOCAL},
        {"febf::1", FB_ADDR_LINK_LOCAL}, {"fec0::1", FB_ADDR_RESERVED}, {"ff02::1", FB_ADDR_MULTICAST},
        {"100::1", FB_ADDR_RESERVED}, {"4000::1", FB_ADDR_RESERVED}, {"1fff::1", FB_ADDR_RESERVED},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        fb_egress_addr a = addr(t[i].addr);
        fb_addr_class c = fb_egress_addr_class(&a);
        if (c != t[i].c)
            fail_msg("%s: class %s, want %s", t[i].addr, fb_addr_class_name(c), fb_addr_class_name(t[i].c));
    }
    fb_egress_addr odd = {.family = 12345};
    assert_int_equal(fb_egress_addr_class(&odd), FB_ADDR_RESERVED);
    assert_string_equal(fb_addr_class_name(FB_ADDR_CGNAT), "carrier-grade NAT");
    assert_string_equal(fb_addr_class_name((fb_addr_class)99), "reserved");
}

static void test_addr_parse(void **state)
{
    (void)state;
    fb_egress_addr a;
    fb_err err;
    char text[64];
    assert_int_equal(fb_egress_addr_parse("127.0.0.1:8080", false, &a, &err), FB_EGRESS_OK);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(a.port, 8080);
    fb_egress_addr_format(&a, text, sizeof text);
    assert_string_equal(text, "127.0.0.1:8080");
    assert_int_equal(fb_egress_addr_parse("[::1]:443", false, &a, &err), FB_EGRESS_OK);
    fb_egress_addr_format(&a, text, sizeof text);
    assert_string_equal(text, "[::1]:443");
    assert_int_equal(fb_egress_addr_parse("::1", true, &a, &err), FB_EGRESS_OK);
    assert_int_equal(a.port, 0);
    assert_int_equal(fb_egress_addr_parse("127.0.0.1", false, &a, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_addr_parse("::1", false, &a, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_addr_parse("localhost:80", false, &a, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_addr_parse("127.1:80", false, &a, &err), FB_EGRESS_EINVAL); /* numeric, canonical */
    assert_int_equal(fb_egress_addr_parse("127.0.0.1:0", false, &a, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_addr_parse("[::1]x", false, &a, &err), FB_EGRESS_EINVAL);
    assert_int_equal(fb_egress_addr_parse(NULL, false, &a, &err), FB_EGRESS_EINVAL);
}

static void test_addr_decide(void **state)
{
    (void)state;
    fb_decision d;
    fb_egress_addr allow[] = {addr("127.0.0.1:8080"), addr("[fd00::5]:443")};
    fb_egress_addr a = addr("8.8.8.8:443");
    assert_int_equal(fb_egress_addr_decide(&a, NULL, 0, &d), FB_ALLOW);
    a = addr("127.0.0.1:8080");
    assert_int_equal(fb_egress_addr_decide(&a, NULL, 0, &d), FB_DENY);
    assert_string_equal(d.reason, "loopback address");
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_ALLOW);
    assert_string_equal(d.reason, "loopback address listed in network.allow_private");
    a = addr("127.0.0.1:8081"); /* another port */
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_DENY);
    a = addr("127.0.0.2:8080"); /* another address */
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_DENY);
    a = addr("[::ffff:127.0.0.1]:8080"); /* the mapped spelling of a listed one */
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_ALLOW);
    a = addr("[::ffff:127.0.0.1]:80");
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_DENY);
    assert_string_equal(d.reason, "loopback address");
    a = addr("[fd00::5]:443");
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_ALLOW);
    a = addr("169.254.169.254:80");
    assert_int_equal(fb_egress_addr_decide(&a, allow, 2, &d), FB_DENY);
    assert_string_equal(d.reason, "link-local address");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_accepted), cmocka_unit_test(test_entries_refused),
        cmocka_unit_test(test_list),             cmocka_unit_test(test_host_parse),
        cmocka_unit_test(test_decide),           cmocka_unit_test(test_within),
        cmocka_unit_test(test_grant_check),      cmocka_unit_test(test_addr_classes),
        cmocka_unit_test(test_addr_parse),       cmocka_unit_test(test_addr_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
