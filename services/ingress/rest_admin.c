/* Duster's admin API of registry clients (duster-compat.md §4.2: /admin/api/clients) and their
 * provisioning on the MQTT broker through Mosquitto's dynamic-security plugin.
 *
 * DESIGN
 * Each write is a short chain of asynchronous steps: validate the body (nothing is touched before
 * it is fully valid), hash a new password on libuv's thread pool, write the registry (dr/registry.h),
 * then, with registry.dynsec set, push the change to the broker and wait for its answer. The broker
 * answers on $CONTROL/dynamic-security/v1/response; a command group carries a correlation id and a
 * deadline, and any error the broker reports is answered 502 with its text. A create that the broker
 * refused is rolled back in the registry, so registry and broker agree; an update or delete the broker
 * refused stays done in the registry (retrying the request pushes it again) and is logged.
 *
 * Per client the broker gets a user of the same name and a role "drover-client-<name>" whose ACLs let
 * a DEVISE subscribe only to its command topic consumer/request/<id> and publish only its acks on
 * consumer/response/<id>, and let a MAN publish producer requests and read its own producer answers.
 */
#define DR_MODULE "ingress/rest_admin"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "dr/codec.h"
#include "dr/err.h"
#include "dr/log.h"
#include "dr/mem.h"
#include "dr/registry.h"
#include "http.h"

#define DYNSEC_TOPIC "$CONTROL/dynamic-security/v1"
#define DYNSEC_RESPONSE DYNSEC_TOPIC "/response"

/* ---- the dynamic-security connection ------------------------------------------------------------- */

/* Completion of a command group: err 0 and brokererr NULL when every command succeeded. */
typedef void dynsec_cb(void *data, int err, const char *brokererr);

typedef struct pending {
    LIST_ENTRY(pending) link;
    struct dynsec *ds;
    uint64_t seq;
    uv_timer_t timer;
    dynsec_cb *cb;
    void *data;
    int done;
} pending_t;

struct dynsec {
    ingress_t *in;
    dr_mqttc_t *mqtt;
    uint64_t seq;
    LIST_HEAD(, pending) pending;
};

static void on_pending_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Calls the group's callback once and frees it. */
static void finish_pending(pending_t *p, int err, const char *brokererr)
{
    if (p->done)
        return;
    p->done = 1;
    LIST_REMOVE(p, link);
    uv_timer_stop(&p->timer);
    p->cb(p->data, err, brokererr);
    uv_close((uv_handle_t *)&p->timer, on_pending_closed);
}

static void on_pending_timeout(uv_timer_t *t)
{
    pending_t *p = t->data;
    dr_log(DR_LOG_WARNING, "event=dynsec_timeout seq=%llu", (unsigned long long)p->seq);
    finish_pending(p, DR_ETIMEDOUT, NULL);
}

/* A response: {"responses":[{"command":..., "error":..., "correlationData":"<seq>:<i>"}, ...]}. The
 * first error of the group decides; commands the caller marked as tolerant ("?" in their correlation
 * id, e.g. deleting a role that may not exist) never fail it. */
static void on_dynsec_message(void *data, const dr_mqttc_msg_t *msg)
{
    struct dynsec *ds = data;
    json_t *j = json_loadb(msg->payload, msg->len, 0, NULL);
    json_t *rs = json_object_get(j, "responses");
    uint64_t seq = 0;
    const char *error = NULL, *cmd = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(rs, i, r)
    {
        const char *corr = json_string_value(json_object_get(r, "correlationData"));
        if (corr == NULL || strncmp(corr, "drover:", 7) != 0)
            continue;
        seq = strtoull(corr + 7, NULL, 10);
        const char *e = json_string_value(json_object_get(r, "error"));
        if (e && !error && strchr(corr, '?') == NULL) {
            error = e;
            cmd = json_string_value(json_object_get(r, "command"));
        }
    }
    pending_t *p;
    LIST_FOREACH(p, &ds->pending, link)
    {
        if (p->seq == seq && seq != 0) {
            char text[256];
            if (error) {
                snprintf(text, sizeof(text), "%s: %s", cmd ? cmd : "command", error);
                dr_log(DR_LOG_WARNING, "event=dynsec_refused seq=%llu error=\"%s\"", (unsigned long long)seq,
                       text);
            }
            finish_pending(p, 0, error ? text : NULL);
            break;
        }
    }
    json_decref(j);
}

static void on_dynsec_state(void *data, int connected, const char *reason)
{
    (void)data;
    if (connected)
        dr_log(DR_LOG_NOTICE, "event=dynsec_connected");
    else
        dr_log(DR_LOG_WARNING, "event=dynsec_disconnected reason=\"%s\"", reason ? reason : "");
}

int dynsec_start(ingress_t *in, char *err)
{
    const dr_settings_t *cfg = &in->node.cfg;
    if (!cfg->registry_dynsec)
        return 0;
    if (cfg->registry_dynsec_username[0] == '\0') {
        snprintf(err, DR_ERR_LEN, "registry.dynsec=1 needs registry.dynsec_username (and its password)");
        return DR_ECONFIG;
    }
    struct dynsec *ds = dr_calloc(1, sizeof(*ds));
    ds->in = in;
    LIST_INIT(&ds->pending);
    char client_id[160];
    snprintf(client_id, sizeof(client_id), "drover-dynsec-%s", cfg->node_id);
    dr_mqttc_options_t mo = {
        .url = cfg->mqtt_url,
        .client_id = client_id,
        .username = cfg->registry_dynsec_username,
        .password = cfg->registry_dynsec_password,
        .keepalive_s = (int)cfg->mqtt_keepalive_s,
        .clean_session = 1, /* answers to an earlier connection's commands are of no use */
    };
    if (cfg->mqtt_tls) { /* the same broker and trust as the ingress's own connection */
        mo.ca_file = cfg->mqtt_tls_ca[0] ? cfg->mqtt_tls_ca : NULL;
        mo.cert_file = cfg->mqtt_tls_cert[0] ? cfg->mqtt_tls_cert : NULL;
        mo.key_file = cfg->mqtt_tls_key[0] ? cfg->mqtt_tls_key : NULL;
        mo.tls_insecure = !cfg->mqtt_tls_verify;
    }
    if (dr_mqttc_open(in->node.loop.uv, &mo, &ds->mqtt, err) != 0) {
        free(ds);
        return DR_ECONFIG;
    }
    dr_mqttc_subscribe(ds->mqtt, DYNSEC_RESPONSE, 1);
    dr_mqttc_on_message(ds->mqtt, on_dynsec_message, ds);
    dr_mqttc_on_state(ds->mqtt, on_dynsec_state, ds);
    dr_mqttc_start(ds->mqtt);
    in->dynsec = ds;
    return 0;
}

void dynsec_stop(ingress_t *in)
{
    struct dynsec *ds = in->dynsec;
    if (ds == NULL)
        return;
    while (!LIST_EMPTY(&ds->pending))
        finish_pending(LIST_FIRST(&ds->pending), DR_ECLOSED, NULL);
    dr_mqttc_free(ds->mqtt);
    free(ds);
    in->dynsec = NULL;
}

/* Sends the commands (a JSON array, taken over) as one group. Returns 0 (cb called once) or an error. */
static int dynsec_send(ingress_t *in, json_t *cmds, dynsec_cb *cb, void *data)
{
    struct dynsec *ds = in->dynsec;
    if (ds == NULL || !dr_mqttc_connected(ds->mqtt)) {
        json_decref(cmds);
        return DR_EUNAVAIL;
    }
    uint64_t seq = ++ds->seq;
    size_t i;
    json_t *c;
    json_array_foreach(cmds, i, c)
    {
        char corr[64];
        int tolerant = json_is_true(json_object_get(c, "_tolerant"));
        json_object_del(c, "_tolerant");
        snprintf(corr, sizeof(corr), "drover:%llu:%zu%s", (unsigned long long)seq, i, tolerant ? "?" : "");
        json_object_set_new(c, "correlationData", json_string(corr));
    }
    json_t *msg = json_pack("{s:o}", "commands", cmds);
    char *payload = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    pending_t *p = dr_calloc(1, sizeof(*p));
    int rc = dr_mqttc_publish(ds->mqtt, DYNSEC_TOPIC, payload, strlen(payload), 1, NULL, NULL);
    memset(payload, 0, strlen(payload)); /* it may carry a password */
    free(payload);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->ds = ds;
    p->seq = seq;
    p->cb = cb;
    p->data = data;
    uv_timer_init(in->node.loop.uv, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_pending_timeout, (uint64_t)in->node.cfg.registry_dynsec_timeout_ms, 0);
    LIST_INSERT_HEAD(&ds->pending, p, link);
    return 0;
}

static void role_name(const char *client, char *buf, size_t cap)
{
    snprintf(buf, cap, "drover-client-%s", client);
}

static json_t *acl(const char *type, const char *base, const char *id)
{
    char topic[320];
    snprintf(topic, sizeof(topic), "%s%s", base, id);
    return json_pack("{s:s, s:s, s:i, s:b}", "acltype", type, "topic", topic, "priority", 0, "allow", 1);
}

/* The commands that (re)create a client's role with the ACLs of its role. */
static void add_role_cmds(json_t *cmds, const char *name, int role)
{
    char rn[320];
    role_name(name, rn, sizeof(rn));
    json_t *acls = json_array();
    if (role == DR_REG_MAN) {
        json_array_append_new(acls, acl("publishClientSend", "producer/request/", "#"));
        json_array_append_new(acls, acl("subscribeLiteral", "producer/response/", name));
        json_array_append_new(acls, acl("subscribeLiteral", "producer/error/", name));
    } else {
        json_array_append_new(acls, acl("subscribeLiteral", "consumer/request/", name));
        json_array_append_new(acls, acl("publishClientSend", "consumer/response/", name));
    }
    json_array_append_new(
        cmds, json_pack("{s:s, s:s, s:b}", "command", "deleteRole", "rolename", rn, "_tolerant", 1));
    json_array_append_new(
        cmds, json_pack("{s:s, s:s, s:o}", "command", "createRole", "rolename", rn, "acls", acls));
}

/* ---- helpers ------------------------------------------------------------------------------------- */

static json_t *client_json(const dr_reg_client_t *c)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:b, s:I, s:I}", "id", (json_int_t)c->id, "deviseId", c->devise_id,
                     "role", dr_reg_role_name(c->role), "description", c->description, "enabled", c->enabled,
                     "createdAt", (json_int_t)c->created_ms, "updatedAt", (json_int_t)c->updated_ms);
}

static void send_json(hreq_t *hr, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_json(hr, status, s, strlen(s));
    free(s);
    json_decref(j);
}

static void unavailable(hreq_t *hr)
{
    http_add_header(hr, "retry-after", "1");
    rest_auth_error(hr, 503, "the registry is unavailable; nothing was changed, retry later");
}

/* Optional string field: 0 absent or null, 1 present (*out set), -1 not a string (answered 400). */
static int opt_str(hreq_t *hr, json_t *o, const char *name, const char **out)
{
    json_t *v = json_object_get(o, name);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        rest_auth_error(hr, 400, "%s must be a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 1;
}

/* ---- a write in progress ------------------------------------------------------------------------- */

enum { OP_CREATE, OP_UPDATE, OP_DELETE };

typedef struct {
    hreq_t *hr;
    int op;
    char name[256];
    char *desc;                        /* NULL: unchanged (update) */
    int role;                          /* -1: unchanged (update) */
    int enabled;                       /* -1: unchanged (update) */
    char *pw;                          /* plaintext to hash and push, or NULL */
    char hash[DR_PASSWD_HASH_LEN + 1]; /* "" : unchanged */
    int old_role, old_enabled;
    json_t *answer; /* the client as answered, once written */
    int status;     /* the HTTP status of success */
} wr_t;

static void wr_free(wr_t *w)
{
    if (w->pw) {
        memset(w->pw, 0, strlen(w->pw));
        free(w->pw);
    }
    free(w->desc);
    json_decref(w->answer);
    hreq_release(w->hr);
    free(w);
}

static void wr_answer(wr_t *w)
{
    if (w->status == 204) {
        http_empty(w->hr, 204);
    } else {
        json_t *a = w->answer;
        w->answer = NULL;
        send_json(w->hr, w->status, a);
    }
    wr_free(w);
}

static void on_rolled_back(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                           int64_t aux)
{
    (void)err, (void)errstr, (void)result, (void)c, (void)aux;
    wr_free(data);
}

static void on_pushed(void *data, int err, const char *brokererr)
{
    wr_t *w = data;
    ingress_t *in = w->hr->in;
    if (err == 0 && brokererr == NULL) {
        wr_answer(w);
        return;
    }
    char why[320];
    snprintf(why, sizeof(why), "%s",
             brokererr             ? brokererr
             : err == DR_ETIMEDOUT ? "no answer from the broker in time"
                                   : dr_strerror(err));
    dr_log(DR_LOG_WARNING, "event=dynsec_push_failed op=%d client=\"%s\" error=\"%s\"", w->op, w->name, why);
    if (w->op == OP_CREATE) {
        rest_auth_error(w->hr, 502, "the broker refused the new client (%s); it was not created", why);
        if (dr_reg_delete(in->node.redis, &in->store, 0, w->name, on_rolled_back, w) != 0)
            wr_free(w);
        return;
    }
    rest_auth_error(w->hr, 502, "the registry was changed but the broker was not (%s); retry the request",
                    why);
    wr_free(w);
}

/* Pushes the registry change to the broker when registry.dynsec is set, then answers. */
static void push(wr_t *w)
{
    ingress_t *in = w->hr->in;
    if (!in->node.cfg.registry_dynsec) {
        wr_answer(w);
        return;
    }
    json_t *cmds = json_array();
    char rn[320];
    role_name(w->name, rn, sizeof(rn));
    if (w->op == OP_CREATE) {
        add_role_cmds(cmds, w->name, w->role);
        json_t *c = json_pack("{s:s, s:s, s:[{s:s, s:i}]}", "command", "createClient", "username", w->name,
                              "roles", "rolename", rn, "priority", 0);
        if (w->pw)
            json_object_set_new(c, "password", json_string(w->pw));
        json_array_append_new(cmds, c);
        if (!w->enabled)
            json_array_append_new(cmds,
                                  json_pack("{s:s, s:s}", "command", "disableClient", "username", w->name));
    } else if (w->op == OP_UPDATE) {
        if (w->role >= 0 && w->role != w->old_role) {
            add_role_cmds(cmds, w->name, w->role);
            json_array_append_new(cmds, json_pack("{s:s, s:s, s:s, s:i}", "command", "addClientRole",
                                                  "username", w->name, "rolename", rn, "priority", 0));
        }
        if (w->pw)
            json_array_append_new(cmds, json_pack("{s:s, s:s, s:s}", "command", "setClientPassword",
                                                  "username", w->name, "password", w->pw));
        if (w->enabled >= 0 && w->enabled != w->old_enabled)
            json_array_append_new(cmds, json_pack("{s:s, s:s}", "command",
                                                  w->enabled ? "enableClient" : "disableClient", "username",
                                                  w->name));
    } else {
        json_array_append_new(cmds, json_pack("{s:s, s:s}", "command", "deleteClient", "username", w->name));
        json_array_append_new(
            cmds, json_pack("{s:s, s:s, s:b}", "command", "deleteRole", "rolename", rn, "_tolerant", 1));
    }
    if (json_array_size(cmds) == 0) {
        json_decref(cmds);
        wr_answer(w);
        return;
    }
    int rc = dynsec_send(in, cmds, on_pushed, w);
    if (rc != 0)
        on_pushed(w, rc, rc == DR_EUNAVAIL ? "no connection to the broker's dynamic-security plugin" : NULL);
}

/* ---- GET /admin/api/clients ---------------------------------------------------------------------- */

static void on_list(void *data, int err, const char *errstr, const dr_reg_client_t *c, size_t n, int more)
{
    (void)errstr;
    hreq_t *hr = data;
    if (err != 0) {
        unavailable(hr);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, client_json(&c[i]));
        if (more && n > 0)
            http_add_header(hr, "x-next-after", c[n - 1].devise_id);
        send_json(hr, 200, a);
    }
    hreq_release(hr);
}

void admin_list(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, admin_list))
        return;
    char search[256] = "", after[256] = "", lim[32] = "";
    long long limit = 1000;
    if (http_query(hr, "limit", lim, sizeof(lim))) {
        char *e;
        limit = strtoll(lim, &e, 10);
        if (*e != '\0' || e == lim || limit < 1 || limit > 1000) {
            rest_auth_error(hr, 400, "limit must be an integer in [1, 1000]");
            hreq_release(hr);
            return;
        }
    }
    size_t max = (size_t)hr->in->node.cfg.ingress_max_device_id;
    if ((http_query(hr, "search", search, sizeof(search)) && search[0] &&
         dr_codec_check_id(search, strlen(search), max) != 0) ||
        (http_query(hr, "after", after, sizeof(after)) && after[0] &&
         dr_codec_check_id(after, strlen(after), max) != 0)) {
        rest_auth_error(
            hr, 400,
            "search and after must be (parts of) client ids: 1..%zu bytes without '/', '+', '#' or "
            "control characters",
            max);
        hreq_release(hr);
        return;
    }
    if (dr_reg_list(hr->in->node.redis, &hr->in->store, search, after, limit, on_list, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}

/* ---- GET /admin/api/clients/{id} ----------------------------------------------------------------- */

static void on_get(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c, int64_t aux)
{
    (void)errstr, (void)aux;
    hreq_t *hr = data;
    if (err != 0)
        unavailable(hr);
    else if (result != DR_REG_OK)
        rest_auth_error(hr, 404, "client %lld not found", (long long)hr->id);
    else
        send_json(hr, 200, client_json(c));
    hreq_release(hr);
}

void admin_get(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, admin_get))
        return;
    if (dr_reg_get(hr->in->node.redis, &hr->in->store, hr->id, NULL, on_get, hr) != 0) {
        unavailable(hr);
        hreq_release(hr);
    }
}

/* ---- body of POST and PUT ------------------------------------------------------------------------ */

/* Reads and checks every field; answers 400 itself and returns NULL on any bad field. */
static wr_t *parse_client(hreq_t *hr, int op)
{
    size_t len;
    const char *body = http_body(hr, &len);
    if (len == (size_t)-1)
        return NULL;
    if (body == NULL || len == 0) {
        rest_auth_error(hr, 400, "a JSON body is required");
        return NULL;
    }
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL || !json_is_object(o)) {
        rest_auth_error(hr, 400, "the body is not a JSON object%s%s", o ? "" : ": ", o ? "" : je.text);
        json_decref(o);
        return NULL;
    }
    const char *name = NULL, *pw = NULL, *ph = NULL, *role = NULL, *desc = NULL;
    int hn, hp, hh, hrl, hd;
    if ((hn = opt_str(hr, o, "deviseId", &name)) < 0 || (hp = opt_str(hr, o, "password", &pw)) < 0 ||
        (hh = opt_str(hr, o, "passwordHash", &ph)) < 0 || (hrl = opt_str(hr, o, "role", &role)) < 0 ||
        (hd = opt_str(hr, o, "description", &desc)) < 0)
        goto bad;
    json_t *en = json_object_get(o, "enabled");
    if (en != NULL && !json_is_null(en) && !json_is_boolean(en)) {
        rest_auth_error(hr, 400, "enabled must be true or false");
        goto bad;
    }
    size_t max = (size_t)hr->in->node.cfg.ingress_max_device_id;
    if (op == OP_CREATE && (!hn || dr_codec_check_id(name, strlen(name), max) != 0)) {
        rest_auth_error(
            hr, 400, "deviseId is required: 1..%zu bytes without '/', '+', '#' or control characters", max);
        goto bad;
    }
    if (hp && pw[0] == '\0')
        hp = 0; /* Duster: an empty password keeps the old one */
    if (op == OP_CREATE && !hp && !hh) {
        rest_auth_error(hr, 400, "password (or passwordHash, a bcrypt hash) is required");
        goto bad;
    }
    if (hp && hh) {
        rest_auth_error(hr, 400, "give password or passwordHash, not both");
        goto bad;
    }
    if (hp && strlen(pw) > DR_PASSWD_MAX) {
        rest_auth_error(hr, 400, "password is longer than %d bytes (bcrypt reads no more)", DR_PASSWD_MAX);
        goto bad;
    }
    if (hh && !dr_passwd_is_hash(ph)) {
        rest_auth_error(hr, 400, "passwordHash must be a bcrypt hash ($2a$, $2b$ or $2y$)");
        goto bad;
    }
    int r = hrl ? dr_reg_role_parse(role) : (op == OP_CREATE ? DR_REG_DEVISE : -1);
    if (hrl && r < 0) {
        rest_auth_error(hr, 400, "role must be DEVISE or MAN");
        goto bad;
    }
    if (hd && strlen(desc) > DR_REG_MAX_DESC) {
        rest_auth_error(hr, 400, "description is longer than %d bytes", DR_REG_MAX_DESC);
        goto bad;
    }
    wr_t *w = dr_calloc(1, sizeof(*w));
    w->hr = hr;
    w->op = op;
    snprintf(w->name, sizeof(w->name), "%s", hn ? name : "");
    w->desc = hd ? dr_strdup(desc) : op == OP_CREATE ? dr_strdup("") : NULL;
    w->role = r;
    w->enabled = en && json_is_boolean(en) ? json_is_true(en) : op == OP_CREATE ? 1 : -1;
    w->pw = hp ? dr_strdup(pw) : NULL;
    if (hh)
        memcpy(w->hash, ph, DR_PASSWD_HASH_LEN + 1);
    json_decref(o);
    return w;
bad:
    json_decref(o);
    return NULL;
}

/* ---- POST /admin/api/clients --------------------------------------------------------------------- */

static void on_created(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                       int64_t aux)
{
    (void)errstr, (void)aux;
    wr_t *w = data;
    if (err != 0) {
        unavailable(w->hr);
    } else if (result == DR_REG_EXISTS) {
        rest_auth_error(w->hr, 409, "client %s exists", w->name);
    } else {
        dr_log(DR_LOG_NOTICE, "event=client_created client=\"%s\" role=%s by=%s", c->devise_id,
               dr_reg_role_name(c->role), w->hr->who.client[0] ? w->hr->who.client : w->hr->who.key_id);
        w->answer = client_json(c);
        w->status = 201;
        push(w);
        return;
    }
    wr_free(w);
}

static void create_write(wr_t *w)
{
    ingress_t *in = w->hr->in;
    if (dr_reg_create(in->node.redis, &in->store, w->name, w->desc, w->role, w->hash, w->enabled, on_created,
                      w) != 0) {
        unavailable(w->hr);
        wr_free(w);
    }
}

static void update_write(wr_t *w);

static void on_hashed(void *data, int err, int match, const char *hash)
{
    (void)match;
    wr_t *w = data;
    if (err != 0) {
        rest_auth_error(w->hr, 500, "hashing the password failed");
        wr_free(w);
        return;
    }
    memcpy(w->hash, hash, DR_PASSWD_HASH_LEN + 1);
    if (w->op == OP_CREATE)
        create_write(w);
    else
        update_write(w);
}

/* Hashes the new password on the thread pool, if there is one, then writes. */
static void hash_then_write(wr_t *w)
{
    if (w->pw == NULL) {
        if (w->op == OP_CREATE)
            create_write(w);
        else
            update_write(w);
        return;
    }
    ingress_t *in = w->hr->in;
    if (dr_passwd_hash_async(in->node.loop.uv, w->pw, (int)in->node.cfg.auth_bcrypt_cost, on_hashed, w) !=
        0) {
        rest_auth_error(w->hr, 500, "cannot queue the password hash");
        wr_free(w);
    }
}

void admin_create(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, admin_create))
        return;
    wr_t *w = parse_client(hr, OP_CREATE);
    if (w == NULL) {
        hreq_release(hr);
        return;
    }
    hash_then_write(w);
}

/* ---- PUT /admin/api/clients/{id} ----------------------------------------------------------------- */

static void on_updated(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                       int64_t revoked)
{
    (void)errstr;
    wr_t *w = data;
    if (err != 0) {
        unavailable(w->hr);
    } else if (result != DR_REG_OK) {
        rest_auth_error(w->hr, 404, "client %lld not found", (long long)w->hr->id);
    } else {
        dr_log(DR_LOG_NOTICE, "event=client_updated client=\"%s\" tokens_revoked=%lld by=%s", c->devise_id,
               (long long)revoked, w->hr->who.client[0] ? w->hr->who.client : w->hr->who.key_id);
        w->answer = client_json(c);
        w->status = 200;
        push(w);
        return;
    }
    wr_free(w);
}

static void update_write(wr_t *w)
{
    ingress_t *in = w->hr->in;
    dr_reg_change_t ch = {
        .description = w->desc, .role = w->role, .hash = w->hash[0] ? w->hash : NULL, .enabled = w->enabled};
    if (dr_reg_update(in->node.redis, &in->store, w->hr->id, &ch, on_updated, w) != 0) {
        unavailable(w->hr);
        wr_free(w);
    }
}

static void on_update_target(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                             int64_t aux)
{
    (void)errstr, (void)aux;
    wr_t *w = data;
    if (err != 0) {
        unavailable(w->hr);
    } else if (result != DR_REG_OK) {
        rest_auth_error(w->hr, 404, "client %lld not found", (long long)w->hr->id);
    } else if (w->name[0] && strcmp(w->name, c->devise_id) != 0) {
        rest_auth_error(w->hr, 400, "deviseId cannot be changed (create a new client and delete this one)");
    } else {
        snprintf(w->name, sizeof(w->name), "%s", c->devise_id);
        w->old_role = c->role;
        w->old_enabled = c->enabled;
        hash_then_write(w);
        return;
    }
    wr_free(w);
}

void admin_update(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, admin_update))
        return;
    wr_t *w = parse_client(hr, OP_UPDATE);
    if (w == NULL) {
        hreq_release(hr);
        return;
    }
    if (dr_reg_get(hr->in->node.redis, &hr->in->store, hr->id, NULL, on_update_target, w) != 0) {
        unavailable(hr);
        wr_free(w);
    }
}

/* ---- DELETE /admin/api/clients/{id} -------------------------------------------------------------- */

static void on_deleted(void *data, int err, const char *errstr, int result, const dr_reg_client_t *c,
                       int64_t aux)
{
    (void)errstr, (void)aux;
    wr_t *w = data;
    if (err != 0) {
        unavailable(w->hr);
    } else if (result != DR_REG_OK) {
        rest_auth_error(w->hr, 404, "client %lld not found", (long long)w->hr->id);
    } else {
        dr_log(DR_LOG_NOTICE, "event=client_deleted client=\"%s\" by=%s", c->devise_id,
               w->hr->who.client[0] ? w->hr->who.client : w->hr->who.key_id);
        snprintf(w->name, sizeof(w->name), "%s", c->devise_id);
        w->status = 204;
        push(w);
        return;
    }
    wr_free(w);
}

void admin_delete(hreq_t *hr)
{
    if (!rest_auth_gate(hr, 1, admin_delete))
        return;
    wr_t *w = dr_calloc(1, sizeof(*w));
    w->hr = hr;
    w->op = OP_DELETE;
    w->role = w->enabled = -1;
    if (dr_reg_delete(hr->in->node.redis, &hr->in->store, hr->id, NULL, on_deleted, w) != 0) {
        unavailable(hr);
        wr_free(w);
    }
}
