"""Client registry, Duster's login API (/auth/*) and admin API (/admin/api/clients), drover-ctl user.

Real stacks with the REST API on; bcrypt runs at cost 4 to keep the tests quick (the cost is a setting).
"""
import json
import os
import re
import subprocess
import time

import pytest

import harness
from harness import wait_until

# Made by htpasswd -bnBC 10 u 'correct horse' (apache2-utils): a foreign $2y$ hash to import.
FOREIGN_HASH = "$2y$10$vSJD9EJPdnbhpbQH7YFgQu65ETdV7Rj33pSzrn854t6Iv7S3svseK"

UNAUTHORIZED = {"error": "Unauthorized"}
FORBIDDEN = {"error": "Forbidden"}
BAD_CREDENTIALS = {"error": "Invalid credentials"}


class Api:
    def __init__(self, stack, port):
        self.stack = stack
        self.base = "http://127.0.0.1:%d" % port

    def call(self, method, path, token=None, body=None, raw=None, headers=(), timeout=10):
        """Returns (status, headers, parsed JSON or text) through curl."""
        cmd = ["curl", "-sS", "-i", "--max-time", str(timeout), "-X", method, self.base + path]
        if token:
            cmd += ["-H", "Authorization: Bearer " + token]
        for h in headers:
            cmd += ["-H", h]
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        out = subprocess.run(cmd, input=data.encode() if isinstance(data, str) else data, capture_output=True,
                             timeout=timeout + 5)
        assert out.returncode == 0, out.stderr.decode()
        head, _, rest = out.stdout.decode("utf-8", "replace").partition("\r\n\r\n")
        lines = head.split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        try:
            parsed = json.loads(rest) if rest else None
        except ValueError:
            parsed = rest
        return int(lines[0].split()[1]), hdrs, parsed

    def login(self, dev, pw, expect=200):
        st, h, b = self.call("POST", "/auth/login", body={"deviseId": dev, "password": pw})
        assert st == expect, (st, b)
        return b

    def token(self, dev, pw):
        b = self.login(dev, pw)
        assert b["tokenType"] == "Bearer" and b["deviseId"] == dev and b["accessToken"].startswith("drt_")
        return b["accessToken"]

    def create(self, token, dev, pw="pw-" + "x" * 8, role="DEVISE", expect=201, **extra):
        body = dict({"deviseId": dev, "password": pw, "role": role, "description": "client " + dev}, **extra)
        st, _, b = self.call("POST", "/admin/api/clients", token, body)
        assert st == expect, (st, b)
        return b


def ctl(stack, *args, stdin=None, expect=0):
    env = dict(os.environ, DR_REDIS_PORT=str(stack.redis.port), DR_REDIS_PASSWORD=stack.redis.password,
               DR_REDIS_PREFIX=stack.prefix, DR_CLUSTER_SHARDS=str(stack.shards), DR_AUTH_BCRYPT_COST="4")
    out = subprocess.run([os.path.join(harness.BIN_DIR, "drover-ctl")] + list(args), env=env, capture_output=True,
                         input=(stdin or "").encode(), timeout=30)
    assert out.returncode == expect, (out.returncode, out.stderr.decode())
    return out.stdout.decode().strip(), out.stderr.decode()


def operator_password(stack):
    m = stack.ingress.wait_log(r"created operator 'admin' with password (\S+)", 20)
    return m.group(1)


@pytest.fixture
def reg(stack_factory, request):
    m = request.node.get_closest_marker("drover_config")
    port = harness.free_port()
    overrides = {"http.port": port, "auth.bcrypt_cost": 4, "http.key_cache_ms": 300}
    overrides.update(dict(m.args[0]) if m and m.args else {})
    stack = stack_factory(overrides)
    api = Api(stack, port)
    api.admin_pw = operator_password(stack)
    api.admin = api.token("admin", api.admin_pw)
    return api


# ---- login, me, logout, first operator ---------------------------------------------------------------

def test_first_operator_login_me_logout(reg):
    b = reg.login("admin", reg.admin_pw)
    assert set(b) == {"accessToken", "tokenType", "deviseId", "role", "expiresIn"}
    assert (b["tokenType"], b["deviseId"], b["role"], b["expiresIn"]) == ("Bearer", "admin", "MAN", 43200)
    st, _, me = reg.call("GET", "/auth/me", b["accessToken"])
    assert st == 200 and me["deviseId"] == "admin" and me["role"] == "MAN"
    # the password is only in the log line printed once; Redis has its bcrypt hash
    r = reg.stack.r
    h = r.hget("%s{reg}c:admin" % reg.stack.prefix, "pw")
    assert h.startswith("$2b$04$") and reg.admin_pw not in h
    # a restart with an operator in the registry creates none and prints no password
    size = reg.stack.ingress.log_size()
    reg.stack.ingress.restart()
    wait_until(lambda: reg.call("GET", "/healthz")[0] == 200, 20)
    reg.stack.ingress.wait_log(r"event=http_listening", 10, since=size)
    time.sleep(1)  # give a (wrong) bootstrap the time to show; the assertion below needs no timing
    assert "created operator" not in reg.stack.ingress.log_text()[size:]
    assert r.scard("%s{reg}man" % reg.stack.prefix) == 1
    # logout revokes this token only
    other = reg.token("admin", reg.admin_pw)
    assert reg.call("POST", "/auth/logout", b["accessToken"])[0] == 204
    assert reg.call("GET", "/auth/me", b["accessToken"])[2] == UNAUTHORIZED
    assert reg.call("POST", "/auth/logout", b["accessToken"])[:3:2] == (401, UNAUTHORIZED)
    assert reg.call("GET", "/auth/me", other)[0] == 200


def test_wrong_password_and_unknown_id_look_the_same(reg):
    reg.create(reg.admin, "dev-a", "right-pw")
    st1, _, b1 = reg.call("POST", "/auth/login", body={"deviseId": "dev-a", "password": "wrong"})
    st2, _, b2 = reg.call("POST", "/auth/login", body={"deviseId": "nobody", "password": "wrong"})
    assert (st1, b1) == (st2, b2) == (401, BAD_CREDENTIALS)
    # blank or missing fields, bad JSON
    for body in ({"deviseId": "dev-a"}, {"deviseId": " ", "password": "x"}, {"deviseId": "dev-a", "password": ""},
                 {"deviseId": 5, "password": "x"}):
        st, _, b = reg.call("POST", "/auth/login", body=body)
        assert st == 400 and b["error"] == "Bad Request" and b["message"], (body, b)
    st, _, b = reg.call("POST", "/auth/login", raw='{"deviseId": "dev-a", "password": ')
    assert st == 400 and b["error"] == "Bad Request"
    st, _, b = reg.call("POST", "/auth/login", raw="[]")
    assert st == 400
    # the Duster hook answers with a decision
    for body, want in (({"username": "dev-a", "password": "right-pw"}, True),
                       ({"username": "dev-a", "password": "nope"}, False),
                       ({"username": "nobody", "password": "right-pw"}, False)):
        st, _, b = reg.call("POST", "/auth/isClientEnabled", body=body)
        assert (st, b) == (200, {"decision": want}), body
    assert reg.call("POST", "/auth/isClientEnabled", body={"username": "", "password": "x"})[0] == 400


def test_scopes_of_tokens_and_keys(reg):
    reg.create(reg.admin, "dev-s", "dev-pw")
    dev = reg.token("dev-s", "dev-pw")
    st, _, me = reg.call("GET", "/auth/me", dev)
    assert (st, me["deviseId"], me["role"]) == (200, "dev-s", "DEVISE")
    # admin API: no token 401, a DEVISE token or a producer key 403, with Duster's bodies
    assert reg.call("GET", "/admin/api/clients")[:3:2] == (401, UNAUTHORIZED)
    assert reg.call("GET", "/admin/api/clients", "drt_" + "A" * 43)[:3:2] == (401, UNAUTHORIZED)
    assert reg.call("GET", "/admin/api/clients", dev)[:3:2] == (403, FORBIDDEN)
    assert reg.call("DELETE", "/admin/api/clients/1", dev)[:3:2] == (403, FORBIDDEN)
    producer, _ = ctl(reg.stack, "key", "create", "producer", "fleet")
    admin_key, _ = ctl(reg.stack, "key", "create", "admin", "ops")
    assert reg.call("GET", "/admin/api/clients", producer)[:3:2] == (403, FORBIDDEN)
    assert reg.call("POST", "/admin/api/clients", producer, {"deviseId": "x", "password": "y"})[:3:2] == \
        (403, FORBIDDEN)
    st, _, lst = reg.call("GET", "/admin/api/clients", admin_key)
    assert st == 200 and {c["deviseId"] for c in lst} == {"admin", "dev-s"}
    # a DEVISE token acts as a device key bound to its own id; a MAN token as an admin key
    assert reg.call("GET", "/consumer/getLastMessage/dev-s", dev)[0] == 200
    assert reg.call("GET", "/consumer/getLastMessage/dev-other", dev)[0] == 403
    assert reg.call("PUT", "/producer/request/dev-s", dev, {"command": "x"})[0] == 403
    st, _, out = reg.call("PUT", "/producer/request/dev-s", reg.admin, {"command": "blink"})
    assert st == 200 and out["deliveryStatus"] == "NOT_DELIVERED"
    st, _, peek = reg.call("GET", "/consumer/getLastMessage/dev-s", dev)
    assert st == 200 and [m["command"] for m in peek] == ["blink"]


# ---- revocation and expiry ---------------------------------------------------------------------------

def client_id(reg, dev):
    st, _, lst = reg.call("GET", "/admin/api/clients?search=" + dev, reg.admin)
    return next(c["id"] for c in lst if c["deviseId"] == dev)


def test_tokens_revoked_by_disable_password_change_and_delete(reg):
    reg.create(reg.admin, "dev-r", "pw-1")
    cid = client_id(reg, "dev-r")
    t = reg.token("dev-r", "pw-1")
    # a description change revokes nothing
    st, _, c = reg.call("PUT", "/admin/api/clients/%d" % cid, reg.admin, {"description": "new text"})
    assert st == 200 and c["description"] == "new text" and c["enabled"] is True
    assert reg.call("GET", "/auth/me", t)[0] == 200
    # disable: the token dies, login fails with the same body as a wrong password
    st, _, c = reg.call("PUT", "/admin/api/clients/%d" % cid, reg.admin, {"enabled": False})
    assert st == 200 and c["enabled"] is False
    assert reg.call("GET", "/auth/me", t)[:3:2] == (401, UNAUTHORIZED)
    assert reg.login("dev-r", "pw-1", expect=401) == BAD_CREDENTIALS
    assert reg.call("POST", "/auth/isClientEnabled", body={"username": "dev-r", "password": "pw-1"})[2] == \
        {"decision": False}
    # enable again (old tokens stay dead), then a password change (Duster: "" keeps the password)
    assert reg.call("PUT", "/admin/api/clients/%d" % cid, reg.admin, {"enabled": True, "password": ""})[0] == 200
    assert reg.call("GET", "/auth/me", t)[0] == 401
    t2 = reg.token("dev-r", "pw-1")
    assert reg.call("PUT", "/admin/api/clients/%d" % cid, reg.admin, {"password": "pw-2"})[0] == 200
    assert reg.call("GET", "/auth/me", t2)[0] == 401
    reg.login("dev-r", "pw-1", expect=401)
    t3 = reg.token("dev-r", "pw-2")
    # a role change revokes too; the new token carries the new role
    assert reg.call("PUT", "/admin/api/clients/%d" % cid, reg.admin, {"role": "MAN"})[0] == 200
    assert reg.call("GET", "/auth/me", t3)[0] == 401
    t4 = reg.token("dev-r", "pw-2")
    assert reg.call("GET", "/auth/me", t4)[2]["role"] == "MAN"
    # delete: gone, and a new client of the same name does not revive old tokens
    assert reg.call("DELETE", "/admin/api/clients/%d" % cid, reg.admin)[0] == 204
    assert reg.call("GET", "/auth/me", t4)[0] == 401
    reg.create(reg.admin, "dev-r", "pw-2", role="MAN")
    assert reg.call("GET", "/auth/me", t4)[0] == 401
    # only the hash of a token is stored
    keys = reg.stack.r.keys("%s{reg}t:*" % reg.stack.prefix)
    assert keys and not any(t4[4:] in k for k in keys)


@pytest.mark.drover_config({"auth.token_ttl_s": 2})
def test_token_expires(reg):
    b = reg.login("admin", reg.admin_pw)
    assert b["expiresIn"] == 2
    assert reg.call("GET", "/auth/me", b["accessToken"])[0] == 200
    wait_until(lambda: reg.call("GET", "/auth/me", b["accessToken"])[0] == 401, 10, interval=0.2,
               msg="token outlived auth.token_ttl_s")
    assert reg.call("GET", "/admin/api/clients", b["accessToken"])[:3:2] == (401, UNAUTHORIZED)


@pytest.mark.drover_config({"auth.login_failures": 3, "auth.login_window_s": 3})
def test_login_rate_limit(reg):
    reg.create(reg.admin, "dev-l", "good")
    reg.create(reg.admin, "dev-m", "good")
    for _ in range(3):
        assert reg.login("dev-l", "bad", expect=401) == BAD_CREDENTIALS
    # the id is locked, even with the right password, and says when to retry
    st, h, b = reg.call("POST", "/auth/login", body={"deviseId": "dev-l", "password": "good"})
    assert st == 429 and 1 <= int(h["retry-after"]) <= 3 and b["error"] == "Too Many Requests"
    # so is this address (6 failures from it by now would be over the limit for any id)
    for _ in range(3):
        reg.call("POST", "/auth/login", body={"deviseId": "ghost", "password": "bad"})
    st, _, _ = reg.call("POST", "/auth/login", body={"deviseId": "dev-m", "password": "good"})
    assert st == 429
    # unknown ids are limited the same way as known ones
    st, _, _ = reg.call("POST", "/auth/login", body={"deviseId": "ghost", "password": "bad"})
    assert st == 429
    # the window ends
    wait_until(lambda: reg.call("POST", "/auth/login", body={"deviseId": "dev-l", "password": "good"})[0] == 200, 10,
               interval=0.3)


# ---- CRUD, search, paging, bad input -----------------------------------------------------------------

def test_admin_crud_search_paging(reg):
    made = [reg.create(reg.admin, "fleet-%02d" % i, "pw%d" % i) for i in range(12)]
    c = made[0]
    assert set(c) == {"id", "deviseId", "role", "description", "enabled", "createdAt", "updatedAt"}
    assert (c["deviseId"], c["role"], c["description"], c["enabled"]) == ("fleet-00", "DEVISE", "client fleet-00",
                                                                          True)
    assert len({m["id"] for m in made}) == 12
    st, _, got = reg.call("GET", "/admin/api/clients/%d" % c["id"], reg.admin)
    assert (st, got) == (200, c)
    # Duster's list: a bare array; here in name order
    st, _, lst = reg.call("GET", "/admin/api/clients", reg.admin)
    assert st == 200 and [x["deviseId"] for x in lst] == ["admin"] + ["fleet-%02d" % i for i in range(12)]
    assert all("password" not in x for x in lst)
    # prefix search
    st, _, lst = reg.call("GET", "/admin/api/clients?search=fleet-1", reg.admin)
    assert [x["deviseId"] for x in lst] == ["fleet-10", "fleet-11"]
    assert reg.call("GET", "/admin/api/clients?search=zzz", reg.admin)[2] == []
    # paging: limit plus the x-next-after cursor
    seen, after = [], ""
    while True:
        st, h, page = reg.call("GET", "/admin/api/clients?search=fleet&limit=5&after=" + after, reg.admin)
        assert st == 200 and len(page) <= 5
        seen += [x["deviseId"] for x in page]
        if "x-next-after" not in h:
            break
        after = h["x-next-after"]
    assert seen == ["fleet-%02d" % i for i in range(12)]
    # update and delete
    st, _, u = reg.call("PUT", "/admin/api/clients/%d" % c["id"], reg.admin,
                        {"deviseId": "fleet-00", "role": "MAN", "description": "ops", "password": ""})
    assert st == 200 and (u["role"], u["description"], u["id"]) == ("MAN", "ops", c["id"])
    assert u["updatedAt"] >= c["updatedAt"]
    assert reg.call("DELETE", "/admin/api/clients/%d" % c["id"], reg.admin)[0] == 204
    assert reg.call("GET", "/admin/api/clients/%d" % c["id"], reg.admin)[0] == 404
    assert reg.call("DELETE", "/admin/api/clients/%d" % c["id"], reg.admin)[0] == 404
    # an imported bcrypt hash (from another implementation) logs in with its password
    imp = reg.create(reg.admin, "imported", None, passwordHash=FOREIGN_HASH)
    assert imp["deviseId"] == "imported"
    assert reg.token("imported", "correct horse")


def test_admin_bad_input_changes_nothing(reg):
    r = reg.stack.r
    reg.create(reg.admin, "exists", "pw")

    def snapshot():
        return sorted((k, r.type(k)) for k in r.keys("%s{reg}*" % reg.stack.prefix) if ":lf:" not in k)
    before = snapshot()
    clients = r.zrange("%s{reg}idx" % reg.stack.prefix, 0, -1)
    cases = [
        ({"deviseId": "exists", "password": "x"}, 409),
        ({"deviseId": "new", "password": "x", "role": "ADMIN"}, 400),
        ({"deviseId": "new", "password": "x", "role": "man"}, 400),
        ({"deviseId": "", "password": "x"}, 400),
        ({"deviseId": "a/b", "password": "x"}, 400),
        ({"deviseId": "a+b", "password": "x"}, 400),
        ({"deviseId": "x" * 300, "password": "x"}, 400),
        ({"deviseId": "new"}, 400),
        ({"deviseId": "new", "password": "x" * 73}, 400),
        ({"deviseId": "new", "password": "x", "description": "d" * 1025}, 400),
        ({"deviseId": "new", "password": "x", "enabled": "yes"}, 400),
        ({"deviseId": "new", "passwordHash": "plaintext"}, 400),
        ({"deviseId": "new", "password": "x", "passwordHash": FOREIGN_HASH}, 400),
        ({"deviseId": ["new"], "password": "x"}, 400),
    ]
    for body, want in cases:
        st, _, b = reg.call("POST", "/admin/api/clients", reg.admin, body)
        assert st == want and b["error"] and b["message"], (body, st, b)
    for raw in ('{"deviseId": "new", "password": "x"', "null", '"x"', '{"deviseId":"n","deviseId":"m","password":"x"}'):
        st, _, b = reg.call("POST", "/admin/api/clients", reg.admin, raw=raw)
        assert st == 400, (raw, st, b)
    st, _, b = reg.call("POST", "/admin/api/clients", reg.admin, raw='{"deviseId":"n","password":"%s"}' % ("x" * 70000))
    assert st == 413
    cid = client_id(reg, "exists")
    for body, want in (({"role": "ROOT"}, 400), ({"deviseId": "renamed"}, 400), ({"enabled": 1}, 400),
                       ({"description": 5}, 400)):
        st, _, b = reg.call("PUT", "/admin/api/clients/%d" % cid, reg.admin, body)
        assert st == want, (body, st, b)
    assert reg.call("PUT", "/admin/api/clients/999999", reg.admin, {"description": "x"})[0] == 404
    assert reg.call("GET", "/admin/api/clients/999999", reg.admin)[0] == 404
    assert reg.call("GET", "/admin/api/clients/abc", reg.admin)[0] == 400
    assert reg.call("GET", "/admin/api/clients?limit=0", reg.admin)[0] == 400
    assert reg.call("GET", "/admin/api/clients?limit=5000", reg.admin)[0] == 400
    assert reg.call("GET", "/admin/api/clients?search=a%2Fb", reg.admin)[0] == 400
    assert snapshot() == before and r.zrange("%s{reg}idx" % reg.stack.prefix, 0, -1) == clients
    assert reg.token("exists", "pw")


# ---- drover-ctl user ---------------------------------------------------------------------------------

def test_ctl_user_commands(reg):
    s = reg.stack
    out, err = ctl(s, "user", "create", "ctl-dev", "--password-stdin", stdin="stdin-pw\n")
    assert out == "" and "ctl-dev" in err
    assert reg.token("ctl-dev", "stdin-pw")
    pw, err = ctl(s, "user", "create", "ctl-op", "--role", "MAN", "--description", "night shift")
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", pw) and "shown only now" in err
    t = reg.token("ctl-op", pw)
    assert reg.call("GET", "/admin/api/clients", t)[0] == 200
    ctl(s, "user", "create", "ctl-dev", "--password-stdin", stdin="x\n", expect=3)
    ctl(s, "user", "create", "bad/id", expect=1)
    ctl(s, "user", "create", "x", "--role", "ROOT", expect=1)
    ctl(s, "user", "create", "x", "--password-stdin", stdin="\n", expect=1)
    out, _ = ctl(s, "user", "list")
    rows = [ln.split() for ln in out.splitlines()]
    assert [(r[1], r[2], r[3]) for r in rows] == [("admin", "MAN", "enabled"), ("ctl-dev", "DEVISE", "enabled"),
                                                 ("ctl-op", "MAN", "enabled")]
    assert "night shift" in out
    out, _ = ctl(s, "user", "list", "ctl-o")
    assert [ln.split()[1] for ln in out.splitlines()] == ["ctl-op"]
    # disable revokes; enable lets the password log in again
    ctl(s, "user", "disable", "ctl-op")
    assert reg.call("GET", "/auth/me", t)[0] == 401
    reg.login("ctl-op", pw, expect=401)
    ctl(s, "user", "enable", "ctl-op")
    t = reg.token("ctl-op", pw)
    ctl(s, "user", "passwd", "ctl-op", "--password-stdin", stdin="changed\n")
    assert reg.call("GET", "/auth/me", t)[0] == 401
    reg.token("ctl-op", "changed")
    ctl(s, "user", "delete", "ctl-op")
    reg.login("ctl-op", "changed", expect=401)
    ctl(s, "user", "delete", "ctl-op", expect=3)
    ctl(s, "user", "disable", "nobody", expect=3)
    ctl(s, "user", "frobnicate", "x", expect=1)
