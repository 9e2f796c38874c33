"""The web console's back end: browser sessions (cookie + CSRF), Duster's admin message list and saved
commands, the fleet-wide message search and the static console files (docs/console-api.md)."""
import json
import os
import subprocess
import time

import pytest

import harness
from harness import wait_until
from test_registry import FORBIDDEN, UNAUTHORIZED, Api, ctl, operator_password


@pytest.fixture
def con(stack_factory, tmp_path):
    port = harness.free_port()
    cdir = tmp_path / "console"
    cdir.mkdir()
    (cdir / "login.html").write_text("<html>login</html>")
    (cdir / "app.js").write_text("console.log(1);")
    (cdir / "style.css").write_text("body{}")
    (cdir / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("top secret")
    stack = stack_factory({"http.port": port, "auth.bcrypt_cost": 4, "http.key_cache_ms": 300,
                           "http.console_dir": str(cdir), "http.vendor_dir": str(tmp_path / "no-vendor")})
    api = Api(stack, port)
    api.admin_pw = operator_password(stack)
    api.admin = api.token("admin", api.admin_pw)
    return api


def cookie_login(api, dev, pw):
    st, h, b = api.call("POST", "/auth/login", body={"deviseId": dev, "password": pw, "cookie": True})
    assert st == 200, (st, b)
    return b, h


def curl_cookies(api, method, path, session, csrf=None, body=None, extra=()):
    hdrs = ["Cookie: drover_session=%s; drover_csrf=%s" % (session, csrf or "")] + list(extra)
    if csrf:
        hdrs.append("X-CSRF-Token: " + csrf)
    return api.call(method, path, body=body, headers=hdrs)


# ---- sessions ------------------------------------------------------------------------------------------

def test_cookie_login_csrf_and_logout(con):
    b, h = cookie_login(con, "admin", con.admin_pw)
    tok, csrf = b["accessToken"], b["csrfToken"]
    assert len(csrf) == 32 and csrf not in tok
    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", con.base + "/auth/login",
                          "-H", "Content-Type: application/json", "--data-binary",
                          json.dumps({"deviseId": "admin", "password": con.admin_pw, "cookie": True})],
                         capture_output=True, check=True).stdout.decode()
    cookies = [ln for ln in out.split("\r\n") if ln.lower().startswith("set-cookie:")]
    sess = [c for c in cookies if "drover_session=" in c][0]
    assert "HttpOnly" in sess and "SameSite=Strict" in sess and "Path=/" in sess and "Secure" not in sess
    assert [c for c in cookies if "drover_csrf=" in c and "HttpOnly" not in c]
    # without cookie: no csrfToken, no cookies (Duster's login unchanged)
    st, h2, b2 = con.call("POST", "/auth/login", body={"deviseId": "admin", "password": con.admin_pw})
    assert "csrfToken" not in b2 and "set-cookie" not in h2
    st, _, b3 = con.call("POST", "/auth/login", body={"deviseId": "admin", "password": "x", "cookie": "yes"})
    assert st == 400
    # reads with the cookie alone
    st, _, me = curl_cookies(con, "GET", "/auth/me", tok)
    assert st == 200 and me["role"] == "MAN" and me["csrfToken"] == csrf
    st, _, lst = curl_cookies(con, "GET", "/admin/api/clients", tok)
    assert st == 200 and isinstance(lst, list)
    # a cookie write without / with a wrong CSRF token changes nothing
    body = {"deviseId": "csrf-dev", "password": "pw-12345", "role": "DEVISE", "description": "x"}
    for bad in (None, "0" * 32, csrf[:-1] + ("0" if csrf[-1] != "0" else "1")):
        st, _, e = curl_cookies(con, "POST", "/admin/api/clients", tok, bad, body)
        assert st == 403 and e["error"] == "Forbidden" and "CSRF" in e["message"], e
    st, _, e = curl_cookies(con, "POST", "/v1/devices/d1/messages", tok, None, {"command": "c"})
    assert st == 403 and e["error"]["code"] == "CSRF"
    assert con.call("GET", "/admin/api/clients/1", con.admin)[0] == 200
    assert all(c["deviseId"] != "csrf-dev" for c in con.call("GET", "/admin/api/clients", con.admin)[2])
    st, _, c = curl_cookies(con, "POST", "/admin/api/clients", tok, csrf, body)
    assert st == 201 and c["deviseId"] == "csrf-dev"
    # Bearer needs no CSRF token, and an API key in the cookie is refused
    key, _ = ctl(con.stack, "key", "create", "admin", "ops")
    assert con.call("POST", "/v1/devices/d1/messages", key, {"command": "c"})[0] == 201
    assert curl_cookies(con, "GET", "/auth/me", key)[0] == 401
    # logout with the cookie clears both cookies and kills the token
    st, h, _ = curl_cookies(con, "POST", "/auth/logout", tok)
    assert st == 403
    st, h, _ = curl_cookies(con, "POST", "/auth/logout", tok, csrf)
    assert st == 204 and "Max-Age=0" in h.get("set-cookie", "")
    assert curl_cookies(con, "GET", "/auth/me", tok)[:3:2] == (401, UNAUTHORIZED)
    assert con.call("POST", "/auth/logout")[0] == 204


def test_sse_with_cookie(con):
    b, _ = cookie_login(con, "admin", con.admin_pw)
    p = subprocess.Popen(["curl", "-sN", "--max-time", "8", con.base + "/v1/events?device=sse1",
                          "-H", "Cookie: drover_session=" + b["accessToken"]], stdout=subprocess.PIPE)
    time.sleep(1)
    st, _, m = con.call("POST", "/v1/devices/sse1/messages", con.admin, {"command": "c"})
    assert st == 201
    out = p.stdout.read().decode()
    p.wait()
    assert '"id":%d' % m["id"] in out and "event: status" in out


def test_devise_tokens_and_producer_keys_refused(con):
    con.create(con.admin, "dv1", "pw-dv1-12345")
    dtok = con.token("dv1", "pw-dv1-12345")
    pkey, _ = ctl(con.stack, "key", "create", "producer", "p")
    for method, path in (("GET", "/admin/api/messages"), ("GET", "/admin/api/saved-messages"),
                         ("POST", "/admin/api/saved-messages"), ("GET", "/admin/api/saved-messages/1"),
                         ("PUT", "/admin/api/saved-messages/1"), ("DELETE", "/admin/api/saved-messages/1"),
                         ("POST", "/admin/api/saved-messages/1/send")):
        for t in (dtok, pkey):
            st, _, b = con.call(method, path, t, body={} if method in ("POST", "PUT") else None)
            assert (st, b) == (403, FORBIDDEN), (method, path, st, b)
        assert con.call(method, path)[:3:2] == (401, UNAUTHORIZED)
    assert con.call("GET", "/v1/messages", dtok)[0] == 403


# ---- admin messages and saved commands -----------------------------------------------------------------

def test_admin_messages_shape_and_order(con):
    ids = []
    for i in range(5):
        st, _, m = con.call("POST", "/v1/devices/am%d/messages" % (i % 2), con.admin,
                            {"command": "c%d" % i, "data": {"n": i}})
        assert st == 201
        ids.append(m["id"])
    st, _, lst = con.call("GET", "/admin/api/messages?limit=3", con.admin)
    assert st == 200 and [m["id"] for m in lst] == ids[::-1][:3]
    assert set(lst[0]) == {"id", "deviseId", "command", "deliveryStatus", "deliveryGuarantee", "createdDate",
                           "deliveredDate", "tmpId", "producerDeviseId", "deliveredError", "data"}
    assert lst[0]["data"] == {"n": 4} and lst[0]["deliveredDate"] is None and lst[0]["deliveredError"] is False
    st, _, lst = con.call("GET", "/admin/api/messages?deviseId=am1&limit=0", con.admin)
    assert st == 200 and [m["id"] for m in lst] == [ids[3]]  # limit clamped to 1
    assert con.call("GET", "/admin/api/messages?limit=x", con.admin)[0] == 400
    assert con.call("GET", "/admin/api/messages?deviseId=a%2Bb", con.admin)[0] == 400


def test_saved_messages_crud_validation_and_send(con):
    dev = con.create(con.admin, "sv1", "pw-sv1-12345")
    man = con.create(con.admin, "op2", "pw-op2-12345", role="MAN")
    base = {"clientId": dev["id"], "description": "  reboot it ", "command": " reboot "}
    st, _, s = con.call("POST", "/admin/api/saved-messages", con.admin, base)
    assert st == 201 and s == {"id": s["id"], "clientId": dev["id"], "deviseId": "sv1", "description": "reboot it",
                               "command": "reboot", "deliveryGuarantee": "NO", "data": None}
    for bad in ({"clientId": dev["id"], "command": "x"}, dict(base, description="  "), dict(base, command=5),
                dict(base, clientId=man["id"]), dict(base, clientId=99999), dict(base, clientId="1"),
                dict(base, deliveryGuarantee="no"), dict(base, data=[1])):
        st, _, e = con.call("POST", "/admin/api/saved-messages", con.admin, bad)
        assert st == 400 and e["error"] == "Bad Request" and e["message"], (bad, e)
    st, _, s2 = con.call("POST", "/admin/api/saved-messages", con.admin,
                         dict(base, deliveryGuarantee="RECEIPT_CONFIRMATION", data={"pin": 13}))
    assert st == 201
    lst = con.call("GET", "/admin/api/saved-messages?clientId=%d" % dev["id"], con.admin)[2]
    assert [x["id"] for x in lst] == [s2["id"], s["id"]]
    assert con.call("GET", "/admin/api/saved-messages?deviseId=sv1", con.admin)[2] == lst
    assert con.call("GET", "/admin/api/saved-messages?clientId=x", con.admin)[0] == 400
    assert con.call("GET", "/admin/api/saved-messages/%d" % s2["id"], con.admin)[2] == s2
    assert con.call("GET", "/admin/api/saved-messages/99999", con.admin)[0] == 404
    st, _, u = con.call("PUT", "/admin/api/saved-messages/%d" % s["id"], con.admin, {"description": "new"})
    assert st == 200 and u["description"] == "new" and u["command"] == "reboot"
    assert con.call("PUT", "/admin/api/saved-messages/99999", con.admin, {"description": "x"})[0] == 404
    assert con.call("PUT", "/admin/api/saved-messages/%d" % s["id"], con.admin, {"command": " "})[0] == 400
    # send: queued for the owner through the normal path, delivered to the device
    d = con.stack.device("sv1", auto_ack=True)
    st, _, out = con.call("POST", "/admin/api/saved-messages/%d/send" % s2["id"], con.admin)
    assert st == 200 and out["tmpId"] is None and out["deliveryStatus"] == "NOT_DELIVERED"
    d.wait_for(out["id"], 15)
    wait_until(lambda: con.call("GET", "/v1/messages/%d" % out["id"], con.admin)[2]["status"] == "DELIVERED", 15)
    assert con.call("POST", "/admin/api/saved-messages/99999/send", con.admin)[0] == 404
    assert con.call("DELETE", "/admin/api/saved-messages/%d" % s["id"], con.admin)[0] == 204
    assert con.call("DELETE", "/admin/api/saved-messages/%d" % s["id"], con.admin)[0] == 404
    d.disconnect()


# ---- fleet search --------------------------------------------------------------------------------------

def test_fleet_search_filters_and_paging(con):
    ids = {}
    for i in range(40):
        dev = "fs%d" % (i % 7)
        st, _, m = con.call("POST", "/v1/devices/%s/messages" % dev, con.admin,
                            {"command": "even" if i % 2 == 0 else "odd"})
        assert st == 201
        ids[m["id"]] = (dev, "even" if i % 2 == 0 else "odd")
    shards = {i % con.stack.shards for i in ids}
    assert len(shards) > 1
    seen, cursor, pages = [], None, 0
    while True:
        st, _, p = con.call("GET", "/v1/messages?limit=7" + ("&cursor=" + cursor if cursor else ""), con.admin)
        assert st == 200 and len(p["messages"]) <= 7
        seen += p["messages"]
        pages += 1
        cursor = p["nextCursor"]
        if cursor is None:
            break
        assert pages < 50
    got = [m["id"] for m in seen]
    assert len(got) == len(set(got)) and set(ids) <= set(got)  # every message once (plus readiness probes)
    keys = [(m["acceptedAt"], m["id"]) for m in seen]
    assert keys == sorted(keys, reverse=True)
    odd = con.call("GET", "/v1/messages?command=odd&limit=500", con.admin)[2]["messages"]
    assert sorted(m["id"] for m in odd if m["id"] in ids) == sorted(i for i, v in ids.items() if v[1] == "odd")
    assert all(m["command"] == "odd" for m in odd)
    dv = con.call("GET", "/v1/messages?device=fs3&limit=500", con.admin)[2]["messages"]
    assert sorted(m["id"] for m in dv) == sorted(i for i, v in ids.items() if v[0] == "fs3")
    assert con.call("GET", "/v1/messages?status=CANCELLED", con.admin)[2]["messages"] == []
    newest = seen[0]["acceptedAt"]
    win = con.call("GET", "/v1/messages?from=%d&to=%d&limit=500" % (newest, newest), con.admin)[2]["messages"]
    assert win and all(m["acceptedAt"] == newest for m in win)
    for q in ("limit=0", "limit=501", "status=nope", "device=a%2Bb", "cursor=xyz", "from=-1", "to=a"):
        st, _, e = con.call("GET", "/v1/messages?" + q, con.admin)
        assert st == 400 and e["error"]["code"], (q, e)


# ---- static files --------------------------------------------------------------------------------------

def test_static_console_files(con):
    st, h, _ = con.call("GET", "/")
    assert st == 302 and h["location"] == "/admin/login.html"
    assert con.call("GET", "/admin")[1]["location"] == "/admin/login.html"
    for name, ctype in (("login.html", "text/html"), ("app.js", "javascript"), ("style.css", "text/css")):
        st, h, body = con.call("GET", "/admin/" + name)
        assert st == 200 and ctype in h["content-type"] and "cache-control" in h, (name, h)
    for path in ("/admin/missing.html", "/admin/sub", "/admin/sub/", "/admin/..%2fsecret.txt",
                 "/admin/%2e%2e/secret.txt", "/admin/%2e%2e%2fsecret.txt", "/admin/../secret.txt",
                 "/admin//etc/passwd", "/admin/%2fetc%2fpasswd", "/vendor/chart.js/chart.js", "/admin/"):
        out = subprocess.run(["curl", "-sS", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                              con.base + path], capture_output=True, check=True).stdout.decode()
        assert out in ("404", "400", "403", "301"), (path, out)  # 301: h2o adds the slash of a directory
        body = subprocess.run(["curl", "-sS", "--path-as-is", con.base + path], capture_output=True).stdout
        assert b"top secret" not in body and b"root:" not in body
    st, h, doc = con.call("GET", "/v3/api-docs")
    assert st == 200 and doc["openapi"].startswith("3")
    st, h, page = con.call("GET", "/swagger-ui.html")
    # the console's API page (a console file; tests/browser renders it)
    assert st == 302 and h["location"] == "/admin/swagger.html", (st, h)
