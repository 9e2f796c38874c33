/* The region shared by the coordinator and its device workers: counters, one record per command and
 * the pacing intervals. It is an anonymous MAP_SHARED mapping made before fork(), so every process
 * sees the same pages without files or names to clean up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "load.h"

static size_t region_size(int64_t ncmd)
{
    return sizeof(lt_shm_t) + (size_t)ncmd * sizeof(lt_rec_t) + (size_t)ncmd * sizeof(int32_t) + 64;
}

lt_shm_t *lt_shm_new(int64_t ncmd)
{
    size_t size = region_size(ncmd);
    /* Fresh anonymous pages are zero, which is "not observed" for every field. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("drover-load: mmap");
        abort();
    }
    lt_shm_t *s = p;
    s->ncmd = ncmd;
    s->rec = (lt_rec_t *)((char *)p + ((sizeof(lt_shm_t) + 63) & ~(size_t)63));
    s->intervals = (int32_t *)(s->rec + ncmd);
    return s;
}

void lt_shm_free(lt_shm_t *s)
{
    if (s != NULL)
        munmap(s, region_size(s->ncmd));
}
