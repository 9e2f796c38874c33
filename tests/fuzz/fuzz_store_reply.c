/* libFuzzer target for the Redis reply parsers of common/src/store.c (parse_* and on_reply).
 *
 * store.c is included to reach its statics. The input builds a redisReply tree the way hiredis lays
 * one out for RESP2 (arrays nested up to MAX_DEPTH, strings with exactly len + 1 bytes, integers,
 * nil, status and error replies), so that AddressSanitizer sees any read past a string, past an
 * array's elements or into a nil. Byte 0 picks the parser and which error the Redis client reports
 * (as dr/redis.h promises: err 0 with a non-error reply, DR_EREDIS with an error reply, or a
 * transport error with no reply); the rest is the tree, pre-order.
 *
 * Oracles: the callback is called exactly once (never for parse_int without a callback); with a
 * transport or Redis error it gets that error and no result; a reply it cannot use gives DR_EREDIS
 * with "unexpected reply" and no result; otherwise the result is well formed: counts follow the
 * reply's array sizes, every string points at a string of the reply (or is ""), and statuses,
 * guarantees and codes are in range. */
#include "../../common/src/store.c"

#include <stdint.h>

/* The function library is never loaded here (dr_store_register is not called). */
const char dr_store_library[] = "";

#define MAX_DEPTH 4
#define MAX_NODES 4096
#define MAX_ELEMENTS 40

static void check(int ok)
{
    if (!ok)
        abort();
}

/* ---- reply trees -------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n, pos;
    const char *strs[MAX_NODES]; /* every string of the tree, for the pointer checks */
    size_t nstrs, nodes;
} src_t;

static uint8_t take(src_t *s)
{
    return s->pos < s->n ? s->p[s->pos++] : 0;
}

/* Words the parsers look for, so that short inputs reach past the code checks. */
static const char *const words[] = {
    "OK", "DUP", "CONFLICT", "FULL", "IGNORED", "WRONG_DEVICE", "UNKNOWN_ID", "FENCED", "MSG", "NONE", "pull",
    "", "0", "1", "-1", "42", "1700000000000", "9223372036854775807", "1-0", "COMPLETED_WITH_ERROR",
    "COMPLETED", "DELIVERED", "NOT_DELIVERED", "CANCELLED", "UNKNOWN", "EXPIRED", "FAILED", "PURGED", "NO",
    "RECEIPT_CONFIRMATION", "ONLY_LAST", "{\"a\":1}", "accepted", "sent", "ack",
};

static redisReply *node(int type)
{
    redisReply *r = dr_calloc(1, sizeof(*r));
    r->type = type;
    return r;
}

static redisReply *str_node(src_t *s, int type, const char *txt, size_t len)
{
    redisReply *r = node(type);
    r->str = dr_malloc(len + 1);
    if (len > 0)
        memcpy(r->str, txt, len);
    r->str[len] = '\0';
    r->len = len;
    if (s->nstrs < MAX_NODES)
        s->strs[s->nstrs++] = r->str;
    return r;
}

static redisReply *build(src_t *s, int depth)
{
    uint8_t t = take(s);
    if (++s->nodes > MAX_NODES || s->pos >= s->n)
        t = 0;
    switch (t % 8) {
    case 0:
        return node(REDIS_REPLY_NIL);
    case 1:
    case 2: {
        if (depth >= MAX_DEPTH)
            return node(REDIS_REPLY_NIL);
        redisReply *r = node(REDIS_REPLY_ARRAY);
        r->elements = take(s) % (MAX_ELEMENTS + 1);
        if (r->elements > 0) { /* hiredis leaves element NULL for an empty array */
            r->element = dr_malloc(r->elements * sizeof(*r->element));
            for (size_t i = 0; i < r->elements; i++)
                r->element[i] = build(s, depth + 1);
        }
        return r;
    }
    case 3: {
        redisReply *r = node(REDIS_REPLY_INTEGER);
        uint8_t v = take(s);
        if (v & 1) {
            r->integer = (int8_t)v >> 1;
        } else {
            for (int i = 0; i < 8; i++)
                r->integer = (long long)((unsigned long long)r->integer << 8 | take(s));
        }
        return r;
    }
    case 4:
    case 5: {
        const char *w = words[take(s) % (sizeof(words) / sizeof(words[0]))];
        return str_node(s, t % 8 == 4 ? REDIS_REPLY_STRING : REDIS_REPLY_STATUS, w, strlen(w));
    }
    default: { /* raw bytes, embedded NULs included */
        size_t len = take(s) % 48;
        if (len > s->n - s->pos)
            len = s->n - s->pos;
        redisReply *r = str_node(s, t % 8 == 6 ? REDIS_REPLY_STRING : REDIS_REPLY_ERROR, (const char *)s->p + s->pos, len);
        s->pos += len;
        return r;
    }
    }
}

static void free_tree(redisReply *r)
{
    for (size_t i = 0; i < r->elements; i++)
        free_tree(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* ---- result checks ------------------------------------------------------------------------------ */

static struct {
    src_t src;
    redisReply *reply; /* what the parser was given (NULL for a transport error) */
    int err;           /* the error the client reported */
    int calls;
} g;

static void check_str(const char *p)
{
    check(p != NULL);
    if (p[0] == '\0')
        return;
    for (size_t i = 0; i < g.src.nstrs; i++)
        if (g.src.strs[i] == p)
            return;
    abort(); /* neither "" nor a string of the reply */
}

static const redisReply *elem(const redisReply *r, size_t i)
{
    check(r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements);
    return r->element[i];
}

static void check_status(int st)
{
    check((st >= 0 && st < DR_ST_COUNT) || st == -1);
}

static void check_notes(const dr_note_t *notes, size_t n, const redisReply *from)
{
    check(from->type == REDIS_REPLY_ARRAY && from->elements % NOTE_FIELDS == 0 && n == from->elements / NOTE_FIELDS);
    check((n == 0) == (notes == NULL));
    for (size_t i = 0; i < n; i++) {
        check_str(notes[i].log_id);
        check_str(notes[i].after);
        check_str(notes[i].dev);
        check_str(notes[i].pd);
        check_status(notes[i].status);
        check(notes[i].ext == 0 || notes[i].ext == 1);
    }
}

static void check_send(const dr_store_send_t *s)
{
    check_str(s->dev);
    check_str(s->command);
    check(s->data == NULL || (s->data[0] != '\0' && (check_str(s->data), 1)));
    check(s->guarantee >= -1 && s->guarantee < DR_G_COUNT);
}

/* Common to every callback: called once; errors carry what the client reported or the shape error. */
static int outcome(int err, const char *errstr)
{
    g.calls++;
    check(g.calls == 1);
    if (g.err != 0) {
        check(err == g.err && errstr != NULL);
        if (g.err == DR_EREDIS)
            check(errstr == g.reply->str);
        else
            check(strcmp(errstr, dr_strerror(g.err)) == 0);
        return 0;
    }
    if (err != 0) {
        check(err == DR_EREDIS && errstr != NULL && strcmp(errstr, UNEXPECTED) == 0);
        return 0;
    }
    check(errstr == NULL);
    return 1;
}

static void on_accept(void *data, int err, const char *errstr, const dr_store_accept_res_t *res, size_t n,
                      const dr_note_t *notes, size_t nnotes)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(res == NULL && n == 0 && notes == NULL && nnotes == 0);
        return;
    }
    const redisReply *out = elem(g.reply, 0);
    check(res != NULL && out->type == REDIS_REPLY_ARRAY && out->elements % 4 == 0 && n == out->elements / 4);
    for (size_t i = 0; i < n; i++) {
        check(res[i].code >= DR_STORE_OK && res[i].code <= DR_STORE_FULL);
        check_status(res[i].status);
    }
    check_notes(notes, nnotes, elem(g.reply, 1));
}

static void on_ack(void *data, int err, const char *errstr, const dr_store_ack_res_t *res, size_t n,
                   const dr_note_t *notes, size_t nnotes)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(res == NULL && n == 0 && notes == NULL && nnotes == 0);
        return;
    }
    const redisReply *out = elem(g.reply, 0);
    check(res != NULL && out->type == REDIS_REPLY_ARRAY && out->elements % 3 == 0 && n == out->elements / 3);
    for (size_t i = 0; i < n; i++) {
        check(res[i].code >= DR_STORE_ACK_OK && res[i].code <= DR_STORE_ACK_UNKNOWN_ID);
        check(res[i].code == DR_STORE_ACK_OK || res[i].age_ms == -1);
        check_status(res[i].status);
    }
    check_notes(notes, nnotes, elem(g.reply, 1));
}

static void on_pass(void *data, int err, const char *errstr, const dr_store_pass_t *pass)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(pass == NULL);
        return;
    }
    check(pass != NULL);
    if (pass->fenced) {
        check(pass->nsends == 0 && pass->nnotes == 0 && pass->sends == NULL && pass->notes == NULL);
        return;
    }
    const redisReply *out = elem(g.reply, 5);
    check(out->type == REDIS_REPLY_ARRAY && out->elements % SEND_FIELDS == 0 && pass->nsends == out->elements / SEND_FIELDS);
    check(pass->more == 0 || pass->more == 1);
    for (size_t i = 0; i < pass->nsends; i++)
        check_send(&pass->sends[i]);
    check_notes(pass->notes, pass->nnotes, elem(g.reply, 6));
}

/* dispatch_many: two requests (shards 1 and 3), each answered once, in order. */
static uint32_t many_shards[2] = {1, 3};

static void on_pass_many(void *data, int err, const char *errstr, const dr_store_pass_t *pass)
{
    g.calls++;
    check(g.calls <= 2 && data == &many_shards[g.calls - 1]);
    if (g.err != 0) {
        check(err == g.err && errstr != NULL && pass == NULL);
        return;
    }
    if (err != 0) {
        check(err == DR_EREDIS && errstr != NULL && strcmp(errstr, UNEXPECTED) == 0 && pass == NULL);
        return;
    }
    check(errstr == NULL && pass != NULL);
    if (pass->fenced || pass->later) {
        check(pass->nsends == 0 && pass->nnotes == 0);
        return;
    }
    check(pass->more == 0 || pass->more == 1);
    const redisReply *out = elem(g.reply, 1), *notes = elem(g.reply, 2);
    check(pass->nsends <= out->elements / (SEND_FIELDS + 1) && pass->nnotes <= notes->elements / NOTE_FIELDS);
    for (size_t i = 0; i < pass->nsends; i++)
        check_send(&pass->sends[i]);
    for (size_t i = 0; i < pass->nnotes; i++) {
        check_str(pass->notes[i].log_id);
        check_str(pass->notes[i].after);
        check_str(pass->notes[i].dev);
        check_str(pass->notes[i].pd);
        check_status(pass->notes[i].status);
    }
}

static void on_int(void *data, int err, const char *errstr, int64_t result)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(result == 0);
        return;
    }
    check(g.reply->type == REDIS_REPLY_INTEGER ? result == g.reply->integer : result == -1);
}

static void on_layout(void *data, int err, const char *errstr, int64_t result)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(result == 0);
        return;
    }
    check(result == 1 && (g.reply->type == REDIS_REPLY_STATUS || g.reply->type == REDIS_REPLY_STRING));
}

static void on_heads(void *data, int err, const char *errstr, const int64_t *due, size_t n)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(due == NULL && n == 0);
        return;
    }
    check(due != NULL && g.reply->type == REDIS_REPLY_ARRAY && n == g.reply->elements);
}

static void on_strs(void *data, int err, const char *errstr, const char *const *v, size_t n)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(v == NULL && n == 0);
        return;
    }
    check(v != NULL && g.reply->type == REDIS_REPLY_ARRAY && n == g.reply->elements);
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = g.reply->element[i];
        int text = e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS;
        check(v[i] != NULL && (text ? strcmp(v[i], e->str) == 0 : v[i][0] == '\0'));
    }
}

static void on_backlog(void *data, int err, const char *errstr, const dr_store_backlog_t *res)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(res == NULL);
        return;
    }
    check(res != NULL && g.reply->type == REDIS_REPLY_ARRAY && g.reply->elements >= 5);
}

static void on_reclaim(void *data, int err, const char *errstr, const dr_note_t *notes, size_t n, int64_t lost)
{
    (void)data;
    (void)lost;
    if (!outcome(err, errstr)) {
        check(notes == NULL && n == 0);
        return;
    }
    check_notes(notes, n, elem(g.reply, 0));
}

static void on_lease(void *data, int err, const char *errstr, const dr_store_lease_t *held, size_t n)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(held == NULL && n == 0);
        return;
    }
    check(held != NULL && g.reply->type == REDIS_REPLY_ARRAY && n == g.reply->elements / 2);
}

static void on_cancel(void *data, int err, const char *errstr, const dr_store_cancel_res_t *res,
                      const dr_note_t *notes, size_t nnotes)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(res == NULL && notes == NULL && nnotes == 0);
        return;
    }
    check(res != NULL && res->code >= DR_STORE_CANCEL_OK && res->code <= DR_STORE_CANCEL_NOT_FOUND);
    check_str(res->dev);
    check_status(res->status);
    check_notes(notes, nnotes, elem(g.reply, 1));
}

static void on_purge(void *data, int err, const char *errstr, int64_t purged, int more, const char *cursor,
                     const dr_note_t *notes, size_t nnotes)
{
    (void)data;
    (void)purged;
    if (!outcome(err, errstr)) {
        check(more == 0 && cursor != NULL && notes == NULL && nnotes == 0);
        return;
    }
    check(more == 0 || more == 1);
    check_str(cursor);
    check_notes(notes, nnotes, elem(g.reply, 1));
}

static void on_pull(void *data, int err, const char *errstr, const dr_store_send_t *msg, int64_t due_in_ms,
                    const dr_note_t *notes, size_t nnotes)
{
    (void)data;
    (void)due_in_ms;
    if (!outcome(err, errstr)) {
        check(msg == NULL && notes == NULL && nnotes == 0);
        return;
    }
    if (msg != NULL)
        check_send(msg);
    check_notes(notes, nnotes, elem(g.reply, 1));
}

static void on_peek(void *data, int err, const char *errstr, const dr_store_send_t *msg)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(msg == NULL);
        return;
    }
    check(g.reply->type == REDIS_REPLY_ARRAY && (msg == NULL) == (g.reply->elements == 0));
    if (msg != NULL)
        check_send(msg);
}

static void on_devinfo(void *data, int err, const char *errstr, const dr_store_devinfo_t *info)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(info == NULL);
        return;
    }
    check(info != NULL);
    check_str(info->mode);
}

static void on_get(void *data, int err, const char *errstr, const dr_store_msg_t *msgs, size_t n)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(msgs == NULL && n == 0);
        return;
    }
    check(msgs != NULL && g.reply->type == REDIS_REPLY_ARRAY && n == g.reply->elements);
    for (size_t i = 0; i < n; i++) {
        const dr_store_msg_t *m = &msgs[i];
        const redisReply *o = elem(g.reply, i);
        check(o->type == REDIS_REPLY_ARRAY && m->found == (o->elements != 0));
        if (!m->found)
            continue;
        check_str(m->dev);
        check_str(m->command);
        check(m->data == NULL || (m->data[0] != '\0' && (check_str(m->data), 1)));
        check_str(m->pd);
        check_str(m->idem_key);
        check_str(m->key_id);
        check_status(m->status);
        check(m->guarantee >= -1 && m->guarantee < DR_G_COUNT);
        const redisReply *h = elem(o, 19);
        check(h->type == REDIS_REPLY_ARRAY && m->nhistory == h->elements / 4 && m->history != NULL);
        for (size_t j = 0; j < m->nhistory; j++) {
            check_str(m->history[j].event);
            check_status(m->history[j].status);
        }
    }
}

static void on_ids(void *data, int err, const char *errstr, const int64_t *ids, size_t n)
{
    (void)data;
    if (!outcome(err, errstr)) {
        check(ids == NULL && n == 0);
        return;
    }
    check(ids != NULL && g.reply->type == REDIS_REPLY_ARRAY && n == g.reply->elements);
}

/* ---- driver ------------------------------------------------------------------------------------- */

static const struct {
    parse_fn *parse;
    void *cb;
} parsers[] = {
    {parse_layout, (void *)on_layout}, {parse_accept, (void *)on_accept}, {parse_ack, (void *)on_ack},         {parse_dispatch, (void *)on_pass},
    {parse_int, (void *)on_int},       {parse_int, NULL},                   {parse_heads, (void *)on_heads},
    {parse_reclaim, (void *)on_reclaim}, {parse_lease, (void *)on_lease},   {parse_cancel, (void *)on_cancel},
    {parse_purge, (void *)on_purge},   {parse_pull, (void *)on_pull},       {parse_peek, (void *)on_peek},
    {parse_devinfo, (void *)on_devinfo}, {parse_get, (void *)on_get},       {parse_ids, (void *)on_ids},
    {parse_strs, (void *)on_strs},     {parse_backlog, (void *)on_backlog},
    {parse_dispatch_many, (void *)on_pass_many},
};
#define NPARSERS (sizeof(parsers) / sizeof(parsers[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const dr_store_t st = {.prefix = "dr", .shards = 16, .retention_s = 60, .node = "n1"};
    if (size < 1)
        return 0;
    memset(&g, 0, sizeof(g));
    size_t which = (data[0] & 0x1f) % NPARSERS;
    g.src.p = data + 1;
    g.src.n = size - 1;
    redisReply *tree = build(&g.src, 0);

    /* What the client reports for this reply (dr/redis.h): a top-level error reply is DR_EREDIS. */
    static const int transport[] = {DR_EUNAVAIL, DR_ETIMEDOUT, DR_ECLOSED};
    int err = tree->type == REDIS_REPLY_ERROR ? DR_EREDIS : 0;
    if ((data[0] & 0xf0) == 0xf0 && err == 0)
        err = transport[data[0] % 3];
    g.err = err;
    g.reply = err == 0 || err == DR_EREDIS ? tree : NULL;

    call_t *c = dr_malloc(sizeof(*c)); /* on_reply frees it */
    c->parse = parsers[which].parse;
    c->cb = parsers[which].cb;
    c->data = NULL;
    c->st = &st;
    int expected = parsers[which].cb != NULL;
    if (parsers[which].parse == parse_dispatch_many) {
        many_t *mt = dr_malloc(sizeof(*mt)); /* the parser frees it */
        mt->n = 2;
        mt->reqs = dr_calloc(2, sizeof(*mt->reqs));
        for (size_t i = 0; i < 2; i++)
            mt->reqs[i] = (dr_store_pass_req_t){.shard = many_shards[i], .epoch = 1, .data = &many_shards[i]};
        c->data = mt;
        expected = 2;
    }
    on_reply(NULL, g.reply, err, c);
    check(g.calls == expected);
    free_tree(tree);
    return 0;
}
