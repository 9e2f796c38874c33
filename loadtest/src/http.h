/* drover-load: a small HTTP/1.1 client for the REST producer transport (http.c).
 *
 * One connection carries one request at a time and is kept alive between requests. Every call is
 * blocking but bounded: connect, write and the whole answer share one deadline, and each wait also
 * watches a stop descriptor so a run can end at once. Only plain http:// to a loopback address is
 * supported, matching the load tool's rule that it never leaves the machine.
 */
#ifndef DR_LOAD_HTTP_H
#define DR_LOAD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Where requests go: the parsed rest.url. Plain data, safe to copy. */
typedef struct {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[64];                 /* value of the Host header, e.g. "127.0.0.1:8080" */
    char base[128];                /* path prefix without a trailing '/', "" for none */
} lt_http_target_t;

/* Parses "http://HOST[:PORT][/base]" where HOST is 127.0.0.1, localhost or [::1] (no DNS lookup is
 * made). Returns 0, or DR_EINVAL with a sentence in err (errlen bytes). url is borrowed. */
int lt_http_target_parse(const char *url, lt_http_target_t *t, char *err, size_t errlen);

/* One keep-alive connection. Caller-allocated: lt_http_init, then requests, then lt_http_dispose.
 * Not thread-safe: one thread uses a connection at a time. */
typedef struct {
    /* read-only */
    int fd;                        /* -1 while not connected */
    int64_t opened;                /* TCP connections made so far */
    /* private */
    const lt_http_target_t *_target;
    int _stop_fd;
    int _served;                   /* answers read on the current socket */
    char *_buf;                    /* received bytes; the last answer's body points into it */
    size_t _len, _cap;
} lt_http_conn_t;

/* The answer to one request. body is borrowed from the connection and valid until its next call. */
typedef struct {
    int status;                    /* 100..599 */
    int64_t retry_after_s;         /* Retry-After in seconds, -1 when absent or not a number */
    int replayed;                  /* Idempotent-Replayed: true */
    const char *body;              /* NUL-terminated, body_len bytes */
    size_t body_len;
} lt_http_resp_t;

/* Prepares c for target (borrowed; must outlive c). stop_fd, when not -1, is polled with every wait:
 * once it is readable every call returns DR_ECLOSED without waiting. */
void lt_http_init(lt_http_conn_t *c, const lt_http_target_t *target, int stop_fd);

/* Sends one request and reads its whole answer, connecting first when needed, all within
 * timeout_ms. headers is zero or more complete "Name: value\r\n" lines (Host, Content-Length and,
 * with a body, nothing else is added); body may be NULL when body_len is 0. All borrowed.
 * A kept-alive socket that the server closed while idle is replaced and the request sent once more,
 * but only when no byte of an answer had arrived.
 * Returns 0 with *resp filled (any status), or: DR_EUNAVAIL (cannot connect), DR_ETIMEDOUT,
 * DR_EIO (the connection failed or closed mid-answer), DR_EINVAL (not a valid HTTP/1.x answer),
 * DR_ETOOBIG (answer headers over 16 KiB or body over 1 MiB), DR_ECLOSED (stop_fd became readable).
 * After any error the socket is closed; the next call connects again. */
int lt_http_request(lt_http_conn_t *c, const char *method, const char *path, const char *headers,
                    const char *body, size_t body_len, int64_t timeout_ms, lt_http_resp_t *resp);

/* Closes the socket (if any); the connection may be used again and will reconnect. */
void lt_http_close(lt_http_conn_t *c);

/* Closes the socket and frees the buffer. */
void lt_http_dispose(lt_http_conn_t *c);

/* Percent-encodes s as one path segment into out (size bytes, NUL-terminated). Returns 0, or -1
 * when it does not fit. */
int lt_http_path_segment(const char *s, char *out, size_t size);

#endif
