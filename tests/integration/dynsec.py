"""A Mosquitto with the dynamic-security plugin, for the broker provisioning tests.

DynsecMosquitto replaces a Stack's MosquittoServer before the stack starts: the same users (drover, producer,
device) with the same passwords, but kept by the plugin instead of a password file, plus the user "dynsec"
allowed to use $CONTROL/dynamic-security. The plugin's initial state file is written here; its password
hashes (PBKDF2-SHA512, 101 iterations, base64) are made the way the plugin checks them.
"""
import base64
import hashlib
import json
import os
import pwd
import secrets

import harness

PLUGIN = os.environ.get("DROVER_DYNSEC_PLUGIN", "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def _client(user, password, roles):
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return {"username": user, "password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": 101, "roles": [{"rolename": r} for r in roles]}


def _acl(kind, topic):
    return {"acltype": kind, "topic": topic, "allow": True}


class DynsecMosquitto(harness.MosquittoServer):
    def __init__(self, workdir, port=None):
        super().__init__(workdir, port)
        self.passwords["dynsec"] = secrets.token_hex(10)
        self.state = os.path.join(self.dir, "dynamic-security.json")
        everything = [_acl(k, "#") for k in ("publishClientSend", "publishClientReceive", "subscribePattern",
                                             "unsubscribePattern")]
        control = [_acl(k, "$CONTROL/dynamic-security/#") for k in ("publishClientSend", "publishClientReceive",
                                                                     "subscribePattern")]
        state = {
            "clients": [_client(u, p, ["control"] if u == "dynsec" else ["service"])
                        for u, p in self.passwords.items()],
            "roles": [{"rolename": "service", "acls": everything}, {"rolename": "control", "acls": control}],
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True, "subscribe": False,
                                 "unsubscribe": True},
        }
        with open(self.state, "w") as f:
            json.dump(state, f)
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "per_listener_settings false",
                "user %s" % pwd.getpwuid(os.geteuid()).pw_name,
                "listener %d 127.0.0.1" % self.port,
                "allow_anonymous false",
                "plugin %s" % PLUGIN,
                "plugin_opt_config_file %s" % self.state,
                "persistence false",
                "log_dest stderr",
                "log_type all",
                "connection_messages true",
                "log_timestamp true",
            ]) + "\n")
