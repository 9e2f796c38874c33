/* A minimal HTTP/1.1 responder on a libuv loop, for a process's operational endpoints (/metrics,
 * /healthz, /readyz) where the service has no HTTP server of its own.
 *
 * It serves one request per connection: it reads the request head (at most DR_HTTPMINI_HEAD_MAX
 * bytes, within DR_HTTPMINI_TIMEOUT_MS of the connection's start), asks the handler for the answer,
 * writes it with "Connection: close" and closes. A request body is never read: a request that
 * announces one gets 413. Bad or slow clients cost at most one small buffer and one timer each, and at
 * most DR_HTTPMINI_CONNS connections are served at once (more are closed at accept), so they cannot
 * stall the loop or grow memory. Everything runs on the loop thread that opened the server.
 */
#ifndef DR_HTTPMINI_H
#define DR_HTTPMINI_H

#include <stddef.h>
#include <uv.h>

#define DR_HTTPMINI_HEAD_MAX 8192
#define DR_HTTPMINI_TIMEOUT_MS 5000
#define DR_HTTPMINI_CONNS 32

typedef struct dr_httpmini dr_httpmini_t;

/* The answer to one request, filled by the handler. */
typedef struct {
    int status;               /* HTTP status code */
    const char *content_type; /* static string; NULL for text/plain */
    char *body;               /* taken over (freed with free()); NULL for an empty body */
    size_t len;
} dr_httpmini_res_t;

/* Called on the loop thread for a well-formed GET or HEAD request. path excludes the query string;
 * method and path are valid during the call only. The handler fills res and returns; it must not
 * close the server. For HEAD the body is dropped after the call. */
typedef void dr_httpmini_handler(void *data, const char *method, const char *path, dr_httpmini_res_t *res);

/* Listens on bind:port (IPv4 or IPv6 literal) and serves requests with handler(data, ...). Returns 0
 * with *out set, or a negative DR_E* code with err (DR_ERR_LEN bytes) filled. */
int dr_httpmini_open(uv_loop_t *loop, const char *bind, int port, dr_httpmini_handler *handler, void *data,
                     dr_httpmini_t **out, char *err);

/* Port actually bound (useful with port 0). */
int dr_httpmini_port(const dr_httpmini_t *s);

/* Stops listening, closes every connection and frees s once its handles are closed. Loop thread;
 * s may be NULL. The handler is not called again. */
void dr_httpmini_close(dr_httpmini_t *s);

#endif
