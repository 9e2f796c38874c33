/* Drover device example for ESP-IDF 5.x: esp-mqtt plus the device SDK, with the SDK's de-duplication
 * ring kept in NVS, so a command re-sent after a lost ack or a reboot is acknowledged, not run again.
 *
 * Commands, as in Duster's stock firmware: `digitalWrite` with data {"pinNumber":N,"pinValue":bool}.
 * Anything else is reported COMPLETED_WITH_ERROR. Every message is acknowledged at once ({"id":N}),
 * then its outcome is reported. All work happens in esp-mqtt's event task, so the SDK state needs no
 * lock; commands must therefore be short (a long one would starve the MQTT keepalive).
 */
#include <inttypes.h>
#include <string.h>

#include "driver/gpio.h"
#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "mqtt_client.h"
#include "nvs.h"
#include "nvs_flash.h"
#include "protocol_examples_common.h"

#include "drover_device.h"

static const char *TAG = "drover";

static dr_device_t g_dev;  /* de-duplication state, touched only by the MQTT event task */
static nvs_handle_t g_nvs; /* namespace "drover", key "ring" */
static char g_req_topic[DR_DEVICE_TOPIC_MAX];
static char g_resp_topic[DR_DEVICE_TOPIC_MAX];

/* ---- Persistence hooks: the ring as one NVS blob ------------------------------------------------- */

static int nvs_save(void *ctx, const void *image, size_t len)
{
    (void)ctx;
    if (nvs_set_blob(g_nvs, "ring", image, len) != ESP_OK || nvs_commit(g_nvs) != ESP_OK)
        return DR_DEVICE_ESTORE;
    return 0;
}

static int nvs_load(void *ctx, void *image, size_t len)
{
    size_t n = len;
    esp_err_t err = nvs_get_blob(g_nvs, "ring", image, &n);
    (void)ctx;
    if (err == ESP_ERR_NVS_NOT_FOUND)
        return DR_DEVICE_ENOTFOUND;
    return err == ESP_OK && n == len ? 0 : DR_DEVICE_ESTORE;
}

/* ---- Commands ------------------------------------------------------------------------------------ */

static dr_device_status_t execute(const dr_device_cmd_t *cmd)
{
    int64_t pin;
    int value;

    if (dr_device_str_eq(cmd->command, "digitalWrite")) {
        if (dr_device_get_int(cmd->data, "pinNumber", &pin) != 0 ||
            dr_device_get_bool(cmd->data, "pinValue", &value) != 0 || pin < 0 || pin >= GPIO_NUM_MAX)
            return DR_DEVICE_COMPLETED_WITH_ERROR;
        if (gpio_reset_pin((gpio_num_t)pin) != ESP_OK ||
            gpio_set_direction((gpio_num_t)pin, GPIO_MODE_OUTPUT) != ESP_OK ||
            gpio_set_level((gpio_num_t)pin, (uint32_t)value) != ESP_OK)
            return DR_DEVICE_COMPLETED_WITH_ERROR;
        return DR_DEVICE_COMPLETED;
    }
    ESP_LOGW(TAG, "unknown command %.*s", (int)cmd->command.len, cmd->command.p);
    return DR_DEVICE_COMPLETED_WITH_ERROR;
}

static void send_ack(esp_mqtt_client_handle_t client, uint64_t id, dr_device_status_t st)
{
    char payload[DR_DEVICE_ACK_MAX];
    int n = dr_device_ack(payload, sizeof(payload), id, st);
    if (n > 0 && esp_mqtt_client_publish(client, g_resp_topic, payload, n, 1, 0) < 0)
        ESP_LOGW(TAG, "ack for id %" PRIu64 " not queued; the re-send will repeat it", id);
}

static void on_command(esp_mqtt_client_handle_t client, const char *payload, size_t len)
{
    dr_device_cmd_t cmd;
    dr_device_status_t st;
    int rc = dr_device_receive(&g_dev, payload, len, &cmd);

    if (rc != 0) {
        /* Not acknowledged: a malformed message has no usable id, and after a storage error the
         * re-send tries again. */
        ESP_LOGW(TAG, "message ignored: %s", dr_device_strerror(rc));
        return;
    }
    if (cmd.action == DR_DEVICE_DUPLICATE) {
        ESP_LOGI(TAG, "id %" PRIu64 " already executed, acknowledging again", cmd.id);
        send_ack(client, cmd.id, cmd.status);
        return;
    }
    send_ack(client, cmd.id, DR_DEVICE_DELIVERED);
    st = execute(&cmd);
    dr_device_set_status(&g_dev, cmd.id, st); /* before publishing: a re-send repeats the outcome */
    send_ack(client, cmd.id, st);
}

/* ---- MQTT ---------------------------------------------------------------------------------------- */

static void on_mqtt_event(void *arg, esp_event_base_t base, int32_t event_id, void *event_data)
{
    esp_mqtt_event_handle_t ev = event_data;
    (void)arg;
    (void)base;

    switch ((esp_mqtt_event_id_t)event_id) {
    case MQTT_EVENT_CONNECTED:
        /* Clean session: subscribe again on every connect. */
        esp_mqtt_client_subscribe(ev->client, g_req_topic, 1);
        ESP_LOGI(TAG, "connected, subscribed to %s", g_req_topic);
        break;
    case MQTT_EVENT_DATA:
        if (ev->current_data_offset != 0 || ev->data_len != ev->total_data_len) {
            /* Larger than the MQTT buffer: arrives in pieces, which this example does not join. */
            ESP_LOGW(TAG, "message of %d bytes exceeds the buffer, ignored", ev->total_data_len);
            break;
        }
        if ((size_t)ev->topic_len != strlen(g_req_topic) ||
            memcmp(ev->topic, g_req_topic, (size_t)ev->topic_len) != 0)
            break;
        on_command(ev->client, ev->data, (size_t)ev->data_len);
        break;
    case MQTT_EVENT_DISCONNECTED:
        ESP_LOGW(TAG, "disconnected; esp-mqtt reconnects");
        break;
    default:
        break;
    }
}

void app_main(void)
{
    dr_device_opts_t opts = {.save = nvs_save, .load = nvs_load};
    esp_err_t err = nvs_flash_init();
    int rc;

    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);
    ESP_ERROR_CHECK(nvs_open("drover", NVS_READWRITE, &g_nvs));
    rc = dr_device_init(&g_dev, &opts);
    if (rc != 0)
        ESP_LOGW(TAG, "saved ids unreadable (%s): starting with none", dr_device_strerror(rc));
    ESP_LOGI(TAG, "%u executed ids remembered", (unsigned)dr_device_count(&g_dev));

    if (dr_device_topic_request(g_req_topic, sizeof(g_req_topic), CONFIG_DROVER_DEVICE_ID) < 0 ||
        dr_device_topic_response(g_resp_topic, sizeof(g_resp_topic), CONFIG_DROVER_DEVICE_ID) < 0) {
        ESP_LOGE(TAG, "invalid device id \"%s\"", CONFIG_DROVER_DEVICE_ID);
        return;
    }

    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    ESP_ERROR_CHECK(example_connect()); /* Wi-Fi or Ethernet, from menuconfig "Example Connection" */

    const esp_mqtt_client_config_t cfg = {
        .broker.address.uri = CONFIG_DROVER_BROKER_URI,
        .credentials.client_id = CONFIG_DROVER_DEVICE_ID, /* client id = device id, as Duster devices */
        .credentials.username = CONFIG_DROVER_USERNAME[0] ? CONFIG_DROVER_USERNAME : NULL,
        .credentials.authentication.password = CONFIG_DROVER_PASSWORD[0] ? CONFIG_DROVER_PASSWORD : NULL,
        .session.keepalive = 15,
        .buffer.size = 2048, /* Drover's messages for this device stay well below */
    };
    esp_mqtt_client_handle_t client = esp_mqtt_client_init(&cfg);
    ESP_ERROR_CHECK(
        esp_mqtt_client_register_event(client, (esp_mqtt_event_id_t)ESP_EVENT_ANY_ID, on_mqtt_event, NULL));
    ESP_ERROR_CHECK(esp_mqtt_client_start(client));
}
