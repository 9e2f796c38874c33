/* MQTT client on paho.mqtt.c MQTTAsync, bound to the service loop.
 *
 * Connection management (first connect, reconnect with back-off, re-subscribe on every connect) runs on
 * the loop; publish completions are posted back to the loop. The message callback is the exception:
 * it runs on paho's receive thread, because the QoS 1 PUBACK is sent only when it returns and the
 * ingress must not acknowledge a producer message before Redis holds it durably.
 */
#ifndef DR_MQTT_H
#define DR_MQTT_H

#include <stddef.h>

#include "dr/loop.h"

typedef struct dr_mqtt dr_mqtt_t;

/* Runs on paho's receive thread (one per process, shared by all clients): the broker's QoS 1
 * PUBACK goes out after it returns. topic and payload are valid during the call only. */
typedef void dr_mqtt_msg_cb(void *data, const char *topic, size_t topic_len, const char *payload, size_t len,
                            int dup);

/* Publish completion on the loop thread: err 0 when the broker acknowledged (QoS 1) or the message
 * was written (QoS 0), else DR_EUNAVAIL, DR_ETIMEDOUT or DR_ECLOSED. */
typedef void dr_mqtt_pub_cb(void *data, int err);

/* Connection state change on the loop thread. */
typedef void dr_mqtt_state_cb(void *data, int connected);

typedef struct {
    const char *url;
    const char *client_id;
    const char *username;   /* empty: none */
    const char *password;
    int keepalive_s;
    int clean_session;
    int publish_timeout_ms; /* completion deadline of a publish */
} dr_mqtt_options_t;

/* Creates a client (not yet connected). Strings are copied. Returns 0 or DR_EINVAL with err filled. */
int dr_mqtt_open(dr_loop_t *loop, const dr_mqtt_options_t *opt, dr_mqtt_t **out, char *err);

/* Adds a topic filter subscribed on every successful connection. Before dr_mqtt_start. */
void dr_mqtt_add_subscription(dr_mqtt_t *m, const char *filter, int qos);

/* Sets the message callback (before dr_mqtt_start) and the state callback. */
void dr_mqtt_on_message(dr_mqtt_t *m, dr_mqtt_msg_cb *cb, void *data);
void dr_mqtt_on_state(dr_mqtt_t *m, dr_mqtt_state_cb *cb, void *data);

/* Starts connecting and keeps the connection up until dr_mqtt_free (the loop retries the first
 * connection; paho reconnects after that). Loop thread. */
void dr_mqtt_start(dr_mqtt_t *m);

/* Publishes (not retained). Loop thread. Returns 0 (cb, if any, is called once), DR_EINVAL for a topic
 * a broker would refuse (dr_topic_check_name; the connection is never put at risk for it) or
 * DR_EUNAVAIL when not connected (cb not called in either case). topic and payload are copied by paho before returning. */
int dr_mqtt_publish(dr_mqtt_t *m, const char *topic, const void *payload, size_t len, int qos, dr_mqtt_pub_cb *cb,
                    void *data);

/* Publishes without completion tracking. Unlike dr_mqtt_publish it may be called from inside the
 * message callback (paho's thread), which is the only safe place to publish while that callback is
 * blocked: the loop must never call into paho then. Returns 0, DR_EINVAL or DR_EUNAVAIL. */
int dr_mqtt_publish_now(dr_mqtt_t *m, const char *topic, const void *payload, size_t len, int qos);

int dr_mqtt_connected(const dr_mqtt_t *m);

/* Number of publishes whose completion is still awaited. */
int dr_mqtt_pending(const dr_mqtt_t *m);

/* Disconnects (keeping the client), waiting up to timeout_ms. Returns 0 once disconnected, or
 * DR_ETIMEDOUT (for example while a message callback holds paho's lock). Loop thread. */
int dr_mqtt_disconnect(dr_mqtt_t *m, int timeout_ms);

/* Disconnects and frees m; pending publish callbacks get DR_ECLOSED. Loop thread. Returns 0, or
 * DR_ETIMEDOUT when paho could not be stopped (a message callback holds its lock): m is then left
 * alive and the caller should end the process without acknowledging anything more. */
int dr_mqtt_free(dr_mqtt_t *m);

#endif
