/*
 * test_llm_config.c - unit tests for the providers: mapping of
 * forgebox.yaml (src/config/providers.c): what is accepted, the exact
 * message for each mistake (naming providers.NAME.FIELD and file:line),
 * ${VAR} interpolation, and that an api_key never shows in a message or
 * the start-up dump.
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

#include "config/config.h"

static char tmpdir[64];
static char path_buf[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fb-test-llmcfg.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    return fb_rm_rf(tmpdir);
}

static int load_text(fb_config *cfg, const char *text, fb_err *err)
{
    assert_int_equal(fb_config_defaults(cfg), 0);
    snprintf(path_buf, sizeof path_buf, "%s/forgebox.yaml", tmpdir);
    FILE *f = fopen(path_buf, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    memset(err, 0, sizeof *err);
    return fb_config_load_file(cfg, path_buf, true, err);
}

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

static void test_two_providers(void **state)
{
    (void)state;
    setenv("FB_T_OLLAMA_KEY", "ollama-secret-1", 1);
    setenv("FB_T_ANTHROPIC_API_KEY", "sk-ant-secret-2", 1);
    fb_config cfg;
    fb_err err;
    int rc = load_text(&cfg,
                       "listen: 127.0.0.1:9000\n"
                       "providers:\n"
                       "  local:\n"
                       "    kind: openai\n"
                       "    base_url: http://127.0.0.1:11434/v1\n"
                       "    api_key: ${FB_T_OLLAMA_KEY}\n"
                       "  claude-2_x:\n"
                       "    kind: anthropic\n"
                       "    base_url: https://api.anthropic.com\n"
                       "    api_key: ${FB_T_ANTHROPIC_API_KEY}\n"
                       "    timeout_s: 30\n"
                       "    max_retries: 0\n",
                       &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(cfg.nproviders, 2);
    const fb_config_provider *a = fb_config_provider_find(&cfg, "local");
    const fb_config_provider *b = fb_config_provider_find(&cfg, "claude-2_x");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(fb_config_provider_find(&cfg, "other"));
    assert_int_equal(a->kind, FB_LLM_OPENAI);
    assert_string_equal(a->base_url, "http://127.0.0.1:11434/v1");
    assert_string_equal(a->api_key, "ollama-secret-1");
    assert_int_equal(a->timeout_s, 0);
    assert_false(a->max_retries_set);
    assert_int_equal(b->kind, FB_LLM_ANTHROPIC);
    assert_int_equal(b->timeout_s, 30);
    assert_true(b->max_retries_set);
    assert_int_equal(b->max_retries, 0);
    char want_src[300];
    snprintf(want_src, sizeof want_src, "%s:7", path_buf);
    assert_string_equal(b->src, want_src);

    fb_llm_provider_opts o = fb_config_provider_opts(b);
    assert_int_equal(o.kind, FB_LLM_ANTHROPIC);
    assert_string_equal(o.api_key, "sk-ant-secret-2");
    assert_true(o.max_retries_set);
    assert_int_equal(o.timeout_s, 30);

    char *dump = fb_config_dump_json(&cfg);
    assert_non_null(dump);
    assert_null(strstr(dump, "secret"));
    assert_non_null(strstr(dump, "\"providers\":{\"local\":{\"kind\":\"openai\",\"base_url\":"
                                 "\"http://127.0.0.1:11434/v1\",\"api_key\":\"[redacted]\","
                                 "\"timeout_s\":120,\"max_retries\":3},\"claude-2_x\":"));
    free(dump);
    fb_config_free(&cfg);
    assert_int_equal(cfg.nproviders, 0);
    assert_null(cfg.providers);
}

static void test_no_key_and_empty(void **state)
{
    (void)state;
    fb_config cfg;
    fb_err err;
    assert_int_equal(load_text(&cfg, "providers:\n  l:\n    kind: openai\n    base_url: http://h:1/v1\n", &err), 0);
    assert_int_equal(cfg.nproviders, 1);
    assert_null(cfg.providers[0].api_key);
    fb_config_free(&cfg);
    assert_int_equal(load_text(&cfg, "providers:\n", &err), 0);
    assert_int_equal(cfg.nproviders, 0);
    fb_config_free(&cfg);
}

static void test_mistakes_name_the_key(void **state)
{
    (void)state;
    assert_load_fails("providers:\n  p:\n    kind: gemini\n    base_url: http://h\n",
                      "config: providers.p.kind (%s:3): must be openai or anthropic");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: file:///etc/passwd\n",
                      "config: providers.p.base_url (%s:4): must be an http:// or https:// URL with a host");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://\n",
                      "config: providers.p.base_url (%s:4): must be an http:// or https:// URL with a host");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: \"http://h/a b\"\n",
                      "config: providers.p.base_url (%s:4): must be an http:// or https:// URL with a host");
    assert_load_fails("providers:\n  Bad.Name:\n    kind: openai\n    base_url: http://h\n",
                      "config: providers.Bad.Name (%s:2): a provider name is 1 to 64 of a-z, 0-9, _ and -");
    assert_load_fails("providers:\n  p:\n    base_url: http://h\n",
                      "config: providers.p (%s:2): needs kind (openai or anthropic)");
    assert_load_fails("providers:\n  p:\n    kind: openai\n",
                      "config: providers.p (%s:2): needs base_url");
    assert_load_fails("providers:\n  p: openai\n",
                      "config: providers.p (%s:2): must be a mapping with kind and base_url");
    assert_load_fails("providers:\n  - p\n",
                      "config: providers (%s:2): must be a mapping of provider names");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n    model: x\n",
                      "config: providers.p.model (%s:5): unknown key (known: kind, base_url, api_key, "
                      "timeout_s, max_retries)");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n    timeout_s: 0\n",
                      "config: providers.p.timeout_s (%s:5): must be a whole number from 1 to 3600");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n    max_retries: 11\n",
                      "config: providers.p.max_retries (%s:5): must be a whole number from 0 to 10");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n    max_retries: -1\n",
                      "config: providers.p.max_retries (%s:5): must be a whole number from 0 to 10");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    kind: anthropic\n    base_url: http://h\n",
                      "config: providers.p.kind (%s:4): set twice in this file (first at line 3)");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n"
                      "  p:\n    kind: openai\n    base_url: http://h\n",
                      "config: providers.p (%s:5): set twice in this file (first at line 2)");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n    api_key: [a]\n",
                      "config: providers.p.api_key (%s:5): must be a single value");
    unsetenv("FB_T_UNSET_VAR");
    assert_load_fails("providers:\n  p:\n    kind: openai\n    base_url: http://h\n    api_key: ${FB_T_UNSET_VAR}\n",
                      "config: providers.p.api_key (%s:5): environment variable FB_T_UNSET_VAR is not set");
}

static void test_key_never_echoed(void **state)
{
    (void)state;
    /* A key with a line break is refused without showing it. */
    setenv("FB_T_BAD", "sk-leak-me\r\nX-Evil: 1", 1);
    fb_config cfg;
    fb_err err;
    assert_int_equal(load_text(&cfg, "providers:\n  p:\n    kind: openai\n    base_url: http://h\n"
                                     "    api_key: ${FB_T_BAD}\n", &err), -1);
    assert_null(strstr(err.msg, "leak"));
    assert_non_null(strstr(err.msg, "providers.p.api_key"));
    fb_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_providers),
        cmocka_unit_test(test_no_key_and_empty),
        cmocka_unit_test(test_mistakes_name_the_key),
        cmocka_unit_test(test_key_never_echoed),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
