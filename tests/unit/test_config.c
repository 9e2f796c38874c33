/* Unit tests for table-driven configuration loading (common/src/config.c): defaults, key = value files,
 * DR_* environment variables and argv, their precedence, and the error messages. Files are made with
 * mkstemp under /tmp and removed; every environment variable set here is unset again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr/config.h"
#include "dr/err.h"
#include "t.h"

/* ---- fixture ---------------------------------------------------------------------------------- */

typedef struct {
    char *host;     /* redis.host: STR 1..255, default "127.0.0.1" */
    int64_t port;   /* redis.port: INT 1..65535, default 6379 */
    double backoff; /* dispatch.backoff: DBL 1..10, default 2.0 */
    char *node;     /* node.id: STR 0..64, no default */
    char *pw;       /* redis.password: STR 0..128, default "hunter2", secret */
    int64_t xy;     /* x.y: INT -100..100, default 0 */
} cfg_t;

enum { NOPTS = 6 };

static void make_opts(cfg_t *c, dr_config_opt_t *o)
{
    memset(c, 0, sizeof(*c));
    const dr_config_opt_t t[NOPTS] = {
        {"redis.host", DR_CFG_STR, 1, 255, "127.0.0.1", &c->host, 0, "Redis host"},
        {"redis.port", DR_CFG_INT, 1, 65535, "6379", &c->port, 0, "Redis port"},
        {"dispatch.backoff", DR_CFG_DBL, 1.0, 10.0, "2.0", &c->backoff, 0, "retry backoff factor"},
        {"node.id", DR_CFG_STR, 0, 64, NULL, &c->node, 0, "stable node id"},
        {"redis.password", DR_CFG_STR, 0, 128, "hunter2", &c->pw, DR_CFG_SECRET, "Redis password"},
        {"x.y", DR_CFG_INT, -100, 100, "0", &c->xy, 0, "a test knob"},
    };
    memcpy(o, t, sizeof(t));
}

static const char *const env_vars[] = {"DR_REDIS_HOST", "DR_REDIS_PORT", "DR_DISPATCH_BACKOFF", "DR_NODE_ID",
                                       "DR_REDIS_PASSWORD", "DR_X_Y"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
        unsetenv(env_vars[i]);
}

/* Writes content to a new file under /tmp; returns its path (heap; caller removes and frees). */
static char *tmp_file(const char *content)
{
    char *path = strdup("/tmp/dr_test_config_XXXXXX");
    int fd = mkstemp(path);
    if (!CHECK(fd >= 0)) {
        free(path);
        return NULL;
    }
    size_t len = strlen(content);
    CHECK_EQ_INT(write(fd, content, len), (long long)len);
    close(fd);
    return path;
}

static void drop_file(char *path)
{
    if (path != NULL)
        unlink(path);
    free(path);
}

/* Loads with argv (NULL-terminated list after the program name). */
static int load(cfg_t *c, dr_config_opt_t *o, char **args, int *help, char *err)
{
    char *argv[32] = {"drover-test"};
    int argc = 1;
    for (; args != NULL && args[argc - 1] != NULL && argc < 31; argc++)
        argv[argc] = args[argc - 1];
    argv[argc] = NULL;
    make_opts(c, o);
    err[0] = '\0';
    *help = -1; /* must be reset by the loader */
    return dr_config_load(o, NOPTS, argc, argv, help, err);
}

/* Checks that err contains needle, printing err when it does not. */
#define CHECK_ERR_HAS(err, needle) check_err_has(__FILE__, __LINE__, (err), (needle))

static void check_err_has(const char *file, int line, const char *err, const char *needle)
{
    if (!CHECK_AT(file, line, strstr(err, needle) != NULL))
        fprintf(stderr, "    error \"%s\" does not contain \"%s\"\n", err, needle);
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void test_defaults(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    CHECK_EQ_INT(load(&c, o, NULL, &help, err), 0);
    CHECK_EQ_STR(c.host, "127.0.0.1");
    CHECK_EQ_INT(c.port, 6379);
    CHECK(c.backoff == 2.0);
    CHECK(c.node == NULL);
    CHECK_EQ_STR(c.pw, "hunter2");
    CHECK_EQ_INT(c.xy, 0);
    CHECK_EQ_INT(help, 0);
    dr_config_dispose(o, NOPTS);
    CHECK(c.host == NULL && c.node == NULL && c.pw == NULL);
    /* Dispose twice is harmless (the fields are NULL now). */
    dr_config_dispose(o, NOPTS);
}

static void test_file(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    char *path = tmp_file("# a comment\n"
                          "   # an indented comment\n"
                          "\n"
                          "   \t\n"
                          "redis.host = example.org\n"
                          "redis.port=7000\r\n"
                          "  dispatch.backoff \t=   3.5   \n"
                          "node.id = \"  quoted value  \"\n"
                          "redis.password = a=b#c\n"
                          "x.y = -5"); /* no newline at the end */
    char *args[] = {"-c", path, NULL};
    if (CHECK_EQ_INT(load(&c, o, args, &help, err), 0)) {
        CHECK_EQ_STR(c.host, "example.org");
        CHECK_EQ_INT(c.port, 7000);
        CHECK(c.backoff == 3.5);
        CHECK_EQ_STR(c.node, "  quoted value  ");
        CHECK_EQ_STR(c.pw, "a=b#c");
        CHECK_EQ_INT(c.xy, -5);
    } else {
        fprintf(stderr, "    error: %s\n", err);
    }
    dr_config_dispose(o, NOPTS);
    drop_file(path);

    /* Empty values and empty quotes give empty strings; a lone quote is kept. */
    path = tmp_file("node.id =\nredis.password = \"\"\n");
    char *args2[] = {"--config", path, NULL};
    if (CHECK_EQ_INT(load(&c, o, args2, &help, err), 0)) {
        CHECK_EQ_STR(c.node, "");
        CHECK_EQ_STR(c.pw, "");
    }
    dr_config_dispose(o, NOPTS);
    drop_file(path);
    path = tmp_file("node.id = \"\nredis.host=\"x\"\n");
    char *args3[] = {"-c", path, NULL};
    if (CHECK_EQ_INT(load(&c, o, args3, &help, err), 0)) {
        CHECK_EQ_STR(c.node, "\"");
        CHECK_EQ_STR(c.host, "x");
    }
    dr_config_dispose(o, NOPTS);
    drop_file(path);

    /* Boundaries are inclusive. */
    path = tmp_file("redis.port = 65535\ndispatch.backoff = 10\nx.y = -100\n");
    char *args4[] = {"-c", path, NULL};
    if (CHECK_EQ_INT(load(&c, o, args4, &help, err), 0)) {
        CHECK_EQ_INT(c.port, 65535);
        CHECK(c.backoff == 10.0);
        CHECK_EQ_INT(c.xy, -100);
    }
    dr_config_dispose(o, NOPTS);
    drop_file(path);
}

/* Loads a file with content and expects an error containing each of the needles (NULL-terminated) and
 * "<path>:<line>:" when line > 0. */
#define FILE_ERR(content, line, ...)                                                                                 \
    file_err_at(__FILE__, __LINE__, (content), (line), (const char *const[]){__VA_ARGS__, NULL})

static void file_err_at(const char *file, int line, const char *content, int at, const char *const *needles)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN], where[300];
    int help;
    char *path = tmp_file(content);
    if (path == NULL)
        return;
    char *args[] = {"-c", path, NULL};
    int rc = load(&c, o, args, &help, err);
    int ok = CHECK_EQ_INT_AT(file, line, rc, DR_ECONFIG);
    if (at > 0) {
        snprintf(where, sizeof(where), "%s:%d: ", path, at);
        ok &= CHECK_AT(file, line, strncmp(err, where, strlen(where)) == 0);
    }
    for (size_t i = 0; needles[i] != NULL; i++)
        ok &= CHECK_AT(file, line, strstr(err, needles[i]) != NULL);
    if (!ok)
        fprintf(stderr, "    error \"%s\" for file content \"%s\"\n", err, content);
    dr_config_dispose(o, NOPTS);
    drop_file(path);
}

static void test_file_errors(void)
{
    /* An overlong line is refused at its own line number, never split into a second line (which could
     * turn the tail of a comment into a setting). */
    {
        size_t n = 5000;
        char *content = malloc(n + 64);
        content[0] = '#';
        memset(content + 1, 'x', n);
        strcpy(content + 1 + n, "redis.port = 1\n");
        FILE_ERR(content, 1, "line longer than");
        memcpy(content, "redis.port = 2\n#", 16);
        FILE_ERR(content, 2, "line longer than");
        free(content);
    }
    FILE_ERR("# ok\n\nredis.port = 7000\nbogus.key = 1\n", 4, "unknown option 'bogus.key'");
    FILE_ERR("redis.host = a\nREDIS.PORT = 1\n", 2, "unknown option 'REDIS.PORT'");
    FILE_ERR("redis.port = 12x\n", 1, "redis.port", "not an integer");
    FILE_ERR("redis.port =\n", 1, "not an integer");
    FILE_ERR("redis.port = 1.5\n", 1, "not an integer");
    FILE_ERR("redis.port = 0x10\n", 1, "not an integer");
    FILE_ERR("redis.port = 99999999999999999999\n", 1, "not an integer");
    FILE_ERR("redis.port = \"\"\n", 1, "not an integer");
    FILE_ERR("\n\nredis.port = 70000\n", 3, "redis.port", "outside");
    FILE_ERR("redis.port = 0\n", 1, "outside");
    FILE_ERR("redis.port = 65536\n", 1, "outside");
    FILE_ERR("x.y = 101\n", 1, "x.y", "outside");
    FILE_ERR("x.y = -101\n", 1, "outside");
    FILE_ERR("dispatch.backoff = abc\n", 1, "dispatch.backoff", "not a number");
    FILE_ERR("dispatch.backoff = nan\n", 1, "not a number");
    FILE_ERR("dispatch.backoff = inf\n", 1, "not a number");
    FILE_ERR("dispatch.backoff = 2.5x\n", 1, "not a number");
    FILE_ERR("dispatch.backoff = 0.5\n", 1, "outside");
    FILE_ERR("dispatch.backoff = 10.01\n", 1, "outside");
    FILE_ERR("redis.host = \"\"\n", 1, "redis.host", "length");
    FILE_ERR("redis.port 7000\n", 1, "expected 'key = value'");
    FILE_ERR("# first\nredis.host = ok\njust words\n", 3, "expected 'key = value'");
    FILE_ERR("= 5\n", 1, "unknown option ''");

    /* A file that cannot be opened names the file. */
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    char *args[] = {"-c", "/tmp/dr_test_config_does_not_exist/x.conf", NULL};
    CHECK_EQ_INT(load(&c, o, args, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "/tmp/dr_test_config_does_not_exist/x.conf");
    dr_config_dispose(o, NOPTS);
}

static void test_env(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    clear_env();
    setenv("DR_X_Y", "42", 1);
    setenv("DR_REDIS_HOST", "env.example", 1);
    setenv("DR_DISPATCH_BACKOFF", "1.25", 1);
    setenv("DR_NODE_ID", "", 1);
    if (CHECK_EQ_INT(load(&c, o, NULL, &help, err), 0)) {
        CHECK_EQ_INT(c.xy, 42);
        CHECK_EQ_STR(c.host, "env.example");
        CHECK(c.backoff == 1.25);
        CHECK_EQ_STR(c.node, "");
        CHECK_EQ_INT(c.port, 6379);
    } else {
        fprintf(stderr, "    error: %s\n", err);
    }
    dr_config_dispose(o, NOPTS);
    clear_env();

    /* Names are upper case with '.' -> '_'; other spellings are not read. */
    setenv("dr_x_y", "7", 1);
    setenv("DR_X.Y", "8", 1);
    setenv("X_Y", "9", 1);
    CHECK_EQ_INT(load(&c, o, NULL, &help, err), 0);
    CHECK_EQ_INT(c.xy, 0);
    dr_config_dispose(o, NOPTS);
    unsetenv("dr_x_y");
    unsetenv("DR_X.Y");
    unsetenv("X_Y");

    /* A bad value names the variable. */
    setenv("DR_REDIS_PORT", "abc", 1);
    CHECK_EQ_INT(load(&c, o, NULL, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "DR_REDIS_PORT");
    CHECK_ERR_HAS(err, "not an integer");
    dr_config_dispose(o, NOPTS);
    setenv("DR_REDIS_PORT", "0", 1);
    CHECK_EQ_INT(load(&c, o, NULL, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "outside");
    dr_config_dispose(o, NOPTS);
    clear_env();
}

static void test_argv(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    clear_env();
    char *args[] = {"--redis.port=7100", "--redis.host", "h2", "--dispatch.backoff=1.5", "--x.y", "-7",
                    "--node.id=", "--redis.password=a=b", NULL};
    if (CHECK_EQ_INT(load(&c, o, args, &help, err), 0)) {
        CHECK_EQ_INT(c.port, 7100);
        CHECK_EQ_STR(c.host, "h2");
        CHECK(c.backoff == 1.5);
        CHECK_EQ_INT(c.xy, -7);
        CHECK_EQ_STR(c.node, "");
        CHECK_EQ_STR(c.pw, "a=b");
        CHECK_EQ_INT(help, 0);
    } else {
        fprintf(stderr, "    error: %s\n", err);
    }
    dr_config_dispose(o, NOPTS);

    /* The last occurrence wins. */
    char *twice[] = {"--redis.port=1", "--redis.port", "2", "--redis.host=a", "--redis.host=b", NULL};
    if (CHECK_EQ_INT(load(&c, o, twice, &help, err), 0)) {
        CHECK_EQ_INT(c.port, 2);
        CHECK_EQ_STR(c.host, "b");
    }
    dr_config_dispose(o, NOPTS);

    /* Errors. */
    char *unknown[] = {"--bogus=1", NULL};
    CHECK_EQ_INT(load(&c, o, unknown, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "unknown option 'bogus'");
    dr_config_dispose(o, NOPTS);
    char *unknown2[] = {"--bogus", "1", NULL};
    CHECK_EQ_INT(load(&c, o, unknown2, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "unknown option 'bogus'");
    dr_config_dispose(o, NOPTS);
    char *positional[] = {"extra", NULL};
    CHECK_EQ_INT(load(&c, o, positional, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "unexpected argument 'extra'");
    dr_config_dispose(o, NOPTS);
    char *single_dash[] = {"-p", "5", NULL};
    CHECK_EQ_INT(load(&c, o, single_dash, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "'-p'");
    dr_config_dispose(o, NOPTS);
    char *missing[] = {"--redis.host=x", "--redis.port", NULL};
    CHECK_EQ_INT(load(&c, o, missing, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "--redis.port");
    CHECK_ERR_HAS(err, "needs a value");
    dr_config_dispose(o, NOPTS);
    char *missing_c[] = {"-c", NULL};
    CHECK_EQ_INT(load(&c, o, missing_c, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "-c needs a file name");
    dr_config_dispose(o, NOPTS);
    char *missing_config[] = {"--redis.port=5", "--config", NULL};
    CHECK_EQ_INT(load(&c, o, missing_config, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "--config needs a file name");
    dr_config_dispose(o, NOPTS);
    char *bad_int[] = {"--redis.port=abc", NULL};
    CHECK_EQ_INT(load(&c, o, bad_int, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "not an integer");
    dr_config_dispose(o, NOPTS);
    char *range[] = {"--x.y", "1000", NULL};
    CHECK_EQ_INT(load(&c, o, range, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "outside");
    dr_config_dispose(o, NOPTS);
}

static void test_help(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    char *h1[] = {"--help", NULL};
    CHECK_EQ_INT(load(&c, o, h1, &help, err), 0);
    CHECK_EQ_INT(help, 1);
    dr_config_dispose(o, NOPTS);
    char *h2[] = {"--redis.port=5", "-h", "--x.y=3", NULL};
    CHECK_EQ_INT(load(&c, o, h2, &help, err), 0);
    CHECK_EQ_INT(help, 1);
    CHECK_EQ_INT(c.port, 5);
    CHECK_EQ_INT(c.xy, 3);
    dr_config_dispose(o, NOPTS);
    char *none[] = {"--redis.port=5", NULL};
    CHECK_EQ_INT(load(&c, o, none, &help, err), 0);
    CHECK_EQ_INT(help, 0);
    dr_config_dispose(o, NOPTS);

    /* The help text lists every option and never shows a secret default. */
    make_opts(&c, o);
    char *path = tmp_file("");
    if (path == NULL)
        return;
    fflush(stdout);
    int saved = dup(1);
    FILE *f = fopen(path, "w+");
    if (CHECK(saved >= 0 && f != NULL)) {
        dup2(fileno(f), 1);
        dr_config_print_help(o, NOPTS, "usage: drover-test [-c FILE] [--key=value ...]");
        fflush(stdout);
        dup2(saved, 1);
        char out[4096] = "";
        rewind(f);
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        CHECK(strstr(out, "usage: drover-test") != NULL);
        for (int i = 0; i < NOPTS; i++)
            CHECK(strstr(out, o[i].name) != NULL);
        CHECK(strstr(out, "6379") != NULL);
        CHECK(strstr(out, "hunter2") == NULL);
    }
    if (f != NULL)
        fclose(f);
    if (saved >= 0)
        close(saved);
    drop_file(path);
}

static void test_config_flag_forms(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    clear_env();
    char *path = tmp_file("redis.port = 7000\n");
    char *forms[][3] = {{"-c", path, NULL}, {"--config", path, NULL}, {NULL, NULL, NULL}};
    char eq[300];
    snprintf(eq, sizeof(eq), "--config=%s", path);
    forms[2][0] = eq;
    for (int i = 0; i < 3; i++) {
        if (CHECK_EQ_INT(load(&c, o, forms[i], &help, err), 0))
            CHECK_EQ_INT(c.port, 7000);
        else
            fprintf(stderr, "    form %d: %s\n", i, err);
        dr_config_dispose(o, NOPTS);
    }

    /* Two files: both are read in order, the later one wins. */
    char *path2 = tmp_file("redis.port = 7001\nx.y = 9\n");
    char *two[] = {"-c", path, "--config", path2, NULL};
    if (CHECK_EQ_INT(load(&c, o, two, &help, err), 0)) {
        CHECK_EQ_INT(c.port, 7001);
        CHECK_EQ_INT(c.xy, 9);
    }
    dr_config_dispose(o, NOPTS);
    drop_file(path2);
    drop_file(path);
}

/* defaults < file < env < argv, option by option. */
static void test_precedence(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    int help;
    clear_env();
    char *path = tmp_file("redis.port = 7000\nredis.host = file.host\ndispatch.backoff = 3\n");

    char *file_only[] = {"-c", path, NULL};
    CHECK_EQ_INT(load(&c, o, file_only, &help, err), 0);
    CHECK_EQ_INT(c.port, 7000);
    dr_config_dispose(o, NOPTS);

    setenv("DR_REDIS_PORT", "7001", 1);
    setenv("DR_DISPATCH_BACKOFF", "4", 1);
    setenv("DR_X_Y", "11", 1);
    CHECK_EQ_INT(load(&c, o, file_only, &help, err), 0);
    CHECK_EQ_INT(c.port, 7001);
    dr_config_dispose(o, NOPTS);

    /* The file comes before env and argv wherever it sits on the command line. */
    char *all[] = {"--redis.port=7002", "--dispatch.backoff", "5", "-c", path, NULL};
    if (CHECK_EQ_INT(load(&c, o, all, &help, err), 0)) {
        CHECK_EQ_INT(c.port, 7002);               /* default, file, env, argv */
        CHECK(c.backoff == 5.0);                  /* default, file, env, argv */
        CHECK_EQ_STR(c.host, "file.host");        /* default, file */
        CHECK_EQ_INT(c.xy, 11);                   /* default, env */
        CHECK_EQ_STR(c.pw, "hunter2");            /* default only */
        CHECK(c.node == NULL);                    /* no default, never set */
    } else {
        fprintf(stderr, "    error: %s\n", err);
    }
    dr_config_dispose(o, NOPTS);

    /* argv beats env without a file, env beats the default. */
    char *argv_only[] = {"--x.y=12", NULL};
    CHECK_EQ_INT(load(&c, o, argv_only, &help, err), 0);
    CHECK_EQ_INT(c.xy, 12);
    CHECK_EQ_INT(c.port, 7001);
    CHECK_EQ_STR(c.host, "127.0.0.1");
    dr_config_dispose(o, NOPTS);

    /* A bad file is reported even when env and argv would override the key. */
    char *bad = tmp_file("redis.port = nope\n");
    char *bad_args[] = {"--redis.port=1", "-c", bad, NULL};
    CHECK_EQ_INT(load(&c, o, bad_args, &help, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, ":1: ");
    dr_config_dispose(o, NOPTS);
    drop_file(bad);

    clear_env();
    drop_file(path);
}

/* Setting a string again frees the old copy; dispose frees the last one (LSan checks both). */
static void test_set_and_dispose(void)
{
    cfg_t c;
    dr_config_opt_t o[NOPTS];
    char err[DR_ERR_LEN];
    make_opts(&c, o);
    for (int i = 0; i < 100; i++) {
        char v[32];
        snprintf(v, sizeof(v), "host-%d", i);
        CHECK_EQ_INT(dr_config_set(o, NOPTS, "redis.host", v, err), 0);
    }
    CHECK_EQ_STR(c.host, "host-99");
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "node.id", "n1", err), 0);
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "redis.port", "80", err), 0);
    CHECK_EQ_INT(c.port, 80);
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "nope", "1", err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "unknown option 'nope'");
    /* A failed set leaves the old value. */
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "redis.host", "", err), DR_ECONFIG);
    CHECK_EQ_STR(c.host, "host-99");
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "redis.port", "x", err), DR_ECONFIG);
    CHECK_EQ_INT(c.port, 80);
    dr_config_dispose(o, NOPTS);
    CHECK(c.host == NULL && c.node == NULL);
    /* A string of exactly the maximum length is accepted, one more byte is not. */
    char longv[300];
    memset(longv, 'h', 255);
    longv[255] = '\0';
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "redis.host", longv, err), 0);
    longv[255] = 'h';
    longv[256] = '\0';
    CHECK_EQ_INT(dr_config_set(o, NOPTS, "redis.host", longv, err), DR_ECONFIG);
    CHECK_ERR_HAS(err, "length 256");
    dr_config_dispose(o, NOPTS);
}

int main(void)
{
    clear_env();
    test_defaults();
    test_file();
    test_file_errors();
    test_env();
    test_argv();
    test_help();
    test_config_flag_forms();
    test_precedence();
    test_set_and_dispose();
    clear_env();
    return t_report("test_config");
}
