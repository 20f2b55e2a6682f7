/*
 * tasks.c - the tasks: section of forgebox.yaml (docs/configuration.md):
 * budgets a task gets when it asks for none, the organisation's maxima,
 * the tools whose calls always wait for a person, and how long approvals
 * and finished tasks' sandboxes are kept.
 *
 *   tasks:
 *     default_max_turns: 20        max_turns: 100
 *     require_approval: [bash, file_write]
 *     self_approval: false
 *     approval_timeout_s: 600
 *
 * Every key is an ordinary scalar key of the table in config.c (so it has
 * a FORGEBOX_TASKS_* variable and a flag form); require_approval is a list
 * of tool names, written as a YAML list or, in the environment, as
 * "bash,file_write".  This file holds the defaults and that list's parsing.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "config/internal.h"

void cfg_tasks_defaults(fb_config *cfg)
{
    cfg->tasks.default_max_turns = 20;
    cfg->tasks.default_max_tokens = 200000;
    cfg->tasks.default_max_tool_calls = 50;
    cfg->tasks.default_timeout_s = 900;
    cfg->tasks.max_turns = 100;
    cfg->tasks.max_tokens = 2000000;
    cfg->tasks.max_tool_calls = 500;
    cfg->tasks.max_timeout_s = 3600;
    cfg->tasks.require_approval = 0;
    cfg->tasks.self_approval = false;
    cfg->tasks.approval_timeout_s = 600;
    cfg->tasks.ttl_s = 600;
    cfg->tasks.max_running = 8;
}

int cfg_parse_tools(const char *text, fb_toolset *out, char *why, size_t cap)
{
    fb_toolset set = 0;
    const char *p = text;
    while (*p) {
        size_t skip = strspn(p, ", \t");
        p += skip;
        size_t n = strcspn(p, ", \t");
        if (n == 0)
            break;
        char name[32];
        fb_tool t;
        if (n >= sizeof name || (snprintf(name, sizeof name, "%.*s", (int)n, p), fb_tool_from_name(name, &t)) < 0) {
            snprintf(why, cap, "must name tools (bash, file_read, file_write, file_edit, glob, grep, git, "
                               "web_fetch); '%.*s' is none", n > 32 ? 32 : (int)n, p);
            return -1;
        }
        set |= FB_TOOLSET_OF(t);
        p += n;
    }
    *out = set;
    return 0;
}

int cfg_yaml_join_list(yaml_document_t *doc, const yaml_node_t *seq, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
        yaml_node_t *n = yaml_document_get_node(doc, *it);
        const char *text = n && n->type == YAML_SCALAR_NODE ? cfg_yaml_text(n) : NULL;
        if (!text || strpbrk(text, ", \t"))
            return -1;
        int k = snprintf(out + o, cap - o, "%s%s", o ? "," : "", text);
        if (k < 0 || (size_t)k >= cap - o)
            return -1;
        o += (size_t)k;
    }
    return 0;
}
