/*
 * task_run.c - `forgebox task run`: one task, locally, from the shell.
 *
 * The operator at the shell is the host's own (like `forgebox run`): the
 * provider comes from forgebox.yaml's providers:, the tools and budgets
 * from the flags, and there is no team, key or store.  One sandbox is
 * created for the task and destroyed at its end (also on SIGINT, which
 * cancels the task: the provider call or the tool's command in flight is
 * abandoned).  The model's text streams to stdout; each tool call and its
 * result go to stderr in a readable form, so that stdout carries only
 * what the model says.  Calls to --approve tools are asked on the
 * terminal: the answer is read from stdin (a tty, or a pipe in scripts);
 * stdin at its end (</dev/null, a closed pipe) denies, with that reason
 * given to the model.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/engine.h"

#define DEFAULT_MAX_TURNS 50
#define DEFAULT_TIMEOUT_S 3600
#define SHOW_LINES 20
#define SHOW_BYTES 2000
#define SHOW_INPUT 500

#define DEFAULT_TOOLS                                                                                  \
    (FB_TOOLSET_OF(FB_TOOL_BASH) | FB_TOOLSET_OF(FB_TOOL_FILE_READ) | FB_TOOLSET_OF(FB_TOOL_FILE_WRITE) | \
     FB_TOOLSET_OF(FB_TOOL_FILE_EDIT) | FB_TOOLSET_OF(FB_TOOL_GLOB) | FB_TOOLSET_OF(FB_TOOL_GREP))

static atomic_bool cancel_flag;
static volatile sig_atomic_t cancel_signal;

static void on_signal(int sig)
{
    cancel_signal = sig;
    atomic_store(&cancel_flag, true);
}

static void task_run_usage(FILE *out)
{
    fprintf(out,
            "usage: forgebox task run --provider NAME --model M [options] \"PROMPT\"\n"
            "\n"
            "Runs one task locally: the model works through tools that run in a fresh\n"
            "sandbox, until it stops, a budget ends it, or SIGINT cancels it.  The model's\n"
            "text goes to stdout, tool calls and results to stderr.\n"
            "\n"
            "options:\n"
            "  --provider NAME       a provider of forgebox.yaml's providers: (required)\n"
            "  --model M             the model to ask (required)\n"
            "  --tool T              offer tool T (repeatable; bash file_read file_write\n"
            "                        file_edit glob grep git web_fetch); default: bash,\n"
            "                        file_read, file_write, file_edit, glob, grep (and\n"
            "                        web_fetch with --allow-net)\n"
            "  --approve T           ask on the terminal before each call of T (repeatable)\n"
            "  --max-turns N         provider calls (default %d; 0: no limit)\n"
            "  --max-tokens N        input+output tokens of all turns (default: no limit)\n"
            "  --max-tool-calls N    tool calls (default: no limit)\n"
            "  --timeout S           wall time of the task (default %d; 0: no limit)\n"
            "  --backend vm|jail     isolation backend (default vm)\n"
            "  --allow-net HOST[,HOST...]  hosts the sandbox may reach through the egress proxy\n"
            "  --config FILE         forgebox.yaml (default $FORGEBOX_CONFIG, else\n"
            "                        /etc/forgebox/forgebox.yaml)\n"
            "  --system TEXT         the system prompt (default: ForgeBox's own)\n"
            "  --no-stream           ask for whole responses instead of streams\n"
            "  --max-output BYTES    cap on each tool result (default %u)\n"
            "  --image DIR, --state-dir DIR   as for forgebox run\n"
            "  -q, --quiet           no notes on stderr\n"
            "\n"
            "exit codes: 0 succeeded; %d failed; %d budget exceeded; %d cancelled;\n"
            "%d usage or configuration error; %d sandbox failure.\n",
            DEFAULT_MAX_TURNS, DEFAULT_TIMEOUT_S, FB_ENGINE_TOOL_OUTPUT_DEFAULT, FB_EXIT_TASK_FAILED,
            FB_EXIT_TASK_BUDGET, FB_EXIT_TASK_CANCELLED, FB_EXIT_USAGE, FB_EXIT_SANDBOX);
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "forgebox task run: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'forgebox task run --help'.\n");
    return FB_EXIT_USAGE;
}

/* ---- what the operator sees ----------------------------------------------------- */

struct view {
    bool text_open;     /* the model's text did not end with a newline yet */
    fb_toolset approve;
};

static void end_text(struct view *v)
{
    if (v->text_open)
        (void)fb_write_all(STDOUT_FILENO, "\n", 1);
    v->text_open = false;
}

/* A tool's output, indented, at most SHOW_LINES lines / SHOW_BYTES bytes. */
static void show_output(const char *s)
{
    size_t len = strlen(s), shown = 0;
    int lines = 0;
    while (shown < len && lines < SHOW_LINES && shown < SHOW_BYTES) {
        const char *nl = memchr(s + shown, '\n', len - shown);
        size_t n = nl ? (size_t)(nl - (s + shown)) : len - shown;
        fprintf(stderr, "    %.*s\n", (int)n, s + shown);
        shown += n + (nl != NULL);
        lines++;
    }
    if (shown < len)
        fprintf(stderr, "    ... (%zu more bytes)\n", len - shown);
}

static void on_event(void *user, const char *type, json_t *data)
{
    struct view *v = user;
    if (strcmp(type, "text") == 0) {
        const char *d = json_string_value(json_object_get(data, "delta"));
        size_t n = d ? strlen(d) : 0;
        if (n) {
            (void)fb_write_all(STDOUT_FILENO, d, n);
            v->text_open = d[n - 1] != '\n';
        }
    } else if (strcmp(type, "tool_call") == 0) {
        end_text(v);
        char *in = json_dumps(json_object_get(data, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
        size_t inlen = in ? strlen(in) : 0;
        fprintf(stderr, "[tool] %s %.*s%s\n", json_string_value(json_object_get(data, "tool")),
                SHOW_INPUT, in ? in : "null", inlen > SHOW_INPUT ? "..." : "");
        free(in);
    } else if (strcmp(type, "tool_result") == 0) {
        bool err = json_is_true(json_object_get(data, "is_error"));
        fprintf(stderr, "[result] %s%s\n", json_string_value(json_object_get(data, "tool")),
                err ? " (error)" : "");
        show_output(json_string_value(json_object_get(data, "output")));
    } else {
        end_text(v);
    }
    json_decref(data);
}

/* One answer line from stdin, waiting while the task is not cancelled.
 * -1 at end of input (or a read error), 0 with the line. */
static int read_answer(char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (atomic_load(&cancel_flag))
            return -1;
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = poll(&p, 1, 200);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r <= 0)
            continue;
        char c;
        ssize_t got = read(STDIN_FILENO, &c, 1);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            return n ? 0 : -1;
        if (c == '\n')
            break;
        if (n + 1 < cap)
            buf[n++] = c;
    }
    buf[n] = '\0';
    return 0;
}

static fb_verdict on_authorize(void *user, const fb_llm_tool_call *call, int tool, char *reason, size_t cap)
{
    struct view *v = user;
    if (tool < 0 || !(v->approve & FB_TOOLSET_OF(tool)))
        return FB_ALLOW; /* the engine refuses what was not offered */
    end_text(v);
    char *in = call->input ? json_dumps(call->input, JSON_COMPACT) : NULL;
    fprintf(stderr, "approve %s %s? [y/N] ", call->name, in ? in : "(invalid arguments)");
    fflush(stderr);
    free(in);
    char answer[64];
    if (read_answer(answer, sizeof answer) < 0) {
        fprintf(stderr, "\n");
        snprintf(reason, cap, "no one approved it: %s",
                 atomic_load(&cancel_flag) ? "the task ended" : "the terminal gave no answer (stdin is closed)");
        return FB_DENY;
    }
    if (!isatty(STDIN_FILENO))
        fprintf(stderr, "%s\n", answer); /* a tty echoed it already */
    if (strcasecmp(answer, "y") == 0 || strcasecmp(answer, "yes") == 0)
        return FB_ALLOW;
    snprintf(reason, cap, "the operator denied this call at the terminal");
    return FB_DENY;
}

/* ---- the verb ----------------------------------------------------------------------- */

struct task_opts {
    const char *provider, *model, *config, *system, *prompt;
    fb_toolset tools, approve;
    bool tools_set, no_stream, quiet;
    fb_engine_limits limits;
    uint64_t max_output;
};

static int parse_tool(const char *arg, fb_toolset *set, const char *flag)
{
    fb_tool t;
    if (fb_tool_from_name(arg, &t) < 0) {
        fprintf(stderr, "forgebox task run: %s: unknown tool '%.64s' (bash, file_read, file_write, "
                        "file_edit, glob, grep, git, web_fetch)\n", flag, arg);
        return -1;
    }
    *set |= FB_TOOLSET_OF(t);
    return 0;
}

static int parse_args(int argc, char **argv, struct task_opts *o, fb_cli_box *box)
{
    enum { O_PROVIDER = 1, O_MODEL, O_TOOL, O_APPROVE, O_TURNS, O_TOKENS, O_CALLS, O_TIMEOUT, O_BACKEND,
           O_ALLOW_NET, O_CONFIG, O_SYSTEM, O_NO_STREAM, O_MAXOUT, O_IMAGE, O_STATE, O_HELP };
    static const struct option opts[] = {
        {"provider", required_argument, NULL, O_PROVIDER}, {"model", required_argument, NULL, O_MODEL},
        {"tool", required_argument, NULL, O_TOOL},         {"approve", required_argument, NULL, O_APPROVE},
        {"max-turns", required_argument, NULL, O_TURNS},   {"max-tokens", required_argument, NULL, O_TOKENS},
        {"max-tool-calls", required_argument, NULL, O_CALLS},
        {"timeout", required_argument, NULL, O_TIMEOUT},   {"backend", required_argument, NULL, O_BACKEND},
        {"allow-net", required_argument, NULL, O_ALLOW_NET},
        {"config", required_argument, NULL, O_CONFIG},     {"system", required_argument, NULL, O_SYSTEM},
        {"no-stream", no_argument, NULL, O_NO_STREAM},     {"max-output", required_argument, NULL, O_MAXOUT},
        {"image", required_argument, NULL, O_IMAGE},       {"state-dir", required_argument, NULL, O_STATE},
        {"quiet", no_argument, NULL, 'q'},                 {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    fb_err err = {{0}};
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+q", opts, NULL)) != -1) {
        switch (c) {
        case O_PROVIDER: o->provider = optarg; break;
        case O_MODEL: o->model = optarg; break;
        case O_TOOL:
            if (parse_tool(optarg, &o->tools, "--tool") < 0)
                return FB_EXIT_USAGE;
            o->tools_set = true;
            break;
        case O_APPROVE:
            if (parse_tool(optarg, &o->approve, "--approve") < 0)
                return FB_EXIT_USAGE;
            break;
        case O_TURNS:
            if (fb_parse_u64(optarg, 0, 100000, &o->limits.max_turns) < 0)
                return bad_usage("--max-turns must be a number from 0 to 100000, not '%.64s'", optarg);
            break;
        case O_TOKENS:
            if (fb_parse_u64(optarg, 0, UINT64_MAX / 2, &o->limits.max_tokens) < 0)
                return bad_usage("--max-tokens must be a number, not '%.64s'", optarg);
            break;
        case O_CALLS:
            if (fb_parse_u64(optarg, 0, 1000000, &o->limits.max_tool_calls) < 0)
                return bad_usage("--max-tool-calls must be a number from 0 to 1000000, not '%.64s'", optarg);
            break;
        case O_TIMEOUT:
            if (fb_parse_u64(optarg, 0, 7 * 24 * 3600, &o->limits.timeout_s) < 0)
                return bad_usage("--timeout must be a number of seconds from 0 to 604800, not '%.64s'", optarg);
            break;
        case O_BACKEND:
            if (strcmp(optarg, "vm") != 0 && strcmp(optarg, "jail") != 0)
                return bad_usage("--backend must be vm or jail, not '%.64s'", optarg);
            box->cfg.backend = strcmp(optarg, "vm") == 0 ? FB_BACKEND_VM : FB_BACKEND_JAIL;
            break;
        case O_ALLOW_NET:
            if (fb_run_net_add(&box->net, optarg, &err) < 0)
                return bad_usage("--allow-net: %s", err.msg);
            break;
        case O_CONFIG: o->config = optarg; break;
        case O_SYSTEM: o->system = optarg; break;
        case O_NO_STREAM: o->no_stream = true; break;
        case O_MAXOUT:
            if (fb_parse_u64(optarg, 1, 1u << 24, &o->max_output) < 0)
                return bad_usage("--max-output must be between 1 and 16777216 bytes, not '%.64s'", optarg);
            break;
        case O_IMAGE: box->image_flag = optarg; break;
        case O_STATE: box->state_flag = optarg; break;
        case 'q': o->quiet = true; break;
        case O_HELP:
            task_run_usage(stdout);
            return -1;
        default:
            return bad_usage("unknown or incomplete option '%.64s'", argv[optind - 1]);
        }
    }
    if (!o->provider || !o->model)
        return bad_usage("%s", "--provider and --model are required");
    if (optind != argc - 1 || !argv[optind][0])
        return bad_usage("%s", "give the prompt as one argument: forgebox task run [options] \"PROMPT\"");
    o->prompt = argv[optind];
    if (!o->tools_set)
        o->tools = DEFAULT_TOOLS | (box->net.grant.count ? FB_TOOLSET_OF(FB_TOOL_WEB_FETCH) : 0);
    for (int t = 0; t < FB_TOOL_COUNT; t++)
        if ((o->approve & FB_TOOLSET_OF(t)) && !(o->tools & FB_TOOLSET_OF(t)))
            return bad_usage("--approve %s: that tool is not offered (add --tool)", fb_tool_name((fb_tool)t));
    return 0;
}

/* The provider named on the command line, from forgebox.yaml. */
static int open_provider(const struct task_opts *o, fb_config *conf, fb_llm_provider **p)
{
    fb_err err = {{0}};
    if (fb_cli_config_load(o->config, conf, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return FB_EXIT_USAGE;
    }
    const fb_config_provider *cp = fb_config_provider_find(conf, o->provider);
    if (!cp) {
        fprintf(stderr, "forgebox: no provider '%.64s' in forgebox.yaml's providers:%s\n", o->provider,
                conf->nproviders ? "" : " (none are configured)");
        return FB_EXIT_USAGE;
    }
    fb_llm_provider_opts po = fb_config_provider_opts(cp);
    if (fb_llm_provider_new(&po, p, &err) != FB_LLM_OK) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return FB_EXIT_USAGE;
    }
    return 0;
}

static int exit_code(fb_task_state s)
{
    switch (s) {
    case FB_TASK_SUCCEEDED: return 0;
    case FB_TASK_BUDGET_EXCEEDED: return FB_EXIT_TASK_BUDGET;
    case FB_TASK_CANCELLED: return cancel_signal ? 128 + cancel_signal : FB_EXIT_TASK_CANCELLED;
    default: return FB_EXIT_TASK_FAILED;
    }
}

static int task_run(int argc, char **argv)
{
    static fb_cli_box box; /* large (the grant); one task per process */
    memset(&box, 0, sizeof box);
    fb_sandbox_config_defaults(&box.cfg);
    struct task_opts o = {.limits = {.max_turns = DEFAULT_MAX_TURNS, .timeout_s = DEFAULT_TIMEOUT_S}};
    int rc = parse_args(argc, argv, &o, &box);
    if (rc != 0)
        return rc < 0 ? 0 : rc;

    static fb_config conf;
    fb_llm_provider *provider = NULL;
    if ((rc = open_provider(&o, &conf, &provider)) != 0)
        return rc;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = fb_cli_box_up(&box, &conf, o.quiet);
    fb_config_free(&conf);
    if (rc != 0) {
        fb_llm_provider_free(provider);
        return rc;
    }

    fb_llm_conv conv;
    fb_llm_conv_init(&conv);
    struct view v = {.approve = o.approve};
    fb_engine_usage usage = {0};
    fb_engine_run run = {.provider = provider, .model = o.model, .no_stream = o.no_stream, .tools = o.tools,
                         .sandbox = box.sb, .network = box.net.grant.count > 0, .max_tool_output = o.max_output,
                         .limits = o.limits, .usage = &usage, .cancel = &cancel_flag,
                         .hooks = {.user = &v, .event = on_event, .authorize = on_authorize}};
    fb_engine_outcome out = {0};
    if (fb_llm_conv_set_system(&conv, o.system ? o.system : fb_engine_default_system()) < 0 ||
        fb_llm_conv_add_user(&conv, o.prompt) < 0 || fb_engine_loop(&run, &conv, &out) < 0) {
        out.state = FB_TASK_FAILED;
        if (!out.error[0])
            snprintf(out.error, sizeof out.error, "out of memory");
    }
    end_text(&v);
    fprintf(stderr, "forgebox: task %s%s%s (%llu turns, %llu tool calls, %llu input tokens, %llu output tokens)\n",
            fb_task_state_name(out.state), out.error[0] ? ": " : "", out.error, (unsigned long long)usage.turns,
            (unsigned long long)usage.tool_calls, (unsigned long long)usage.input_tokens,
            (unsigned long long)usage.output_tokens);
    rc = exit_code(out.state);
    fb_engine_outcome_free(&out);
    fb_llm_conv_free(&conv);
    fb_cli_box_down(&box);
    fb_llm_provider_free(provider);
    return rc;
}

int fb_cmd_task(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return task_run(argc - 1, argv + 1);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        fprintf(argc < 2 ? stderr : stdout, "usage: forgebox task run [options] \"PROMPT\"\n"
                                            "`forgebox task run --help` lists the options.\n");
        return argc < 2 ? FB_EXIT_USAGE : 0;
    }
    fprintf(stderr, "forgebox: unknown task command '%.64s' (this build has: run)\n", argv[1]);
    return FB_EXIT_USAGE;
}
