/* Shard map (see dr/shard.h). */
#include "dr/shard.h"

uint64_t dr_fnv1a64(const void *p, size_t len, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = seed;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint32_t dr_shard_of(const char *dev, size_t len, uint32_t shards)
{
    return (uint32_t)(dr_fnv1a64(dev, len, DR_FNV64_BASIS) % shards);
}
