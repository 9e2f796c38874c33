/* Drover error code descriptions. */
#include "dr/err.h"

const char *dr_strerror(int code)
{
    switch (code) {
    case DR_OK: return "success";
    case DR_EINVAL: return "invalid argument or input";
    case DR_ENOMEM: return "out of memory";
    case DR_EIO: return "input/output error";
    case DR_ECONFIG: return "invalid configuration";
    case DR_EREDIS: return "redis returned an error";
    case DR_EUNAVAIL: return "backing service unavailable";
    case DR_ETIMEDOUT: return "operation timed out";
    case DR_ENOTFOUND: return "not found";
    case DR_ECLOSED: return "shutting down";
    case DR_EFENCED: return "shard lease lost to a newer owner";
    case DR_ETOOBIG: return "input exceeds a configured limit";
    case DR_EBUSY: return "queue full";
    }
    return "unknown error";
}
