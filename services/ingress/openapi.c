/* GET /v1/openapi.json: the API description (docs/openapi.yaml, embedded at build time). */
#include "http.h"

extern const char dr_openapi_json[];
extern const size_t dr_openapi_json_len;

void v1_openapi(hreq_t *hr)
{
    http_json(hr, 200, dr_openapi_json, dr_openapi_json_len);
    hreq_release(hr);
}
