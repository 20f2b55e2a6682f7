/*
 * tasks_engine_stub.c - TEMPORARY: weak stand-ins for the engine's
 * functions (engine.h) so that the task service links while the engine
 * (src/engine) is written on another branch.  The engine's real definitions override
 * these; delete this file when the engine is merged.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static const char *const state_names[] = {"queued", "running", "waiting_approval", "succeeded",
                                          "failed", "cancelled", "budget_exceeded"};

__attribute__((weak)) const char *fb_task_state_name(fb_task_state s)
{
    return (unsigned)s < sizeof state_names / sizeof state_names[0] ? state_names[s] : NULL;
}

__attribute__((weak)) int fb_task_state_from_name(const char *name, fb_task_state *out)
{
    for (size_t i = 0; name && i < sizeof state_names / sizeof state_names[0]; i++)
        if (strcmp(name, state_names[i]) == 0) {
            *out = (fb_task_state)i;
            return 0;
        }
    return -1;
}

__attribute__((weak)) bool fb_task_state_final(fb_task_state s)
{
    return s >= FB_TASK_SUCCEEDED && s <= FB_TASK_BUDGET_EXCEEDED;
}

__attribute__((weak)) int fb_engine_loop(fb_engine_run *run, fb_llm_conv *conv, fb_engine_outcome *out)
{
    (void)run;
    (void)conv;
    memset(out, 0, sizeof *out);
    out->state = FB_TASK_FAILED;
    strcpy(out->error, "the task engine is not built into this binary");
    return 0;
}

__attribute__((weak)) void fb_engine_outcome_free(fb_engine_outcome *o)
{
    free(o->result);
    o->result = NULL;
}

__attribute__((weak)) const char *fb_engine_default_system(void)
{
    return "You are a careful assistant working in a sandbox.";
}
