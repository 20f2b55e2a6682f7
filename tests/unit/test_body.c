/*
 * test_body.c - unit tests for request bodies (src/gateway/body.h):
 * Content-Type matching and JSON objects checked against a field list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "gateway/body.h"

static const gw_field fields[] = {
    {"name", GW_T_STRING, true, NULL},
    {"n", GW_T_INT, false, NULL},
    {"flag", GW_T_BOOL, false, NULL},
    {"list", GW_T_ARRAY, false, "\"list\" must be a list of things"},
    {"obj", GW_T_OBJECT, false, NULL},
    {"maybe", GW_T_STRING_OR_NULL, false, NULL},
    {NULL, 0, false, NULL},
};

static json_t *parse(const char *text, bool required, char *msg)
{
    return gw_body_json(text, strlen(text), fields, required, msg, 256);
}

static void expect_error(const char *text, const char *message)
{
    char msg[256] = "";
    json_t *j = parse(text, true, msg);
    assert_null(j);
    assert_string_equal(msg, message);
}

static void test_content_types(void **state)
{
    (void)state;
    assert_true(gw_content_type_is("application/json", GW_MEDIA_JSON));
    assert_true(gw_content_type_is("application/json; charset=utf-8", GW_MEDIA_JSON));
    assert_true(gw_content_type_is("  Application/JSON ;charset=UTF-8", GW_MEDIA_JSON));
    assert_true(gw_content_type_is("application/octet-stream", GW_MEDIA_OCTETS));
    assert_false(gw_content_type_is(NULL, GW_MEDIA_JSON));
    assert_false(gw_content_type_is("", GW_MEDIA_JSON));
    assert_false(gw_content_type_is("text/plain", GW_MEDIA_JSON));
    assert_false(gw_content_type_is("application/jsonx", GW_MEDIA_JSON));
    assert_false(gw_content_type_is("application/json-seq", GW_MEDIA_JSON));
    assert_false(gw_content_type_is("multipart/form-data; boundary=x", GW_MEDIA_JSON));
    assert_false(gw_content_type_is("application/x-www-form-urlencoded", GW_MEDIA_JSON));
    assert_false(gw_content_type_is("application/json", GW_MEDIA_OCTETS));
}

static void test_good_bodies(void **state)
{
    (void)state;
    char msg[256];
    json_t *j = parse("{\"name\": \"a\", \"n\": -3, \"flag\": true, \"list\": [1], \"obj\": {}, \"maybe\": null}",
                      true, msg);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "a");
    assert_int_equal(json_integer_value(json_object_get(j, "n")), -3);
    json_decref(j);
    static const gw_field optional[] = {{"n", GW_T_INT, false, NULL}, {NULL, 0, false, NULL}};
    j = gw_body_json("", 0, optional, false, msg, sizeof msg);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);
    /* Left out, an optional body is {}: its required fields are still required. */
    assert_null(gw_body_json("", 0, fields, false, msg, sizeof msg));
    assert_string_equal(msg, "\"name\" is required");
}

static void test_bad_bodies(void **state)
{
    (void)state;
    expect_error("", "a JSON object body is required");
    expect_error("[]", "the body must be a JSON object");
    expect_error("[1, 2]", "the body must be a JSON object");
    expect_error("{\"name\": \"a\", \"colour\": 1}", "unknown field \"colour\"");
    expect_error("{\"n\": 1}", "\"name\" is required");
    expect_error("{\"name\": 1}", "\"name\" must be a string");
    expect_error("{\"name\": \"a\", \"n\": 1.5}", "\"n\" must be an integer");
    expect_error("{\"name\": \"a\", \"n\": \"1\"}", "\"n\" must be an integer");
    expect_error("{\"name\": \"a\", \"flag\": 0}", "\"flag\" must be a boolean");
    expect_error("{\"name\": \"a\", \"list\": {}}", "\"list\" must be a list of things");
    expect_error("{\"name\": \"a\", \"obj\": []}", "\"obj\" must be an object");
    expect_error("{\"name\": \"a\", \"maybe\": 3}", "\"maybe\" must be a string or null");
    char msg[256];
    assert_null(gw_body_json("{\"name\": \"a\"}\0", 14, fields, true, msg, sizeof msg));
    assert_string_equal(msg, "the body contains a NUL byte");
    assert_null(parse("{\"name\": \"a\", \"name\": \"b\"}", true, msg));
    assert_true(strncmp(msg, "malformed JSON", 14) == 0);
    assert_null(parse("{\"name\": \"\xff\"}", true, msg));
    assert_true(strncmp(msg, "malformed JSON", 14) == 0);
    assert_null(parse("{", true, msg));
    assert_true(strncmp(msg, "malformed JSON", 14) == 0);
}

static void test_long_unknown_names_are_cut(void **state)
{
    (void)state;
    char text[400], msg[256];
    memset(text, 0, sizeof text);
    strcpy(text, "{\"");
    memset(text + 2, 'k', 300);
    strcat(text, "\": 1}");
    assert_null(parse(text, true, msg));
    assert_int_equal(strlen(msg), strlen("unknown field \"\"") + 64);
}

static void test_small_message_buffer(void **state)
{
    (void)state;
    char msg[8];
    assert_null(gw_body_json("[]", 2, fields, true, msg, sizeof msg));
    assert_string_equal(msg, "the bod");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_types), cmocka_unit_test(test_good_bodies),
        cmocka_unit_test(test_bad_bodies), cmocka_unit_test(test_long_unknown_names_are_cut),
        cmocka_unit_test(test_small_message_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
