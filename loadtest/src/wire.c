/* Message texts of the load tool: what producers send and the few fields the tool reads back.
 *
 * Each command carries its number k in data ("k"), so the device can tell which command arrived
 * without any shared state, and the producer id ("p"), which the raw baseline needs to address the
 * reply. The padding is plain 'x' characters so the scanner below cannot mistake it for a key.
 */
#include <dirent.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "dr/codec.h"
#include "dr/mem.h"
#include "dr/status.h"
#include "load.h"

int lt_nodelay_sockets(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return 0;
    int n = 0, me = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        struct stat st;
        if (*end != '\0' || fd == me || fstat((int)fd, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        int type = 0, one = 1;
        socklen_t len = sizeof(type);
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
            getsockname((int)fd, (struct sockaddr *)&sa, &salen) != 0 ||
            (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
            continue;
        if (setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0)
            n++;
    }
    closedir(dir);
    return n;
}

int64_t lt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void lt_device_id(const lt_opts_t *o, int64_t n, char *buf, size_t size)
{
    snprintf(buf, size, "%s-%" PRId64, o->prefix, n);
}

static char *data_json(const lt_opts_t *o, int64_t k, const char *producer_id)
{
    size_t pad = (size_t)o->payload;
    char *pads = dr_malloc(pad + 1);
    memset(pads, 'x', pad);
    pads[pad] = '\0';
    size_t size = pad + strlen(producer_id) + 64;
    char *d = dr_malloc(size);
    snprintf(d, size, "{\"k\":%" PRId64 ",\"p\":\"%s\",\"pad\":\"%s\"}", k, producer_id, pads);
    free(pads);
    return d;
}

char *lt_wire_command(const lt_opts_t *o, int mode, int64_t k, const char *producer_id)
{
    char *data = data_json(o, k, producer_id);
    if (mode == LT_MODE_RAW) {
        /* The baseline publishes what Drover would deliver, with the command number as id. */
        char *body = dr_codec_encode_consumer(k, DR_G_RECEIPT_CONFIRMATION, "lt", lt_now_us() / 1000, data);
        free(data);
        return body;
    }
    size_t size = strlen(data) + strlen(producer_id) + 192;
    char *body = dr_malloc(size);
    snprintf(body, size,
             "{\"believerGuarantee\":\"RECEIPT_CONFIRMATION\",\"command\":\"lt\",\"data\":%s,"
             "\"messageBirthCertificate\":{\"tmpId\":%" PRId64 ",\"producerDeviseId\":\"%s\"}}",
             data, k, producer_id);
    free(data);
    return body;
}

static const char *find_key(const char *buf, size_t len, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 3 <= len; i++) {
        if (buf[i] == '"' && memcmp(buf + i + 1, key, kl) == 0 && buf[i + 1 + kl] == '"' && buf[i + 2 + kl] == ':')
            return buf + i + 3 + kl;
    }
    return NULL;
}

int lt_wire_int(const char *buf, size_t len, const char *key, int64_t *out)
{
    const char *p = find_key(buf, len, key), *end = buf + len;
    if (p == NULL || p >= end || (*p != '-' && (*p < '0' || *p > '9')))
        return -1;
    int neg = *p == '-';
    if (neg)
        p++;
    int64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 18) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0)
        return -1;
    *out = neg ? -v : v;
    return 0;
}

int lt_wire_str(const char *buf, size_t len, const char *key, char *out, size_t size)
{
    const char *p = find_key(buf, len, key), *end = buf + len;
    if (p == NULL || p >= end || *p != '"' || size == 0)
        return -1;
    p++;
    size_t n = 0;
    while (p < end && *p != '"' && *p != '\\' && n + 1 < size)
        out[n++] = *p++;
    if (p >= end || *p != '"')
        return -1;
    out[n] = '\0';
    return 0;
}
