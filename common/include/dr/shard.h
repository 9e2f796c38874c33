/* The shard map: shard = FNV-1a-64(device id bytes) mod S.
 *
 * S (cluster.shards) is fixed for the life of a cluster: changing it moves devices between shards and
 * is not supported on a running cluster. The hash is specified exactly so other tools can compute it.
 */
#ifndef DR_SHARD_H
#define DR_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a of len bytes at p. */
uint64_t dr_fnv1a64(const void *p, size_t len, uint64_t seed);

#define DR_FNV64_BASIS 0xcbf29ce484222325ULL

/* Returns the shard in [0, shards) of device id dev (len bytes). shards must be > 0. */
uint32_t dr_shard_of(const char *dev, size_t len, uint32_t shards);

#endif
