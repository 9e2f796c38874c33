/* dr_mqttc: a small MQTT 3.1.1 and MQTT 5 client on the libuv loop, with application-controlled PUBACKs.
 *
 * A received QoS 1 message is acknowledged to the broker only when the application calls
 * dr_mqttc_ack() with the message's token, so a service can store a batch of messages durably before
 * the broker forgets them (group commit). PUBACKs leave in the order the PUBLISH packets arrived, as
 * MQTT 3.1.1 §4.6 requires. Keepalive runs independently of acks: holding acks never costs the session.
 *
 * The client connects over TCP or TLS (OpenSSL), subscribes its fixed set of filters on every
 * connection, reconnects with exponential back-off, and publishes QoS 0 and QoS 1 messages with a
 * completion callback and deadline. With `protocol = 5` it speaks MQTT 5: session expiry for persistent
 * sessions, a Message Expiry Interval on publishes (dr_mqttc_publish_ex), reason codes and the broker's
 * DISCONNECT. It does not do QoS 2, wills, topic aliases, enhanced authentication or offline queueing.
 * docs/mqtt-client.md describes the behaviour in prose.
 *
 * Threads: every function, and every callback, runs on the thread of the loop given to
 * dr_mqttc_open(). Nothing blocks. Callbacks may call any function of this API, including
 * dr_mqttc_stop() and dr_mqttc_free() on their own client.
 */
#ifndef DR_MQTTC_H
#define DR_MQTTC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dr/err.h"

typedef struct dr_mqttc dr_mqttc_t;

typedef struct {
    const char *url;        /* "tcp://host:port" or "mqtt://host:port" (default port 1883); TLS:
                             * "ssl://host:port" or "mqtts://host:port" (default port 8883). host is a
                             * name (resolved with uv_getaddrinfo, off the loop), an IPv4 address or a
                             * bracketed IPv6 address ("[::1]"). */
    const char *client_id;  /* required unless clean_session is set (then "" lets the broker pick) */
    const char *username;   /* NULL or "": none */
    const char *password;   /* NULL: none; needs a username */
    int keepalive_s;        /* default 30 when 0; 1..65535 */
    int clean_session;      /* 0: persistent session (the broker keeps subscriptions and unacked messages) */
    int connect_timeout_ms; /* deadline for TCP + TLS + CONNACK + SUBACK/UNSUBACK; default 5000 */
    int publish_timeout_ms; /* QoS 1 publish completion deadline, from dr_mqttc_publish(); default 10000 */
    int max_inflight;       /* outgoing QoS 1 publishes awaiting PUBACK at once; default 1000 (<= 65535) */
    int max_queued;         /* publishes waiting for a window slot; beyond it DR_EBUSY; default 100000 */
    int reconnect_min_ms;   /* first reconnect delay; default 100 */
    int reconnect_max_ms;   /* largest reconnect delay; default 5000 */
    size_t max_packet;      /* largest incoming packet (whole frame) accepted; default 1 MiB */
    const char *ca_file;    /* TLS: PEM bundle of trusted CAs; with ca_path NULL too: system store */
    const char *ca_path;    /* TLS: c_rehash directory of trusted CAs */
    const char *cert_file;  /* TLS: client certificate (PEM), NULL: none */
    const char *key_file;   /* TLS: its private key (PEM); default cert_file */
    int tls_insecure;      /* TLS: skip server certificate and host name checks (tests only; logged loudly) */
    int protocol;          /* 0 or 4: MQTT 3.1.1 (the default); 5: MQTT 5 */
    int protocol_fallback; /* with protocol 5: when the broker refuses the protocol version, log
                            * event=mqttc_protocol_fallback and use 3.1.1 from the next attempt on */
    uint32_t session_expiry_s; /* MQTT 5, clean_session 0: Session Expiry Interval; 0 means "never"
                                * (0xFFFFFFFF, as a 3.1.1 persistent session). clean_session 1: 0 */
} dr_mqttc_options_t;

/* Options of one publish (dr_mqttc_publish_ex). A zeroed struct is QoS 0 without expiry. */
typedef struct {
    int qos;                   /* 0 or 1 */
    uint32_t message_expiry_s; /* MQTT 5: Message Expiry Interval in seconds, 0: none. The broker drops
                                * the message when it is still queued (e.g. for an offline subscriber)
                                * that long after it received it. The time the publish waits in this
                                * client counts: a publish whose expiry passes before it is written
                                * completes with DR_ETIMEDOUT unsent. Ignored on a 3.1.1 connection. */
} dr_mqttc_pub_opts_t;

/* A received message, valid only during the message callback. */
typedef struct {
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const char *payload; /* not NUL-terminated; may hold any bytes */
    size_t len;
    int qos, dup, retain; /* qos is 0 or 1 (subscriptions ask for at most 1) */
    uint64_t token;       /* QoS 1: give it to dr_mqttc_ack() once handled; 0 for QoS 0 */
    int has_expiry;       /* MQTT 5: the message carries a Message Expiry Interval ... */
    uint32_t expiry_s;    /* ... of this many seconds (what is left of it at the broker) */
} dr_mqttc_msg_t;

/* A message arrived. msg and everything it points to are valid during the call only. With a persistent
 * session, messages the broker kept for us may arrive right after CONNACK, before the state callback
 * reports the connection (subscriptions are still being confirmed then). */
typedef void dr_mqttc_msg_cb(void *data, const dr_mqttc_msg_t *msg);

/* A publish completed. Called exactly once per accepted dr_mqttc_publish(): err 0 (QoS 1: the broker's
 * PUBACK arrived; QoS 0: the packet was handed to the socket), DR_ETIMEDOUT (publish_timeout_ms passed,
 * or the message expiry passed before it was written), DR_EIO (MQTT 5: the PUBACK carried a failure
 * reason code, such as "not authorized" or "quota exceeded"; logged at VERBOSE), or DR_ECLOSED (the
 * connection was lost or the client stopped or freed first; the message may or may not have reached the
 * broker). Never called from inside dr_mqttc_publish(). */
typedef void dr_mqttc_pub_cb(void *data, int err);

/* The connection became ready (connected 1, reason "connected": CONNACK accepted and every
 * UNSUBSCRIBE/SUBSCRIBE confirmed), was lost (connected 0), or a connection attempt failed (connected 0
 * again, once per attempt). reason is a static or client-owned string valid during the call, e.g.
 * "connection refused: bad user name or password", "keepalive timeout: no packet from the broker for
 * 45000 ms", "certificate verify failed: self-signed certificate in certificate chain". */
typedef void dr_mqttc_state_cb(void *data, int connected, const char *reason);

/* Creates a client on loop (not connected until dr_mqttc_start). Every string of opt is copied, and TLS
 * files are loaded now (a setup-time read, before the loop serves anything).
 * Returns 0 with *out set, or DR_EINVAL with err filled (bad url, missing client id, an option out of
 * range, an unreadable CA/certificate/key file). err must hold DR_ERR_LEN bytes. Loop thread. */
int dr_mqttc_open(uv_loop_t *loop, const dr_mqttc_options_t *opt, dr_mqttc_t **out, char err[DR_ERR_LEN]);

/* Adds filter (copied) with the QoS asked for (0 or 1; 2 is lowered to 1) to the set subscribed, in one
 * SUBSCRIBE, on every connection. Call before dr_mqttc_start(). */
void dr_mqttc_subscribe(dr_mqttc_t *m, const char *filter, int qos);

/* Adds filter (copied) to the set UNSUBSCRIBEd on every connection, before the SUBSCRIBE: filters of an
 * older configuration left in a persistent session. Call before dr_mqttc_start(). */
void dr_mqttc_unsubscribe_stale(dr_mqttc_t *m, const char *filter);

/* Sets the message callback (before dr_mqttc_start). Without one, QoS 1 messages are acked at once. */
void dr_mqttc_on_message(dr_mqttc_t *m, dr_mqttc_msg_cb *cb, void *data);

/* Sets the connection state callback. */
void dr_mqttc_on_state(dr_mqttc_t *m, dr_mqttc_state_cb *cb, void *data);

/* Starts connecting and keeps the client connected, reconnecting with back-off after any failure, until
 * dr_mqttc_stop() or dr_mqttc_free(). Calling it while started does nothing. May be called again after
 * dr_mqttc_stop() completed. */
void dr_mqttc_start(dr_mqttc_t *m);

/* Publishes len bytes of payload on topic (NUL-terminated) with qos 0 or 1, not retained. topic and
 * payload are copied; cb may be NULL.
 * Returns 0 (cb is then called exactly once, later), DR_EINVAL (topic fails dr_topic_check_name, or qos
 * is not 0/1: nothing is sent, so the connection is never put at risk), DR_ETOOBIG (the packet would
 * exceed MQTT's 256 MiB limit), DR_EUNAVAIL (no session: publishing works from the CONNACK on, before
 * the SUBACK, since a persistent session's queued messages arrive then), or DR_EBUSY (max_queued publishes
 * wait already). cb is not called on error. Packets go out in call order; QoS 1 packets beyond max_inflight
 * wait for a PUBACK to free a slot. Never retransmitted: after a connection loss the application decides what
 * to publish again. */
int dr_mqttc_publish(dr_mqttc_t *m, const char *topic, const void *payload, size_t len, int qos,
                     dr_mqttc_pub_cb *cb, void *data);

/* dr_mqttc_publish() with options (borrowed during the call; NULL: QoS 0, no expiry). Same returns;
 * DR_ETOOBIG also when an MQTT 5 broker announced a smaller Maximum Packet Size. */
int dr_mqttc_publish_ex(dr_mqttc_t *m, const char *topic, const void *payload, size_t len,
                        const dr_mqttc_pub_opts_t *opt, dr_mqttc_pub_cb *cb, void *data);

/* The protocol level of the current session (4: MQTT 3.1.1, 5: MQTT 5), or of the next connection
 * attempt when there is no session (after a fallback: 4). */
int dr_mqttc_protocol(const dr_mqttc_t *m);

/* Acknowledges the QoS 1 message of token. PUBACKs go out in the order the PUBLISH packets arrived: an
 * ack for a later message waits until every earlier QoS 1 message of the same connection was acked, then
 * all PUBACKs that became ready are written in one write at the end of the loop turn. Tokens of an
 * earlier connection (the broker redelivers those messages with new tokens), token 0, unknown and
 * repeated tokens are ignored. */
void dr_mqttc_ack(dr_mqttc_t *m, uint64_t token);

/* 1 when the connection is ready (see dr_mqttc_state_cb), else 0. */
int dr_mqttc_connected(const dr_mqttc_t *m);

/* Our publishes not completed yet: waiting for a window slot or for their PUBACK. */
size_t dr_mqttc_pending(const dr_mqttc_t *m);

/* Received QoS 1 messages of the current connection the application has not acked yet. */
size_t dr_mqttc_unacked(const dr_mqttc_t *m);

/* The reason of the last connection failure or loss ("" before any), owned by m, valid until the next
 * call into m or return to the loop. */
const char *dr_mqttc_last_error(const dr_mqttc_t *m);

/* Stops the client: completes pending publishes with DR_ECLOSED, writes the PUBACKs already released
 * and a DISCONNECT when the session is up (waiting at most connect_timeout_ms for that write), closes the
 * connection and stops reconnecting. Messages not acked stay unacked at the broker (redelivered to a
 * persistent session). done(data), if not NULL, is called exactly once when the connection is closed
 * (also when dr_mqttc_free() comes first), never from inside this call. One stop at a time: calling it
 * again before done ran is a programming error (asserted). dr_mqttc_start() may follow once done ran. */
void dr_mqttc_stop(dr_mqttc_t *m, void (*done)(void *data), void *data);

/* Destroys the client: pending publish callbacks get DR_ECLOSED (before this returns), an unfinished
 * stop's done is called with the close, no other callback runs afterwards, and the memory is released
 * once libuv closed every handle (so the loop must run on). Safe after or during stop, and from inside
 * any callback of m. NULL is ignored. */
void dr_mqttc_free(dr_mqttc_t *m);

#endif
