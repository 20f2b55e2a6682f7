/*
 * test_config.c - unit tests for the gateway configuration (src/config/).
 *
 * A configuration mistake must stop start-up with one line that says which
 * key, where the bad value came from and why, so most tests here assert the
 * exact message.  Files are real files in a scratch directory and the
 * environment is passed as an envp array, except for ${VAR} interpolation,
 * which reads the process environment (variables here are prefixed FB_T_).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "config/config.h"

/* ---- helpers ------------------------------------------------------------- */

static char tmpdir[64];
static char path_buf[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb-test-config.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    return fb_rm_rf(tmpdir);
}

/* Writes text to tmpdir/name and returns the path (valid until the next call). */
static const char *write_file(const char *name, const char *text)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", tmpdir, name);
    FILE *f = fopen(path_buf, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path_buf;
}

/* Fresh defaults plus forgebox.yaml with text; returns the load status. */
static int load_text(fb_config *cfg, const char *text, fb_err *err)
{
    assert_int_equal(fb_config_defaults(cfg), 0);
    const char *p = write_file("forgebox.yaml", text);
    memset(err, 0, sizeof *err);
    return fb_config_load_file(cfg, p, true, err);
}

/* Asserts that loading text fails with exactly the message fmt formats to,
 * where fmt's %s is the file's path. */
static void assert_load_fails(const char *text, const char *fmt)
{
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg, text, &err), -1);
    char want[1024];
    snprintf(want, sizeof want, fmt, path_buf);
    assert_string_equal(err.msg, want);
    fb_config_free(&cfg);
}


/* nodes.*: where sandboxes run; remote needs the gateway's certificate. */
static void test_nodes_keys(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"nodes:\n  mode: remote\n",
         "config: nodes.mode (%s:2): remote needs nodes.tls_cert, nodes.tls_key and nodes.tls_ca (every call to "
         "a node is mutual TLS; `forgebox ca issue --role gateway` makes the certificate)"},
        {"nodes:\n  heartbeat_s: 6\n",
         "config: nodes.down_after_s (default) must be at least twice nodes.heartbeat_s (%s:2), or one late "
         "heartbeat marks a live node down"},
        {"nodes:\n  tls_cert: /etc/hostname\n",
         "config: nodes.tls_cert and nodes.tls_key must be set together (%s:2)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fb_config cfg;
        fb_err err = {{0}};
        assert_int_equal(load_text(&cfg, bad[i].text, &err), 0);
        assert_int_equal(fb_config_validate(&cfg, &err), -1);
        char want[1024];
        snprintf(want, sizeof want, bad[i].want, path_buf);
        assert_string_equal(err.msg, want);
        fb_config_free(&cfg);
    }
    assert_load_fails("nodes:\n  mode: cluster\n",
                      "config: nodes.mode (%s:2): must be local or remote, got \"cluster\"");
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg,
                               "nodes:\n  mode: remote\n  tls_cert: /etc/hostname\n  tls_key: /etc/hostname\n"
                               "  tls_ca: /etc/hostname\n",
                               &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), 0);
    assert_int_equal(cfg.nodes.mode, FB_NODES_REMOTE);
    fb_config_free(&cfg);
}

/* ---- defaults ------------------------------------------------------------ */

static void test_defaults(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(fb_config_defaults(&cfg), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:8420");
    assert_string_equal(cfg.state_dir, "/var/lib/forgebox");
    assert_string_equal(cfg.run_dir, "/run/forgebox");
    assert_null(cfg.image_dir);
    assert_int_equal(cfg.log_level, FB_LOG_INFO);
    assert_null(cfg.tls.cert);
    assert_null(cfg.tls.key);
    assert_int_equal(cfg.sandbox.backend, FB_BACKEND_VM);
    assert_int_equal(cfg.sandbox.memory_mib, 512);
    assert_int_equal(cfg.sandbox.vcpus, 1);
    assert_int_equal(cfg.sandbox.disk_mib, 256);
    assert_int_equal(cfg.sandbox.ttl_s, 600);
    assert_int_equal(cfg.sandbox.max_ttl_s, 3600);
    assert_int_equal(cfg.sandbox.max_memory_mib, 4096);
    assert_int_equal(cfg.network.allow.count, 0);
    assert_int_equal(cfg.network.deny.count, 0);
    assert_int_equal(cfg.network.nallow_private, 0);
    assert_int_equal(cfg.network.nhosts, 0);
    assert_int_equal(cfg.limits.max_body_bytes, 1024 * 1024);
    assert_int_equal(cfg.limits.max_header_bytes, 16 * 1024);
    assert_int_equal(cfg.limits.max_file_bytes, 64 * 1024 * 1024);
    assert_int_equal(cfg.limits.max_output_bytes, 8 * 1024 * 1024);
    assert_int_equal(cfg.limits.rate_rps, 10);
    assert_int_equal(cfg.limits.rate_burst, 20);
    assert_int_equal(cfg.limits.max_connections, 256);
    assert_int_equal(cfg.limits.request_timeout_s, 30);
    assert_int_equal(cfg.quotas.max_sandboxes_per_team, 10);
    assert_int_equal(cfg.quotas.max_memory_mib_per_team, 8192);
    assert_int_equal(cfg.console.session_ttl_s, 8 * 3600);
    assert_int_equal(cfg.console.max_sessions_per_user, 5);
    assert_int_equal(cfg.console.max_login_failures, 5);
    assert_string_equal(fb_config_source(&cfg, "limits.rate_rps"), "default");
    assert_null(fb_config_source(&cfg, "limits.nope"));
    assert_int_equal(fb_config_validate(&cfg, &err), 0);

    char *json = fb_config_dump_json(&cfg);
    assert_non_null(json);
    assert_string_equal(
        json,
        "{\"listen\":\"127.0.0.1:8420\",\"state_dir\":\"/var/lib/forgebox\","
        "\"store\":{\"url\":null},"
        "\"run_dir\":\"/run/forgebox\",\"image_dir\":null,\"log_level\":\"info\","
        "\"tls\":{\"cert\":null,\"key\":null,\"client_ca\":null,\"client_crl\":null,\"client_roles\":[\"gateway\"]},"
        "\"sandbox\":{\"backend\":\"vm\",\"memory_mib\":512,\"vcpus\":1,\"disk_mib\":256,"
        "\"ttl_s\":600,\"max_ttl_s\":3600,\"max_memory_mib\":4096,\"max_vcpus\":8,\"vm_snapshot\":true,"
        "\"vm_tcg_cache_mib\":20},"
        "\"pool\":{\"jail\":{\"size\":0},\"vm\":{\"size\":0}},"
        "\"limits\":{\"max_body_bytes\":1048576,\"max_header_bytes\":16384,"
        "\"max_file_bytes\":67108864,\"max_output_bytes\":8388608,\"rate_rps\":10,"
        "\"rate_burst\":20,\"max_connections\":256,\"request_timeout_s\":30,"
        "\"exec_reattach_s\":10},"
        "\"quotas\":{\"max_sandboxes_per_team\":10,\"max_memory_mib_per_team\":8192,"
        "\"max_vcpus_per_team\":32},"
        "\"tasks\":{\"default_max_turns\":20,\"default_max_tokens\":200000,\"default_max_tool_calls\":50,"
        "\"default_timeout_s\":900,\"max_turns\":100,\"max_tokens\":2000000,\"max_tool_calls\":500,"
        "\"max_timeout_s\":3600,\"require_approval\":[],\"self_approval\":false,\"approval_timeout_s\":600,"
        "\"ttl_s\":600,\"max_running\":8},\"e2b\":{\"listen\":null},"
        "\"console\":{\"session_ttl_s\":28800,\"max_sessions_per_user\":5,\"max_login_failures\":5},"
        "\"nodes\":{\"mode\":\"local\",\"heartbeat_s\":2,\"down_after_s\":10,\"tls_cert\":null,"
        "\"tls_key\":null,\"tls_ca\":null,\"tls_crl\":null},"
        "\"network\":{\"allow\":[],\"deny\":[],\"allow_private\":[],\"hosts\":{},\"dns_servers\":null}}");
    free(json);
    fb_config_free(&cfg);
    fb_config_free(&cfg); /* twice is safe */
}

/* e2b.listen: off by default, HOST:PORT from the file or --set, an empty
 * value turns it off again, anything else is refused with the key's name. */
static void test_e2b_listen(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg, "e2b:\n  listen: 127.0.0.1:49983\n", &err), 0);
    assert_string_equal(cfg.e2b.listen, "127.0.0.1:49983");
    assert_int_equal(fb_config_set(&cfg, "e2b.listen", "[::1]:3000", "--set", &err), 0);
    assert_string_equal(cfg.e2b.listen, "[::1]:3000");
    assert_int_equal(fb_config_set(&cfg, "e2b.listen", "", "--set", &err), 0);
    assert_null(cfg.e2b.listen);
    assert_int_equal(fb_config_set(&cfg, "e2b.listen", "localhost", "--set", &err), -1);
    assert_non_null(strstr(err.msg, "e2b.listen"));
    assert_null(cfg.e2b.listen);
    fb_config_free(&cfg);
}

/* ---- layers -------------------------------------------------------------- */

static void test_file_overrides_defaults(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    int rc = load_text(&cfg,
                       "# ForgeBox\n"
                       "listen: \"[::1]:9000\"\n"
                       "log_level: debug\n"
                       "image_dir: /opt/forgebox/image\n"
                       "sandbox:\n"
                       "  backend: jail\n"
                       "  memory_mib: 1024\n"
                       "network:\n"
                       "  allow: [PyPI.org, \"*.pythonhosted.org\", \"api.example.com:8443\"]\n"
                       "  deny: [secret.example.com]\n"
                       "  allow_private: [\"127.0.0.1:8080\", \"[::1]:443\"]\n"
                       "  hosts:\n"
                       "    Test.Example: [127.0.0.1, \"::1\"]\n"
                       "    one.example: 10.0.0.5\n"
                       "limits:\n"
                       "  max_body_bytes: 2MiB\n"
                       "  max_header_bytes: 32 KiB\n"
                       "  rate_rps: 5\n"
                       "limits.rate_burst: 7\n"
                       "quotas:\n",
                       &err);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.listen, "[::1]:9000");
    assert_int_equal(cfg.log_level, FB_LOG_DEBUG);
    assert_string_equal(cfg.image_dir, "/opt/forgebox/image");
    assert_int_equal(cfg.sandbox.backend, FB_BACKEND_JAIL);
    assert_int_equal(cfg.sandbox.memory_mib, 1024);
    assert_int_equal(cfg.network.allow.count, 3);
    assert_string_equal(cfg.network.allow.entries[0].host, "pypi.org");
    assert_true(cfg.network.allow.entries[1].wildcard);
    assert_int_equal(cfg.network.allow.entries[2].port, 8443);
    assert_int_equal(cfg.network.deny.count, 1);
    assert_int_equal(cfg.network.nallow_private, 2);
    assert_int_equal(cfg.network.allow_private[0].port, 8080);
    assert_int_equal(cfg.network.allow_private[1].family, AF_INET6);
    assert_int_equal(cfg.network.nhosts, 2);
    assert_string_equal(cfg.network.hosts[0].name, "test.example");
    assert_int_equal(cfg.network.hosts[0].naddrs, 2);
    assert_string_equal(cfg.network.hosts[0].addrs[1], "::1");
    assert_string_equal(cfg.network.hosts[1].addrs[0], "10.0.0.5");
    assert_int_equal(cfg.limits.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(cfg.limits.max_header_bytes, 32 * 1024);
    assert_int_equal(cfg.limits.rate_rps, 5);
    assert_int_equal(cfg.limits.rate_burst, 7);
    /* untouched keys keep their defaults */
    assert_int_equal(cfg.sandbox.vcpus, 1);
    assert_string_equal(cfg.state_dir, "/var/lib/forgebox");

    char want[600];
    snprintf(want, sizeof want, "%s:18", path_buf);
    assert_string_equal(fb_config_source(&cfg, "limits.rate_rps"), want);
    assert_string_equal(fb_config_source(&cfg, "sandbox.vcpus"), "default");

    char host[64];
    uint16_t port = 0;
    assert_int_equal(fb_config_listen_split(cfg.listen, host, sizeof host, &port, &err), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9000);
    assert_int_equal(fb_config_validate(&cfg, &err), 0);
    fb_config_free(&cfg);

    /* an empty file and a comment-only file change nothing */
    assert_int_equal(load_text(&cfg, "", &err), 0);
    assert_int_equal(cfg.limits.rate_rps, 10);
    fb_config_free(&cfg);
    assert_int_equal(load_text(&cfg, "# nothing yet\n", &err), 0);
    assert_int_equal(cfg.limits.rate_rps, 10);
    fb_config_free(&cfg);
}

static void test_missing_file(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    char p[256];
    snprintf(p, sizeof p, "%s/absent.yaml", tmpdir);
    assert_int_equal(fb_config_defaults(&cfg), 0);
    assert_int_equal(fb_config_load_file(&cfg, p, false, &err), 0);
    assert_int_equal(cfg.limits.rate_rps, 10);

    char want[512];
    snprintf(want, sizeof want, "config: cannot open %s: No such file or directory", p);
    assert_int_equal(fb_config_load_file(&cfg, p, true, &err), -1);
    assert_string_equal(err.msg, want);

    /* a directory is never fine, required or not */
    assert_int_equal(fb_config_load_file(&cfg, tmpdir, false, &err), -1);
    snprintf(want, sizeof want, "config: %s: not a regular file", tmpdir);
    assert_string_equal(err.msg, want);
    fb_config_free(&cfg);
}

static void test_config_path(void **state)
{
    (void)state;
    bool req = false;
    char *none[] = {"PATH=/usr/bin", NULL};
    char *env[] = {"FORGEBOX_CONFIG=/etc/fb.yaml", NULL};
    char *empty[] = {"FORGEBOX_CONFIG=", NULL};
    assert_string_equal(fb_config_path("/x.yaml", env, &req), "/x.yaml");
    assert_true(req);
    assert_string_equal(fb_config_path(NULL, env, &req), "/etc/fb.yaml");
    assert_true(req);
    assert_string_equal(fb_config_path(NULL, none, &req), FB_CONFIG_DEFAULT_PATH);
    assert_false(req);
    assert_string_equal(fb_config_path(NULL, empty, &req), FB_CONFIG_DEFAULT_PATH);
    assert_false(req);
}

static void test_env_overrides_file(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg, "limits:\n  rate_rps: 5\nsandbox:\n  vcpus: 2\n", &err), 0);
    char *envp[] = {
        "PATH=/usr/bin",
        "FORGEBOX_LIMITS_RATE_RPS=50",
        "FORGEBOX_SANDBOX_MAX_TTL_S=7200",
        "FORGEBOX_IMAGE_DIR=",          /* empty unsets an optional key */
        "FORGEBOX_TRACE=1",             /* other parts of ForgeBox: left alone */
        "FORGEBOX_IMAGE=/somewhere",
        "FORGEBOX_CONFIG=/etc/x.yaml",
        "FORGEBOX_SOMETHING_ELSE=1",
        NULL,
    };
    assert_int_equal(fb_config_apply_env(&cfg, envp, &err), 0);
    assert_int_equal(cfg.limits.rate_rps, 50);
    assert_int_equal(cfg.sandbox.vcpus, 2); /* the file's value stands */
    assert_int_equal(cfg.sandbox.max_ttl_s, 7200);
    assert_null(cfg.image_dir);
    assert_string_equal(fb_config_source(&cfg, "limits.rate_rps"), "FORGEBOX_LIMITS_RATE_RPS");
    assert_string_equal(fb_config_source(&cfg, "image_dir"), "FORGEBOX_IMAGE_DIR");
    fb_config_free(&cfg);
}

static void test_flag_overrides_env(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg, "listen: 0.0.0.0:1000\n", &err), 0);
    char *envp[] = {"FORGEBOX_LISTEN=0.0.0.0:2000", "FORGEBOX_LOG_LEVEL=warn", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, envp, &err), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:2000");
    assert_int_equal(fb_config_set(&cfg, "listen", "localhost:3000", "--listen", &err), 0);
    assert_string_equal(cfg.listen, "localhost:3000");
    assert_string_equal(fb_config_source(&cfg, "listen"), "--listen");
    assert_int_equal(cfg.log_level, FB_LOG_WARN);

    /* flags take values literally: no ${VAR} */
    assert_int_equal(fb_config_set(&cfg, "state_dir", "/srv/${HOME}", "--state-dir", &err), 0);
    assert_string_equal(cfg.state_dir, "/srv/${HOME}");

    /* a refused value leaves the previous one in place */
    assert_int_equal(fb_config_set(&cfg, "listen", "nope", "--listen", &err), -1);
    assert_string_equal(cfg.listen, "localhost:3000");
    fb_config_free(&cfg);
}

/* ---- ${VAR} ---------------------------------------------------------------- */

static void test_interpolation(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    setenv("FB_T_DIR", "/srv/fb", 1);
    setenv("FB_T_A", "ab", 1);
    setenv("FB_T_EMPTY", "", 1);
    setenv("FB_T_RPS", "77", 1);
    assert_int_equal(load_text(&cfg,
                               "state_dir: ${FB_T_DIR}/state\n"
                               "run_dir: '/run/${FB_T_A}${FB_T_A}${FB_T_EMPTY}-$x'\n"
                               "limits:\n"
                               "  rate_rps: ${FB_T_RPS}\n",
                               &err),
                     0);
    assert_string_equal(cfg.state_dir, "/srv/fb/state");
    assert_string_equal(cfg.run_dir, "/run/abab-$x");
    assert_int_equal(cfg.limits.rate_rps, 77);
    char *json = fb_config_dump_json(&cfg);
    assert_non_null(strstr(json, "\"state_dir\":\"/srv/fb/state\"")); /* not a secret */
    free(json);
    fb_config_free(&cfg);
}

static void test_interpolation_missing_var(void **state)
{
    (void)state;
    unsetenv("FB_T_NOPE");
    assert_load_fails("listen: 127.0.0.1:1\nstate_dir: ${FB_T_NOPE}/state\n",
                      "config: state_dir (%s:2): environment variable FB_T_NOPE is not set");
}

static void test_interpolation_escape(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    setenv("FB_T_DIR", "/srv/fb", 1);
    assert_int_equal(load_text(&cfg, "image_dir: /opt/$${FB_T_DIR}/$$x/${FB_T_DIR}\n", &err), 0);
    assert_string_equal(cfg.image_dir, "/opt/${FB_T_DIR}/$$x//srv/fb");
    fb_config_free(&cfg);

    assert_load_fails("image_dir: /opt/${FB_T_DIR\n",
                      "config: image_dir (%s:1): unterminated ${ (write $${ for a literal ${)");
    assert_load_fails("image_dir: /opt/${1X}\n",
                      "config: image_dir (%s:1): invalid variable name \"1X\" in ${...} "
                      "(letters, digits and _; write $${ for a literal ${)");
    assert_load_fails("image_dir: /opt/${}\n",
                      "config: image_dir (%s:1): invalid variable name \"\" in ${...} "
                      "(letters, digits and _; write $${ for a literal ${)");
}

/* ---- bad values -------------------------------------------------------------- */

static void test_type_errors_name_key_and_source(void **state)
{
    (void)state;
    /* from the file: key and file:line */
    assert_load_fails("# c\nlimits:\n  rate_rps: abc\n",
                      "config: limits.rate_rps (%s:3): must be an integer between 1 and 100000, "
                      "got \"abc\"");
    assert_load_fails("limits:\n  rate_rps: 0\n",
                      "config: limits.rate_rps (%s:2): must be an integer between 1 and 100000, "
                      "got \"0\"");
    assert_load_fails("limits:\n  rate_rps: -5\n",
                      "config: limits.rate_rps (%s:2): must be an integer between 1 and 100000, "
                      "got \"-5\"");
    assert_load_fails("limits:\n  rate_rps: 99999999999999999999999\n",
                      "config: limits.rate_rps (%s:2): must be an integer between 1 and 100000, "
                      "got \"99999999999999999999999\"");
    assert_load_fails("limits:\n  max_body_bytes: 1MB\n",
                      "config: limits.max_body_bytes (%s:2): must be a size between 1 KiB and "
                      "64 MiB (bytes, or a number with KiB, MiB or GiB), got \"1MB\"");
    assert_load_fails("limits:\n  max_body_bytes: 128 MiB\n",
                      "config: limits.max_body_bytes (%s:2): must be a size between 1 KiB and "
                      "64 MiB (bytes, or a number with KiB, MiB or GiB), got \"128 MiB\"");
    assert_load_fails("network:\n  internet: true\n",
                      "config: network.internet (%s:2): replaced by network.allow, the list of host names "
                      "sandboxes may be granted (empty: none); see docs/egress.md");
    assert_load_fails("network.internet: true\n",
                      "config: network.internet (%s:1): replaced by network.allow, the list of host names "
                      "sandboxes may be granted (empty: none); see docs/egress.md");
    assert_load_fails("network:\n  allow: pypi.org\n", "config: network.allow (%s:2): must be a list");
    assert_load_fails("network:\n  deny: [\"127.0.0.1\"]\n",
                      "config: network.deny (%s:2): network entry '127.0.0.1' is an IP address; name "
                      "hosts, never addresses");
    assert_load_fails("network:\n  allow_private: [\"127.0.0.1\"]\n",
                      "config: network.allow_private (%s:2): address '127.0.0.1' needs a :port");
    assert_load_fails("network:\n  hosts:\n    a.example: [\"127.0.0.1:80\"]\n",
                      "config: network.hosts.a.example (%s:3): '127.0.0.1:80' is not a numeric address "
                      "without a port");
    assert_load_fails("network:\n  allowed: []\n",
                      "config: network.allowed (%s:2): unknown key (network has allow, deny, allow_private, "
                      "hosts and dns_servers)");
    assert_load_fails("network:\n  dns_servers: [\"dns.example\"]\n",
                      "config: network.dns_servers (%s:2): address 'dns.example' is not a numeric IPv4 or IPv6 address");
    assert_load_fails("sandbox:\n  backend: firecracker\n",
                      "config: sandbox.backend (%s:2): must be vm or jail, got \"firecracker\"");
    assert_load_fails("log_level: verbose\n",
                      "config: log_level (%s:1): must be debug, info, warn or error, got \"verbose\"");
    assert_load_fails("state_dir: var/lib\n",
                      "config: state_dir (%s:1): must be an absolute path without control "
                      "characters, got \"var/lib\"");
    assert_load_fails("state_dir:\n",
                      "config: state_dir (%s:1): must be an absolute path without control "
                      "characters, got \"\"");
    assert_load_fails("listen: 127.0.0.1:70000\n",
                      "config: listen (%s:1): must be HOST:PORT or [IPV6]:PORT with a port "
                      "between 1 and 65535, got \"127.0.0.1:70000\"");
    assert_load_fails("listen: \"bad\\thost:80\"\n",
                      "config: listen (%s:1): must be HOST:PORT or [IPV6]:PORT with a port "
                      "between 1 and 65535, got \"bad\\x09host:80\"");
    assert_load_fails("sandbox:\n  vcpus: [1, 2]\n",
                      "config: sandbox.vcpus (%s:2): must be a single value, not a list");
    assert_load_fails("sandbox: 4\n", "config: sandbox (%s:1): must be a mapping of sandbox.* keys");
    assert_load_fails("- listen\n", "config: %s:1: the top level must be a mapping of keys");

    /* from the environment: key and variable */
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(fb_config_defaults(&cfg), 0);
    char *envp[] = {"FORGEBOX_SANDBOX_MEMORY_MIB=lots", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, envp, &err), -1);
    assert_string_equal(err.msg,
                        "config: sandbox.memory_mib (FORGEBOX_SANDBOX_MEMORY_MIB): must be an "
                        "integer between 64 and 65536, got \"lots\"");
    assert_int_equal(cfg.sandbox.memory_mib, 512);

    /* from a flag: key and flag */
    assert_int_equal(fb_config_set(&cfg, "sandbox.ttl_s", "10m", "--ttl", &err), -1);
    assert_string_equal(err.msg, "config: sandbox.ttl_s (--ttl): must be an integer between 1 "
                                 "and 604800, got \"10m\"");
    fb_config_free(&cfg);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    assert_load_fails("limits:\n  rate_rsp: 5\n",
                      "config: \"limits.rate_rsp\" (%s:2): unknown key; did you mean limits.rate_rps?");
    assert_load_fails("rate_rps: 5\n",
                      "config: \"rate_rps\" (%s:1): unknown key; did you mean limits.rate_rps?");
    assert_load_fails("limit:\n  rate_rps: 5\n",
                      "config: \"limit\" (%s:1): unknown key; did you mean limits?");
    assert_load_fails("listen: 127.0.0.1:1\nwhatever: 1\n",
                      "config: \"whatever\" (%s:2): unknown key (docs/configuration.md lists them all)");
    assert_load_fails("limits:\n  rate_rps: 5\n  rate_rps: 6\n",
                      "config: limits.rate_rps (%s:3): set twice in this file (first at line 2)");
    assert_load_fails("limits:\n  rate_rps: 5\nlimits.rate_rps: 6\n",
                      "config: limits.rate_rps (%s:3): set twice in this file (first at line 2)");

    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(fb_config_defaults(&cfg), 0);
    char *typo[] = {"FORGEBOX_LIMITS_RATE_RSP=5", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, typo, &err), -1);
    assert_string_equal(err.msg, "config: FORGEBOX_LIMITS_RATE_RSP (environment): no such "
                                 "setting; did you mean FORGEBOX_LIMITS_RATE_RPS "
                                 "(limits.rate_rps)?");
    char *typo2[] = {"FORGEBOX_LISTN=0.0.0.0:1", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, typo2, &err), -1);
    assert_string_equal(err.msg, "config: FORGEBOX_LISTN (environment): no such setting; did "
                                 "you mean FORGEBOX_LISTEN (listen)?");
    assert_int_equal(fb_config_set(&cfg, "sandbox.vcpu", "2", "--set", &err), -1);
    assert_string_equal(err.msg,
                        "config: \"sandbox.vcpu\" (--set): unknown key; did you mean sandbox.vcpus?");
    fb_config_free(&cfg);
}

static void test_yaml_syntax_error(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg, "listen: 127.0.0.1:1\nlimits:\n  rate_rps: 5\n bad: [\n",
                               &err),
                     -1);
    char want[600];
    snprintf(want, sizeof want, "config: %s:4: invalid YAML: ", path_buf);
    assert_memory_equal(err.msg, want, strlen(want));
    fb_config_free(&cfg);

    assert_int_equal(load_text(&cfg, "a: b: c\n", &err), -1);
    snprintf(want, sizeof want,
             "config: %s:1: invalid YAML: mapping values are not allowed in this context "
             "(column 5)",
             path_buf);
    assert_string_equal(err.msg, want);
    fb_config_free(&cfg);

    assert_load_fails("listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n",
                      "config: %s:3: only one YAML document is allowed");
}

/* ---- checks across keys ---------------------------------------------------- */

static void test_tls_half_configured(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    char want[600];

    assert_int_equal(load_text(&cfg, "tls:\n  cert: /etc/ssl/fb.pem\n", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    snprintf(want, sizeof want,
             "config: tls.cert (%s:2): tls.key must be set too (TLS needs both the "
             "certificate and its private key, or neither)",
             path_buf);
    assert_string_equal(err.msg, want);
    fb_config_free(&cfg);

    assert_int_equal(fb_config_defaults(&cfg), 0);
    assert_int_equal(fb_config_set(&cfg, "tls.key", "/k.pem", "--tls-key", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    assert_string_equal(err.msg, "config: tls.key (--tls-key): tls.cert must be set too (TLS "
                                 "needs both the certificate and its private key, or neither)");

    /* both named, the certificate missing */
    char cert[300], key[300];
    snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
    snprintf(key, sizeof key, "%s/key.pem", tmpdir);
    unlink(cert);
    write_file("key.pem", "key");
    assert_int_equal(fb_config_set(&cfg, "tls.cert", cert, "--tls-cert", &err), 0);
    assert_int_equal(fb_config_set(&cfg, "tls.key", key, "--tls-key", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    snprintf(want, sizeof want,
             "config: tls.cert (--tls-cert): cannot read \"%s\": No such file or directory", cert);
    assert_string_equal(err.msg, want);

    /* both there: fine */
    write_file("cert.pem", "cert");
    assert_int_equal(fb_config_validate(&cfg, &err), 0);

    /* the key is a directory */
    assert_int_equal(fb_config_set(&cfg, "tls.key", tmpdir, "--tls-key", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    snprintf(want, sizeof want, "config: tls.key (--tls-key): \"%s\" is not a regular file",
             tmpdir);
    assert_string_equal(err.msg, want);

    /* unsetting both turns TLS off */
    assert_int_equal(fb_config_set(&cfg, "tls.key", "", "--tls-key", &err), 0);
    assert_int_equal(fb_config_set(&cfg, "tls.cert", "", "--tls-cert", &err), 0);
    assert_null(cfg.tls.cert);
    assert_int_equal(fb_config_validate(&cfg, &err), 0);
    fb_config_free(&cfg);
}

static void test_cross_key_limits(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    char want[600];

    /* finding 15: vCPUs have a per-sandbox ceiling and a per-team quota */
    assert_int_equal(fb_config_defaults(&cfg), 0);
    assert_int_equal(cfg.sandbox.max_vcpus, 8);
    assert_int_equal(cfg.quotas.max_vcpus_per_team, 32);
    char *vcpu_env[] = {"FORGEBOX_SANDBOX_VCPUS=12", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, vcpu_env, &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    assert_string_equal(err.msg, "config: sandbox.vcpus (FORGEBOX_SANDBOX_VCPUS): must not "
                                 "exceed sandbox.max_vcpus (8, default), got 12");
    assert_int_equal(fb_config_set(&cfg, "sandbox.max_vcpus", "16", "--set", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), 0);
    assert_int_equal(fb_config_set(&cfg, "quotas.max_vcpus_per_team", "4", "--set", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    assert_string_equal(err.msg, "config: sandbox.vcpus (FORGEBOX_SANDBOX_VCPUS): must not exceed "
                                 "quotas.max_vcpus_per_team (4, --set) (otherwise no team can create a "
                                 "default sandbox), got 12");
    /* The TCG translation cache: 8-512 MiB. */
    assert_int_equal(fb_config_set(&cfg, "sandbox.vm_tcg_cache_mib", "14", "--set", &err), 0);
    assert_int_equal(cfg.sandbox.vm_tcg_cache_mib, 14);
    assert_int_equal(fb_config_set(&cfg, "sandbox.vm_tcg_cache_mib", "7", "--set", &err), -1);
    assert_int_equal(fb_config_set(&cfg, "sandbox.vm_tcg_cache_mib", "513", "--set", &err), -1);
    assert_int_equal(cfg.sandbox.vm_tcg_cache_mib, 14);
    assert_int_equal(fb_config_set(&cfg, "sandbox.max_vcpus", "65", "--set", &err), -1);
    fb_config_free(&cfg);

    assert_int_equal(fb_config_defaults(&cfg), 0);
    char *envp[] = {"FORGEBOX_SANDBOX_TTL_S=7200", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, envp, &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    assert_string_equal(err.msg, "config: sandbox.ttl_s (FORGEBOX_SANDBOX_TTL_S): must not "
                                 "exceed sandbox.max_ttl_s (3600, default), got 7200");
    fb_config_free(&cfg);

    /* lowering the ceiling below a default blames the ceiling */
    assert_int_equal(load_text(&cfg, "sandbox:\n  max_memory_mib: 256\n", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    snprintf(want, sizeof want,
             "config: sandbox.max_memory_mib (%s:2): must be at least sandbox.memory_mib "
             "(512, default), got 256",
             path_buf);
    assert_string_equal(err.msg, want);
    fb_config_free(&cfg);

    assert_int_equal(load_text(&cfg, "sandbox:\n  memory_mib: 64\n", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    snprintf(want, sizeof want,
             "config: sandbox.memory_mib (%s:2): must be at least 128 with the vm backend (a "
             "guest kernel does not boot in less), got 64",
             path_buf);
    assert_string_equal(err.msg, want);
    /* the jail backend is fine with 64 MiB */
    assert_int_equal(fb_config_set(&cfg, "sandbox.backend", "jail", "--backend", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), 0);
    fb_config_free(&cfg);

    assert_int_equal(load_text(&cfg, "quotas:\n  max_memory_mib_per_team: 256\n", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    snprintf(want, sizeof want,
             "config: quotas.max_memory_mib_per_team (%s:2): must be at least "
             "sandbox.memory_mib (512, default) (otherwise no team can create a default "
             "sandbox), got 256",
             path_buf);
    assert_string_equal(err.msg, want);
    fb_config_free(&cfg);
}

/* ---- secrets ------------------------------------------------------------------ */

/* store.url carries the database password: the dump shows the URL with
 * the password replaced, and a bad value is never echoed. */
static void test_store_url_password_never_shown(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(fb_config_defaults(&cfg), 0);
    assert_int_equal(fb_config_set(&cfg, "store.url", "postgresql://fbx:pw-s3cr3t@10.0.0.5:5432/forgebox", NULL,
                                   &err),
                     0);
    assert_string_equal(cfg.store.url, "postgresql://fbx:pw-s3cr3t@10.0.0.5:5432/forgebox");
    char *json = fb_config_dump_json(&cfg);
    assert_non_null(json);
    assert_null(strstr(json, "pw-s3cr3t"));
    assert_non_null(strstr(json, "\"store\":{\"url\":\"postgresql://fbx:[redacted]@10.0.0.5:5432/forgebox\"}"));
    free(json);
    assert_int_equal(fb_config_set(&cfg, "store.url", "mysql://fbx:pw-other@h/db", NULL, &err), -1);
    assert_null(strstr(err.msg, "pw-other"));
    assert_string_equal(err.msg, "config: store.url (command line): must be sqlite:///STATE_DIR/forgebox.db or "
                                 "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, got a value built from a secret "
                                 "variable (not shown)");
    assert_string_equal(cfg.store.url, "postgresql://fbx:pw-s3cr3t@10.0.0.5:5432/forgebox"); /* unchanged */
    assert_int_equal(fb_config_set(&cfg, "store.url", "", NULL, &err), 0); /* unset: SQLite again */
    assert_null(cfg.store.url);
    fb_config_free(&cfg);
}

static void test_redaction(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    setenv("FB_T_API_TOKEN", "s3cr3t-token-value", 1);
    setenv("FB_T_db_password", "hunter2", 1);
    setenv("FB_T_DIR", "/srv/fb", 1);
    assert_int_equal(load_text(&cfg,
                               "image_dir: /data/${FB_T_API_TOKEN}\n"
                               "state_dir: ${FB_T_DIR}/state\n"
                               "tls:\n"
                               "  key: ${FB_T_DIR}/${FB_T_db_password}.pem\n",
                               &err),
                     0);
    /* the values themselves are intact for the program to use */
    assert_string_equal(cfg.image_dir, "/data/s3cr3t-token-value");
    assert_string_equal(cfg.tls.key, "/srv/fb/hunter2.pem");
    char *json = fb_config_dump_json(&cfg);
    assert_non_null(json);
    assert_null(strstr(json, "s3cr3t"));
    assert_null(strstr(json, "hunter2"));
    assert_non_null(strstr(json, "\"image_dir\":\"[redacted]\""));
    assert_non_null(strstr(json, "\"key\":\"[redacted]\""));
    assert_non_null(strstr(json, "\"state_dir\":\"/srv/fb/state\""));
    free(json);

    /* nor in an error about the value */
    assert_int_equal(fb_config_set(&cfg, "tls.cert", "/srv/cert.pem", "--tls-cert", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    assert_null(strstr(err.msg, "hunter2"));
    char want[600];
    snprintf(want, sizeof want, "config: tls.cert (--tls-cert): cannot read \"/srv/cert.pem\": "
                                "No such file or directory");
    assert_string_equal(err.msg, want);
    char yaml[300];
    snprintf(yaml, sizeof yaml, "%s", path_buf);
    write_file("cert.pem", "c");
    snprintf(want, sizeof want, "%s/cert.pem", tmpdir);
    assert_int_equal(fb_config_set(&cfg, "tls.cert", want, "--tls-cert", &err), 0);
    assert_int_equal(fb_config_validate(&cfg, &err), -1);
    assert_null(strstr(err.msg, "hunter2"));
    snprintf(want, sizeof want,
             "config: tls.key (%s:4): cannot read a value built from a secret variable (not "
             "shown): No such file or directory",
             yaml);
    assert_string_equal(err.msg, want);

    /* a value replaced from a plain source is no longer redacted */
    assert_int_equal(fb_config_set(&cfg, "image_dir", "/opt/image", "--image", &err), 0);
    json = fb_config_dump_json(&cfg);
    assert_non_null(strstr(json, "\"image_dir\":\"/opt/image\""));
    free(json);
    fb_config_free(&cfg);

    /* a bad value from a secret variable is not echoed */
    setenv("FB_T_SECRET_VCPUS", "hunter2", 1);
    assert_load_fails("sandbox:\n  vcpus: ${FB_T_SECRET_VCPUS}\n",
                      "config: sandbox.vcpus (%s:2): must be an integer between 1 and 64, got a "
                      "value built from a secret variable (not shown)");
}

/* ---- tasks.* ----------------------------------------------------------------- */

/* pool.jail.size: a section inside a section, in the file and as
 * FORGEBOX_POOL_VM_SIZE; out of range and unknown keys are refused. */
static void test_pool_keys(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg, "pool:\n  jail:\n    size: 3\n", &err), 0);
    assert_int_equal(cfg.pool.jail_size, 3);
    assert_int_equal(cfg.pool.vm_size, 0);
    char *env[] = {"FORGEBOX_POOL_VM_SIZE=2", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, env, &err), 0);
    assert_int_equal(cfg.pool.vm_size, 2);
    fb_config_free(&cfg);
    assert_load_fails("pool:\n  jail:\n    size: 2000\n",
                      "config: pool.jail.size (%s:3): must be an integer between 0 and 1024, got \"2000\"");
    assert_load_fails("pool:\n  jail:\n    sise: 2\n",
                      "config: \"pool.jail.sise\" (%s:3): unknown key; did you mean pool.jail.size?");
}

static void test_tasks_keys(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err = {{0}};
    assert_int_equal(load_text(&cfg,
                               "tasks:\n  require_approval: [bash, file_write]\n  self_approval: true\n"
                               "  max_turns: 7\n  ttl_s: 0\n",
                               &err), 0);
    assert_int_equal(cfg.tasks.require_approval,
                     FB_TOOLSET_OF(FB_TOOL_BASH) | FB_TOOLSET_OF(FB_TOOL_FILE_WRITE));
    assert_true(cfg.tasks.self_approval);
    assert_int_equal(cfg.tasks.max_turns, 7);
    assert_int_equal(cfg.tasks.ttl_s, 0);
    char *env[] = {"FORGEBOX_TASKS_REQUIRE_APPROVAL=git,web_fetch", "FORGEBOX_TASKS_MAX_RUNNING=2", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, env, &err), 0);
    assert_int_equal(cfg.tasks.require_approval, FB_TOOLSET_OF(FB_TOOL_GIT) | FB_TOOLSET_OF(FB_TOOL_WEB_FETCH));
    assert_int_equal(cfg.tasks.max_running, 2);
    char *bad[] = {"FORGEBOX_TASKS_REQUIRE_APPROVAL=bash,rm", NULL};
    assert_int_equal(fb_config_apply_env(&cfg, bad, &err), -1);
    assert_string_equal(err.msg, "config: tasks.require_approval (FORGEBOX_TASKS_REQUIRE_APPROVAL): must name tools "
                                 "(bash, file_read, file_write, file_edit, glob, grep, git, web_fetch); 'rm' is "
                                 "none, got \"bash,rm\"");
    fb_config_free(&cfg);
    assert_load_fails("tasks:\n  require_approval: [bash, [x]]\n",
                      "config: tasks.require_approval (%s:2): must be a list of tool names");
    assert_load_fails("tasks:\n  max_running: 0\n",
                      "config: tasks.max_running (%s:2): must be an integer between 1 and 10000, got \"0\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_e2b_listen),
        cmocka_unit_test(test_file_overrides_defaults),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_config_path),
        cmocka_unit_test(test_env_overrides_file),
        cmocka_unit_test(test_flag_overrides_env),
        cmocka_unit_test(test_interpolation),
        cmocka_unit_test(test_interpolation_missing_var),
        cmocka_unit_test(test_interpolation_escape),
        cmocka_unit_test(test_type_errors_name_key_and_source),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_yaml_syntax_error),
        cmocka_unit_test(test_tls_half_configured),
        cmocka_unit_test(test_cross_key_limits),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_store_url_password_never_shown),
        cmocka_unit_test(test_tasks_keys),
        cmocka_unit_test(test_pool_keys),
        cmocka_unit_test(test_nodes_keys),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
