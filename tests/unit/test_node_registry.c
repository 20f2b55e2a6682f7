/*
 * test_node_registry.c - unit tests for a node's registry of sandboxes
 * (src/node/service.c, internal.h): ids, capacity, duplicates, removal
 * while a request still holds an entry, and taking everything out when
 * the node is declared down.
 *
 * Booting, execs and the store are covered end to end by
 * tests/integration/test_node.py; here the bookkeeping alone, on entries
 * that never got a sandbox (a create refused or failed after its place
 * was taken), which is also the path every refusal takes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "node/internal.h"

static fb_node *node_new(uint64_t capacity)
{
    fb_node *n = calloc(1, sizeof *n);
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->wake, NULL);
    n->capacity = capacity;
    return n;
}

static void node_free(fb_node *n)
{
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->wake);
    free(n);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(node_valid_sb_id("sb_0123abcd"));
    assert_true(node_valid_sb_id("x"));
    assert_true(node_valid_sb_id("sb-A_9"));
    char longest[NODE_SB_ID_MAX];
    memset(longest, 'a', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    assert_true(node_valid_sb_id(longest));
    char too_long[NODE_SB_ID_MAX + 1];
    memset(too_long, 'a', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    assert_false(node_valid_sb_id(too_long));
    assert_false(node_valid_sb_id(NULL));
    assert_false(node_valid_sb_id(""));
    assert_false(node_valid_sb_id("_sb"));
    assert_false(node_valid_sb_id("1sb"));
    assert_false(node_valid_sb_id(".."));
    assert_false(node_valid_sb_id("sb/../x"));
    assert_false(node_valid_sb_id("sb x"));
    assert_false(node_valid_sb_id("sb\xc3\xa9"));
}

static void test_capacity_and_duplicates(void **state)
{
    (void)state;
    fb_node *n = node_new(2);
    node_sb *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(node_sb_reserve(n, "sb_a", "tm_1", &a), FB_OK);
    assert_int_equal(node_sb_reserve(n, "sb_a", "tm_1", &c), FB_E_EXISTS);
    assert_int_equal(node_sb_reserve(n, "sb_b", "tm_1", &b), FB_OK);
    assert_int_equal(node_sb_count(n), 2);
    assert_int_equal(node_sb_reserve(n, "sb_c", "tm_1", &c), FB_E_BUSY);
    /* A place still booting is not served. */
    assert_null(node_sb_get(n, "sb_a"));
    /* Giving one back makes room. */
    assert_true(node_sb_remove(n, a));
    assert_false(node_sb_remove(n, a));
    node_sb_put(n, a);
    assert_int_equal(node_sb_count(n), 1);
    assert_int_equal(node_sb_reserve(n, "sb_c", "tm_1", &c), FB_OK);
    assert_int_equal(node_sb_count(n), 2);
    /* A node that stops takes no new sandbox. */
    n->stopping = true;
    assert_true(node_sb_remove(n, c));
    node_sb_put(n, c);
    assert_int_equal(node_sb_reserve(n, "sb_d", "tm_1", &c), FB_E_STATE);
    n->stopping = false;
    assert_true(node_sb_remove(n, b));
    node_sb_put(n, b);
    assert_int_equal(node_sb_count(n), 0);
    node_free(n);
}

static void test_remove_all_leaves_holders_their_entry(void **state)
{
    (void)state;
    fb_node *n = node_new(8);
    node_sb *held = NULL, *other = NULL;
    assert_int_equal(node_sb_reserve(n, "sb_held", "tm_1", &held), FB_OK);
    assert_int_equal(node_sb_reserve(n, "sb_other", "tm_1", &other), FB_OK);
    node_sb_put(n, other); /* only the registry holds this one */
    char (*ids)[NODE_SB_ID_MAX] = NULL;
    size_t k = node_sb_remove_all(n, &ids);
    assert_int_equal(k, 2);
    assert_true((strcmp(ids[0], "sb_held") == 0 && strcmp(ids[1], "sb_other") == 0) ||
                (strcmp(ids[1], "sb_held") == 0 && strcmp(ids[0], "sb_other") == 0));
    free(ids);
    assert_int_equal(node_sb_count(n), 0);
    /* The holder's entry is still whole (freed by its last put, under
     * ASan this would be a use after free otherwise), and out. */
    assert_string_equal(held->id, "sb_held");
    assert_true(held->gone);
    assert_false(node_sb_remove(n, held));
    node_sb_put(n, held);
    /* The id is free again: a node declared down registers again empty. */
    assert_int_equal(node_sb_reserve(n, "sb_held", "tm_1", &held), FB_OK);
    assert_true(node_sb_remove(n, held));
    node_sb_put(n, held);
    k = node_sb_remove_all(n, &ids);
    assert_int_equal(k, 0);
    assert_null(ids);
    node_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_capacity_and_duplicates),
        cmocka_unit_test(test_remove_all_leaves_holders_their_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
