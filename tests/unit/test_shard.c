/* Unit tests for the shard map (common/src/shard.c): FNV-1a 64 against published test vectors, range,
 * determinism and rough uniformity of shard = FNV-1a-64(device id) mod S. */
#include <stdio.h>
#include <string.h>

#include "dr/shard.h"
#include "t.h"

static uint64_t fnv(const char *s)
{
    return dr_fnv1a64(s, strlen(s), DR_FNV64_BASIS);
}

static void test_fnv_vectors(void)
{
    CHECK_EQ_U64(DR_FNV64_BASIS, 0xcbf29ce484222325ULL);
    CHECK_EQ_U64(fnv(""), 0xcbf29ce484222325ULL);
    CHECK_EQ_U64(fnv("a"), 0xaf63dc4c8601ec8cULL);
    CHECK_EQ_U64(fnv("foobar"), 0x85944171f73967e8ULL);
    /* More FNV-1a 64 vectors (checked against an independent implementation). */
    CHECK_EQ_U64(fnv("b"), 0xaf63df4c8601f1a5ULL);
    CHECK_EQ_U64(fnv("fo"), 0x08985907b541d342ULL);
    CHECK_EQ_U64(fnv("foo"), 0xdcb27518fed9d577ULL);
    CHECK_EQ_U64(dr_fnv1a64("\0", 1, DR_FNV64_BASIS), 0xaf63bd4c8601b7dfULL);

    /* Incremental hashing: the seed carries the state. */
    uint64_t h = dr_fnv1a64("foo", 3, DR_FNV64_BASIS);
    CHECK_EQ_U64(dr_fnv1a64("bar", 3, h), fnv("foobar"));
    CHECK_EQ_U64(dr_fnv1a64("x", 0, 12345), 12345);
    /* Bytes are unsigned: high-bit bytes hash like their values. */
    CHECK(dr_fnv1a64("\xff", 1, DR_FNV64_BASIS) != dr_fnv1a64("\x7f", 1, DR_FNV64_BASIS));
    CHECK_EQ_U64(dr_fnv1a64("\xff", 1, DR_FNV64_BASIS), (DR_FNV64_BASIS ^ 0xffULL) * 0x100000001b3ULL);
}

static void test_shard_range(void)
{
    static const uint32_t sizes[] = {1, 2, 3, 16, 1024, 65536, 4294967295u};
    char id[64];
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int bad = 0;
        for (int i = 0; i < 20000; i++) {
            int n = snprintf(id, sizeof(id), "device-%d", i);
            uint32_t sh = dr_shard_of(id, (size_t)n, sizes[s]);
            if (sh >= sizes[s])
                bad++;
            if (sizes[s] == 1 && sh != 0)
                bad++;
        }
        if (!CHECK_EQ_INT(bad, 0))
            fprintf(stderr, "    shards = %u\n", sizes[s]);
    }
    /* The shard is exactly the hash modulo S (other tools compute it independently). */
    CHECK_EQ_INT(dr_shard_of("foobar", 6, 1024), 0x85944171f73967e8ULL % 1024);
    CHECK_EQ_INT(dr_shard_of("a", 1, 65536), 0xaf63dc4c8601ec8cULL % 65536);
    CHECK_EQ_INT(dr_shard_of("", 0, 1000), 0xcbf29ce484222325ULL % 1000);
    CHECK_EQ_INT(dr_shard_of("a", 1, 4294967295u), 0xaf63dc4c8601ec8cULL % 4294967295u);
    /* Only len bytes count. */
    CHECK_EQ_INT(dr_shard_of("foobar-extra", 6, 1024), dr_shard_of("foobar", 6, 1024));
}

static void test_shard_deterministic(void)
{
    char id[64];
    int diff = 0;
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(id, sizeof(id), "esp32-%08x", (unsigned)i * 2654435761u);
        uint32_t a = dr_shard_of(id, (size_t)n, 1024);
        char copy[64];
        memcpy(copy, id, (size_t)n + 1);
        if (dr_shard_of(copy, (size_t)n, 1024) != a || dr_shard_of(id, (size_t)n, 1024) != a)
            diff++;
    }
    CHECK_EQ_INT(diff, 0);
}

static void test_shard_uniform(void)
{
    enum { N = 10000, S = 16 };
    int count[S] = {0};
    char id[64];
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof(id), "device-%d", i);
        count[dr_shard_of(id, (size_t)n, S)]++;
    }
    for (int s = 0; s < S; s++) {
        if (!CHECK(count[s] >= 400 && count[s] <= 850))
            fprintf(stderr, "    shard %d has %d of %d ids\n", s, count[s], N);
    }
    /* The same with ids that differ only in their first byte. */
    int count2[S] = {0};
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof(id), "%05d-sensor", i);
        count2[dr_shard_of(id, (size_t)n, S)]++;
    }
    for (int s = 0; s < S; s++) {
        if (!CHECK(count2[s] >= 400 && count2[s] <= 850))
            fprintf(stderr, "    shard %d has %d of %d ids (prefix ids)\n", s, count2[s], N);
    }
}

int main(void)
{
    test_fnv_vectors();
    test_shard_range();
    test_shard_deterministic();
    test_shard_uniform();
    return t_report("test_shard");
}
