/* Ethash (and etchash, which differs only in which epoch gives the seed
 * and which the sizes): the light cache, dataset items, hashimoto over the
 * cache (light) or over a generated dataset (full). Written for nomp from
 * the Ethash specification. Words are little-endian uint32; this file, like
 * keccak.c, needs a little-endian host.
 *
 * Nothing here is static and mutable but which compiled copy of the loops
 * runs (chosen at load time; tests pin one): a cache is read-only once
 * built, so any number of threads may hash with it, and disjoint dataset
 * ranges may be generated at the same time.
 *
 * Where the time goes: a dataset item reads 256 cache items, each at an
 * index taken from the previous read, so one item is a chain of dependent
 * memory loads from a cache larger than most L2s (and, from epoch 130 or
 * so, than many L3s). The loads of *different* items are independent, so
 * items are computed side by side in lanes (the two of each hashimoto
 * access, then those of several hashes of one batch, or 16 consecutive
 * items of a dataset range) to keep several loads in flight at once. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "keccak.h"

#include "nomp_hash.h"

#define FNV_PRIME 0x01000193u
#define DATASET_PARENTS 256
#define CACHE_ROUNDS 3
#define ACCESSES 64
#define MAX_LANES 16 /* items computed side by side */
#define MAX_GROUP (MAX_LANES / 2) /* hashes per light group: two items per access */
#define FULL_GROUP 8 /* hashes per full group: one page per access */

/* Inlined into each instruction-set copy of the loops (KERNELS below). */
#define INLINE __attribute__((always_inline)) static inline

typedef uint32_t u32x16 __attribute__((vector_size(64)));

typedef union {
    u32x16 v;
    uint64_t q[8];
    uint32_t w[16];
} hash512;

_Static_assert(sizeof(hash512) == 64, "a cache or dataset item is 64 bytes");

struct nomp_ethash_cache {
    hash512 *items;
    uint64_t size; /* bytes */
    uint64_t dataset_size;
    uint32_t count; /* items */
    uint32_t pages; /* 128-byte dataset pages */
    uint64_t count_magic;
    uint64_t pages_magic;
};

static inline uint32_t fnv(uint32_t a, uint32_t b)
{
    return (a * FNV_PRIME) ^ b;
}

/* x mod d without a division: d's 64-bit reciprocal, multiplied twice
 * (exact for 32-bit x and d; Lemire, Kaser and Kurz, "Faster remainder by
 * direct computation", 2019). The division was on the chain of dependent
 * loads, and this is several times quicker. */
static inline uint64_t mod_magic(uint32_t d)
{
    return UINT64_MAX / d + 1;
}

static inline uint32_t fast_mod(uint32_t x, uint64_t magic, uint32_t d)
{
    uint64_t low = magic * x;
    return (uint32_t)(((unsigned __int128)low * d) >> 64);
}

/* --- sizes and seeds ---------------------------------------------------- */

static int is_prime(uint64_t n)
{
    if (n < 2)
        return 0;
    if (n % 2 == 0)
        return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return 0;
    return 1;
}

/* The largest size <= initial + growth * epoch - unit whose size/unit is
 * prime, stepping by 2 units as the specification does (size/unit stays odd). */
static uint64_t prime_size(uint64_t initial, uint64_t growth, uint64_t unit, uint32_t epoch)
{
    uint64_t size = initial + growth * epoch - unit;
    while (!is_prime(size / unit))
        size -= 2 * unit;
    return size;
}

uint64_t nomp_ethash_cache_size(uint32_t epoch)
{
    return prime_size(1ULL << 24, 1ULL << 17, 64, epoch);
}

uint64_t nomp_ethash_dataset_size(uint32_t epoch)
{
    return prime_size(1ULL << 30, 1ULL << 23, 128, epoch);
}

void nomp_ethash_seed_hash(uint32_t epoch, unsigned char *out)
{
    uint8_t seed[32] = {0};
    for (uint32_t i = 0; i < epoch; i++)
        keccak256(seed, 32, seed);
    memcpy(out, seed, 32);
}

void nomp_keccak256(const unsigned char *data, size_t len, unsigned char *out)
{
    keccak256(data, len, out);
}

void nomp_keccak512(const unsigned char *data, size_t len, unsigned char *out)
{
    keccak512(data, len, out);
}

/* --- memory ------------------------------------------------------------- */

/* Caches and datasets are read at random: transparent huge pages spare a
 * TLB miss on most reads. mmap also hands out zeroed pages lazily, so a
 * dataset costs memory only as it is generated. */
unsigned char *nomp_ethash_alloc(uint64_t size)
{
    if (size == 0)
        return NULL;
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(memory, size, MADV_HUGEPAGE);
#endif
    return memory;
}

void nomp_ethash_free(unsigned char *memory, uint64_t size)
{
    if (memory != NULL)
        munmap(memory, size);
}

/* --- the cache ---------------------------------------------------------- */

#define CACHE_PREFETCH 2 /* items ahead: a keccak outlasts a memory load */

static void build_cache(hash512 *items, uint32_t count, uint64_t magic, const uint8_t seed[32])
{
    keccak512(seed, 32, (uint8_t *)items[0].q);
    for (uint32_t i = 1; i < count; i++)
        keccak512_64(items[i - 1].q, items[i].q);
    /* RandMemoHash: item i = keccak512(item i-1 ^ item v), v chosen by the
     * item's own first word before it is replaced. The v of items ahead are
     * known already (those items are not rewritten yet), so they are
     * prefetched while the current item is hashed. */
    for (int round = 0; round < CACHE_ROUNDS; round++) {
        for (uint32_t i = 0; i < count; i++) {
            if (i + CACHE_PREFETCH < count)
                __builtin_prefetch(&items[fast_mod(items[i + CACHE_PREFETCH].w[0], magic, count)]);
            uint32_t v = fast_mod(items[i].w[0], magic, count);
            const hash512 *previous = &items[i == 0 ? count - 1 : i - 1];
            hash512 mixed;
            for (int k = 0; k < 8; k++)
                mixed.q[k] = previous->q[k] ^ items[v].q[k];
            keccak512_64(mixed.q, items[i].q);
        }
    }
}

nomp_ethash_cache *nomp_ethash_cache_new(const unsigned char *seed, uint64_t cache_size,
                                         uint64_t dataset_size)
{
    if (cache_size == 0 || cache_size % 64 != 0 || cache_size / 64 > UINT32_MAX)
        return NULL;
    /* Item indices are 32-bit words in the specification's arithmetic. */
    if (dataset_size == 0 || dataset_size % 128 != 0 || dataset_size / 64 > UINT32_MAX)
        return NULL;
    nomp_ethash_cache *cache = calloc(1, sizeof *cache);
    if (cache == NULL)
        return NULL;
    cache->items = (hash512 *)nomp_ethash_alloc(cache_size);
    if (cache->items == NULL) {
        free(cache);
        return NULL;
    }
    cache->size = cache_size;
    cache->dataset_size = dataset_size;
    cache->count = (uint32_t)(cache_size / 64);
    cache->pages = (uint32_t)(dataset_size / 128);
    cache->count_magic = mod_magic(cache->count);
    cache->pages_magic = mod_magic(cache->pages);
    build_cache(cache->items, cache->count, cache->count_magic, seed);
    return cache;
}

void nomp_ethash_cache_free(nomp_ethash_cache *cache)
{
    if (cache != NULL) {
        nomp_ethash_free((unsigned char *)cache->items, cache->size);
        free(cache);
    }
}

const unsigned char *nomp_ethash_cache_bytes(const nomp_ethash_cache *cache)
{
    return (const unsigned char *)cache->items;
}

/* --- dataset items ------------------------------------------------------ */

/* Items index[0..LANES) side by side, LANES a constant at each call so the
 * loops unroll and every lane's mix stays in a register: the word that picks
 * the next parent is taken out of that register rather than reloaded from
 * memory just written by a vector store, a round trip that sat on the chain
 * of every step. The lanes' loads are independent, so the out-of-order core
 * overlaps them; this, not arithmetic, sets the speed of everything below.
 * A 16-word FNV step is one AVX-512 multiply and xor. */
INLINE void items_side_by_side(const nomp_ethash_cache *cache, const uint32_t *index, hash512 *out,
                               const int LANES)
{
    const hash512 *items = cache->items;
    const uint32_t count = cache->count;
    const uint64_t magic = cache->count_magic;
    u32x16 mix[MAX_LANES];
#pragma GCC unroll 16
    for (int k = 0; k < LANES; k++) {
        hash512 start = items[fast_mod(index[k], magic, count)];
        start.w[0] ^= index[k];
        keccak512_64(start.q, start.q);
        mix[k] = start.v;
    }
    for (uint32_t j = 0; j < DATASET_PARENTS; j += 16) {
#pragma GCC unroll 16
        for (int w = 0; w < 16; w++) {
#pragma GCC unroll 16
            for (int k = 0; k < LANES; k++) {
                uint32_t parent = fast_mod(fnv(index[k] ^ (j + w), mix[k][w]), magic, count);
                mix[k] = (mix[k] * FNV_PRIME) ^ items[parent].v;
            }
        }
    }
#pragma GCC unroll 16
    for (int k = 0; k < LANES; k++) {
        hash512 end = {.v = mix[k]};
        keccak512_64(end.q, out[k].q);
    }
}

/* `lanes` items (1 to MAX_LANES), computed in the next lane count up: a
 * spare lane costs little beside the memory latency the lanes share. The
 * spare lanes repeat the first index. */
INLINE void items_any(const nomp_ethash_cache *cache, const uint32_t *index, size_t lanes, hash512 *out)
{
    uint32_t padded[MAX_LANES];
    hash512 all[MAX_LANES];
    size_t width = lanes <= 2 ? 2 : lanes <= 4 ? 4 : lanes <= 8 ? 8 : 16;
    for (size_t k = 0; k < width; k++)
        padded[k] = index[k < lanes ? k : 0];
    switch (width) {
    case 2:
        items_side_by_side(cache, padded, all, 2);
        break;
    case 4:
        items_side_by_side(cache, padded, all, 4);
        break;
    case 8:
        items_side_by_side(cache, padded, all, 8);
        break;
    default:
        items_side_by_side(cache, padded, all, 16);
        break;
    }
    memcpy(out, all, 64 * lanes);
}

INLINE void dataset_items(const nomp_ethash_cache *cache, uint64_t begin, uint64_t end, unsigned char *out)
{
    hash512 items[MAX_LANES];
    uint32_t index[MAX_LANES];
    for (uint64_t i = begin; i < end; i += MAX_LANES) {
        size_t lanes = end - i < MAX_LANES ? (size_t)(end - i) : MAX_LANES;
        for (size_t k = 0; k < lanes; k++)
            index[k] = (uint32_t)(i + k);
        items_any(cache, index, lanes, items);
        memcpy(out + 64 * (i - begin), items, 64 * lanes);
    }
}

/* --- hashimoto ---------------------------------------------------------- */

/* A dataset is the caller's memory, so it is read without assuming the
 * 64-byte alignment of u32x16 (the same instruction on x86 when it is
 * aligned, as nomp_ethash_alloc's memory is). */
typedef uint32_t u32x16_unaligned __attribute__((vector_size(64), aligned(4), may_alias));

/* The state of one hash: seed = keccak512(header || nonce) and the 32-word
 * mix (the seed twice to start). */
typedef struct {
    hash512 seed;
    hash512 mix[2];
} hashimoto_state;

INLINE void hashimoto_start(hashimoto_state *state, const unsigned char *record)
{
    keccak512_40(record, state->seed.q);
    state->mix[0] = state->seed;
    state->mix[1] = state->seed;
}

INLINE uint32_t hashimoto_page(const hashimoto_state *state, uint32_t access, uint64_t magic, uint32_t pages)
{
    uint32_t word = access % 32;
    return fast_mod(fnv(access ^ state->seed.w[0], state->mix[word / 16].w[word % 16]), magic, pages);
}

INLINE void hashimoto_fold(hashimoto_state *state, const hash512 *low, const hash512 *high)
{
    state->mix[0].v = (state->mix[0].v * FNV_PRIME) ^ low->v;
    state->mix[1].v = (state->mix[1].v * FNV_PRIME) ^ high->v;
}

/* The mix digest (each 4 words folded into one) and the final hash,
 * keccak256(seed || digest): 64 bytes of result, digest first. */
INLINE void hashimoto_finish(const hashimoto_state *state, unsigned char *result)
{
    uint64_t tail[12];
    uint32_t digest[8];
    for (int k = 0; k < 8; k++) {
        const uint32_t *w = &state->mix[k / 4].w[(k % 4) * 4];
        digest[k] = fnv(fnv(fnv(w[0], w[1]), w[2]), w[3]);
    }
    memcpy(tail, state->seed.q, 64);
    memcpy(tail + 8, digest, 32);
    memcpy(result, digest, 32);
    keccak256_96(tail, result + 32);
}

INLINE void light_group(const nomp_ethash_cache *cache, const unsigned char *records, size_t count,
                        unsigned char *results)
{
    hashimoto_state state[MAX_GROUP];
    uint32_t index[MAX_LANES];
    hash512 items[MAX_LANES];
    for (size_t h = 0; h < count; h++)
        hashimoto_start(&state[h], records + NOMP_ETHASH_RECORD_SIZE * h);
    for (uint32_t access = 0; access < ACCESSES; access++) {
        for (size_t h = 0; h < count; h++) {
            uint32_t page = hashimoto_page(&state[h], access, cache->pages_magic, cache->pages);
            index[2 * h] = 2 * page;
            index[2 * h + 1] = 2 * page + 1;
        }
        items_any(cache, index, 2 * count, items);
        for (size_t h = 0; h < count; h++)
            hashimoto_fold(&state[h], &items[2 * h], &items[2 * h + 1]);
    }
    for (size_t h = 0; h < count; h++)
        hashimoto_finish(&state[h], results + NOMP_ETHASH_RESULT_SIZE * h);
}

INLINE void light(const nomp_ethash_cache *cache, const unsigned char *records, size_t count,
                  unsigned char *results)
{
    for (size_t done = 0; done < count; done += MAX_GROUP) {
        size_t group = count - done < MAX_GROUP ? count - done : MAX_GROUP;
        light_group(cache, records + NOMP_ETHASH_RECORD_SIZE * done, group,
                    results + NOMP_ETHASH_RESULT_SIZE * done);
    }
}

/* Hashimoto-full of GROUP hashes (a constant at each call) side by side,
 * each mix in two registers for the reason given at items_side_by_side:
 * here the chain per access is the page index from the mix, one dataset
 * read (usually a DRAM miss), the fold. */
INLINE void full_group(const unsigned char *dataset, uint32_t pages, uint64_t magic, const unsigned char *records,
                       unsigned char *results, const int GROUP)
{
    hashimoto_state state[FULL_GROUP];
    u32x16 low[FULL_GROUP], high[FULL_GROUP];
#pragma GCC unroll 8
    for (int h = 0; h < GROUP; h++) {
        hashimoto_start(&state[h], records + NOMP_ETHASH_RECORD_SIZE * h);
        low[h] = state[h].seed.v;
        high[h] = state[h].seed.v;
    }
    for (uint32_t access = 0; access < ACCESSES; access += 32) {
#pragma GCC unroll 32
        for (int w = 0; w < 32; w++) {
#pragma GCC unroll 8
            for (int h = 0; h < GROUP; h++) {
                uint32_t word = w < 16 ? low[h][w % 16] : high[h][w % 16];
                uint32_t page = fast_mod(fnv((access + w) ^ state[h].seed.w[0], word), magic, pages);
                const unsigned char *page_bytes = dataset + 128 * (uint64_t)page;
                low[h] = (low[h] * FNV_PRIME) ^ *(const u32x16_unaligned *)page_bytes;
                high[h] = (high[h] * FNV_PRIME) ^ *(const u32x16_unaligned *)(page_bytes + 64);
            }
        }
    }
#pragma GCC unroll 8
    for (int h = 0; h < GROUP; h++) {
        state[h].mix[0].v = low[h];
        state[h].mix[1].v = high[h];
        hashimoto_finish(&state[h], results + NOMP_ETHASH_RESULT_SIZE * h);
    }
}

INLINE void full(const unsigned char *dataset, uint32_t pages, uint64_t magic, const unsigned char *records,
                 size_t count, unsigned char *results)
{
    size_t done = 0;
    for (; count - done >= FULL_GROUP; done += FULL_GROUP)
        full_group(dataset, pages, magic, records + NOMP_ETHASH_RECORD_SIZE * done,
                   results + NOMP_ETHASH_RESULT_SIZE * done, FULL_GROUP);
    size_t rest = count - done;
    if (rest == 0)
        return;
    /* The rest in one group of the next size up, the spare hashes repeating
     * the first: they share the memory latency, so they cost little, where
     * groups of 4, 2 and 1 one after another would each wait it out. */
    unsigned char padded[NOMP_ETHASH_RECORD_SIZE * FULL_GROUP];
    unsigned char out[NOMP_ETHASH_RESULT_SIZE * FULL_GROUP];
    const unsigned char *first = records + NOMP_ETHASH_RECORD_SIZE * done;
    for (size_t h = 0; h < FULL_GROUP; h++)
        memcpy(padded + NOMP_ETHASH_RECORD_SIZE * h, first + NOMP_ETHASH_RECORD_SIZE * (h < rest ? h : 0),
               NOMP_ETHASH_RECORD_SIZE);
    if (rest == 1)
        full_group(dataset, pages, magic, padded, out, 1);
    else if (rest == 2)
        full_group(dataset, pages, magic, padded, out, 2);
    else if (rest <= 4)
        full_group(dataset, pages, magic, padded, out, 4);
    else
        full_group(dataset, pages, magic, padded, out, FULL_GROUP);
    memcpy(results + NOMP_ETHASH_RESULT_SIZE * done, out, NOMP_ETHASH_RESULT_SIZE * rest);
}

/* The final hash is keccak256(seed || mix digest): given the digest a miner
 * claims, it costs two Keccak calls and no dataset reads. */
void nomp_ethash_final_hash(const unsigned char *record, const unsigned char *mix_digest, unsigned char *out)
{
    hash512 seed;
    uint64_t tail[12];
    keccak512_40(record, seed.q);
    memcpy(tail, seed.q, 64);
    memcpy(tail + 8, mix_digest, 32);
    keccak256_96(tail, out);
}

/* --- one compiled copy per instruction set ------------------------------ */

/* The loops above are compiled three times, for AVX-512, AVX2 and the
 * x86-64 baseline, and the best this CPU runs is chosen at load time;
 * nomp_ethash_use_kernels pins one, so tests can check every copy. */
typedef struct {
    const char *name;
    void (*dataset_items)(const nomp_ethash_cache *, uint64_t, uint64_t, unsigned char *);
    void (*light)(const nomp_ethash_cache *, const unsigned char *, size_t, unsigned char *);
    void (*full)(const unsigned char *, uint32_t, uint64_t, const unsigned char *, size_t, unsigned char *);
} ethash_kernels;

#define KERNELS(SUFFIX, ATTRS)                                                                             \
    ATTRS static void dataset_items_##SUFFIX(const nomp_ethash_cache *cache, uint64_t begin, uint64_t end, \
                                             unsigned char *out)                                           \
    {                                                                                                      \
        dataset_items(cache, begin, end, out);                                                             \
    }                                                                                                      \
    ATTRS static void light_##SUFFIX(const nomp_ethash_cache *cache, const unsigned char *records,         \
                                     size_t count, unsigned char *results)                                 \
    {                                                                                                      \
        light(cache, records, count, results);                                                             \
    }                                                                                                      \
    ATTRS static void full_##SUFFIX(const unsigned char *dataset, uint32_t pages, uint64_t magic,          \
                                    const unsigned char *records, size_t count, unsigned char *results)    \
    {                                                                                                      \
        full(dataset, pages, magic, records, count, results);                                              \
    }

KERNELS(portable, )
static const ethash_kernels portable_kernels = {"portable", dataset_items_portable, light_portable,
                                                full_portable};
#if defined(__x86_64__)
KERNELS(avx2, __attribute__((target("avx2"))))
KERNELS(avx512, __attribute__((target("avx512f"))))
static const ethash_kernels avx2_kernels = {"avx2", dataset_items_avx2, light_avx2, full_avx2};
static const ethash_kernels avx512_kernels = {"avx512f", dataset_items_avx512, light_avx512, full_avx512};
#endif

static const ethash_kernels *best_kernels = &portable_kernels;
static const ethash_kernels *kernels = &portable_kernels;

__attribute__((constructor)) static void select_ethash_kernels(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        best_kernels = &avx2_kernels;
    if (__builtin_cpu_supports("avx512f"))
        best_kernels = &avx512_kernels;
#endif
    kernels = best_kernels;
}

static const ethash_kernels *active(void)
{
    return __atomic_load_n(&kernels, __ATOMIC_RELAXED);
}

int nomp_ethash_use_kernels(const char *name)
{
    const ethash_kernels *chosen = NULL;
    if (name == NULL || name[0] == 0)
        chosen = best_kernels;
    else if (strcmp(name, "portable") == 0)
        chosen = &portable_kernels;
#if defined(__x86_64__)
    else if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2"))
        chosen = &avx2_kernels;
    else if (strcmp(name, "avx512f") == 0 && __builtin_cpu_supports("avx512f"))
        chosen = &avx512_kernels;
#endif
    if (chosen == NULL)
        return -ENOTSUP;
    __atomic_store_n(&kernels, chosen, __ATOMIC_RELAXED);
    return 0;
}

const char *nomp_ethash_kernels(void)
{
    return active()->name;
}

/* --- entry points ------------------------------------------------------- */

int nomp_ethash_dataset_items(const nomp_ethash_cache *cache, uint64_t begin, uint64_t end,
                              unsigned char *out)
{
    if (begin > end || end > cache->dataset_size / 64)
        return -EINVAL;
    active()->dataset_items(cache, begin, end, out);
    return 0;
}

void nomp_ethash_light(const nomp_ethash_cache *cache, const unsigned char *records, size_t count,
                       unsigned char *results)
{
    active()->light(cache, records, count, results);
}

int nomp_ethash_full(const unsigned char *dataset, uint64_t dataset_size, const unsigned char *records,
                     size_t count, unsigned char *results)
{
    if (dataset_size == 0 || dataset_size % 128 != 0 || dataset_size / 64 > UINT32_MAX)
        return -EINVAL;
    uint32_t pages = (uint32_t)(dataset_size / 128);
    active()->full(dataset, pages, mod_magic(pages), records, count, results);
    return 0;
}
