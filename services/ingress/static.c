/* The web console's static files: /admin/... from http.console_dir, /vendor/... from http.vendor_dir,
 * the redirects of / and /admin to the login page and of /swagger-ui.html to the console's API page,
 * and /v3/api-docs.
 *
 * DESIGN
 * Files are served by h2o's own file handler on their own path prefixes, so the request path is
 * normalised by h2o before it is mapped (a "..", encoded or not, can never leave the directory: the
 * normalised path no longer starts with the prefix and lands in the API handler, which answers 404).
 * Directory listings are off and there are no index files. A missing directory or file is a 404 from
 * h2o, never an error at start: the console is optional. The API handler keeps /admin/api.
 */
#define DR_MODULE "ingress/static"

#include <string.h>
#include <sys/stat.h>

#include "dr/log.h"
#include "http.h"

#ifndef DR_CONSOLE_INSTALL_DIR
#define DR_CONSOLE_INSTALL_DIR "/usr/local/share/drover/console"
#endif
#ifndef DR_CONSOLE_SOURCE_DIR
#define DR_CONSOLE_SOURCE_DIR ""
#endif

extern const char dr_openapi_json[];
extern const size_t dr_openapi_json_len;

static int is_dir(const char *p)
{
    struct stat sb;
    return p[0] != '\0' && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* http.console_dir, else the installed console, else (a binary run from its build tree) the sources. */
static const char *console_dir(const dr_settings_t *cfg)
{
    if (cfg->http_console_dir[0] != '\0')
        return cfg->http_console_dir;
    if (!is_dir(DR_CONSOLE_INSTALL_DIR) && is_dir(DR_CONSOLE_SOURCE_DIR))
        return DR_CONSOLE_SOURCE_DIR;
    return DR_CONSOLE_INSTALL_DIR;
}

static void serve_dir(h2o_hostconf_t *host, const char *prefix, const char *dir, uint64_t max_age)
{
    static const char *no_index[] = {NULL};
    h2o_pathconf_t *pc = h2o_config_register_path(host, prefix, 0);
    h2o_file_register(pc, dir, no_index, NULL, 0);
    h2o_expires_args_t ex = {.mode = H2O_EXPIRES_MODE_MAX_AGE, .data.max_age = max_age};
    h2o_expires_register(pc, &ex);
}

void static_register(h2o_hostconf_t *host, const dr_settings_t *cfg)
{
    const char *cdir = console_dir(cfg);
    /* Pages revalidate (ETag) on every load, so an upgrade shows at once; vendor files change
     * only with their packages. */
    serve_dir(host, "/admin/", cdir, 0);
    serve_dir(host, "/vendor/", cfg->http_vendor_dir, 3600);
    dr_log(DR_LOG_VERBOSE, "event=console console_dir=\"%s\" present=%d vendor_dir=\"%s\" present=%d", cdir,
           is_dir(cdir), cfg->http_vendor_dir, is_dir(cfg->http_vendor_dir));
}

static int path_is(const h2o_req_t *req, const char *p)
{
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    return plen == strlen(p) && memcmp(req->path.base, p, plen) == 0;
}

int static_route(hreq_t *hr)
{
    h2o_req_t *req = hr->req;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return 0;
    if (path_is(req, "/") || path_is(req, "/admin")) {
        h2o_send_redirect(req, 302, "Found", H2O_STRLIT("/admin/login.html"));
    } else if (path_is(req, "/v3/api-docs")) {
        http_json(hr, 200, dr_openapi_json, dr_openapi_json_len);
    } else if (path_is(req, "/swagger-ui.html")) {
        /* Duster's address of its API page: the console's page, Swagger UI from /vendor/swagger-ui/
         * (deploy/local/console-vendor.sh) reading /v3/api-docs. */
        h2o_send_redirect(req, 302, "Found", H2O_STRLIT("/admin/swagger.html"));
    } else {
        return 0;
    }
    hreq_release(hr);
    return 1;
}
