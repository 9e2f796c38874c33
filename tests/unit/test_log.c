/* dr_log_limit_ok: a budget of log lines a second, and the line that counts what was left out. */
#define DR_MODULE "test/log"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "dr/log.h"
#include "t.h"

/* Runs fn with stderr going to a temporary file; returns what it wrote (static buffer). */
static const char *captured(void (*fn)(dr_log_limit_t *), dr_log_limit_t *l)
{
    static char buf[4096];
    char path[] = "/tmp/drover-test-log-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return "";
    int saved = dup(2);
    dup2(fd, 2);
    fn(l);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return buf;
}

static int allowed;

static void twenty_five(dr_log_limit_t *l)
{
    allowed = 0;
    for (int i = 0; i < 25; i++)
        allowed += dr_log_limit_ok(l, 20, DR_LOG_WARNING, DR_MODULE, "things_not_logged");
}

static void one_more(dr_log_limit_t *l)
{
    allowed = dr_log_limit_ok(l, 20, DR_LOG_WARNING, DR_MODULE, "things_not_logged");
}

static void test_budget_and_count(void)
{
    dr_log_limit_t l = {0};
    const char *out = captured(twenty_five, &l);
    CHECK_EQ_INT(allowed, 20);
    CHECK_EQ_STR(out, ""); /* nothing reported while the second that left lines out goes on */
    out = captured(one_more, &l);
    CHECK_EQ_INT(allowed, 0);
    CHECK_EQ_STR(out, "");
    /* the next second: one line with the count, then lines are allowed again */
    usleep(1100 * 1000);
    out = captured(one_more, &l);
    CHECK_EQ_INT(allowed, 1);
    CHECK(strstr(out, "event=things_not_logged count=6") != NULL);
    CHECK(strstr(out, "level=warning") != NULL);
    /* a second that left nothing out reports nothing */
    usleep(1100 * 1000);
    out = captured(one_more, &l);
    CHECK_EQ_INT(allowed, 1);
    CHECK_EQ_STR(out, "");
}

int main(void)
{
    test_budget_and_count();
    return t_report("test_log");
}
