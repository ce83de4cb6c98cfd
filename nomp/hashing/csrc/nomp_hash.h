/* The C interface of nomp.hashing, read by cffi as its cdef: keep it to
 * plain declarations (no includes, guards or expressions in defines). */

#define NOMP_ALGO_SHA256D 0
#define NOMP_ALGO_SCRYPT 1

/* One share for nomp_job_check, 32 bytes, little-endian integers:
 *   0..15  extranonce1 || extranonce2, left-aligned
 *   16     length of that extranonce in bytes (1..16)
 *   17..19 zero
 *   20..23 block version (already rolled, if the miner rolls it)
 *   24..27 ntime
 *   28..31 nonce
 * One result, 112 bytes: the 80-byte header, then the 32-byte PoW hash
 * (internal byte order: compare it as a little-endian integer). */
#define NOMP_SHARE_SIZE 32
#define NOMP_RESULT_SIZE 112

typedef struct nomp_job nomp_job;

/* A job: the coinbase around its extranonce, the merkle branch (count
 * 32-byte hashes, internal order), the previous block hash (internal order)
 * and nBits. Returns NULL when out of memory or given an unknown algorithm. */
nomp_job *nomp_job_new(int algorithm,
                       const unsigned char *coinb1, size_t coinb1_len,
                       const unsigned char *coinb2, size_t coinb2_len,
                       const unsigned char *branch, size_t branch_count,
                       const unsigned char *prevhash, uint32_t nbits);
void nomp_job_free(nomp_job *job);

/* Check `count` shares of one job: coinbase, merkle root, header, PoW hash.
 * 0 on success, -EINVAL for a malformed share record, -ENOMEM. */
int nomp_job_check(const nomp_job *job, const unsigned char *shares, size_t count,
                   unsigned char *results);

/* Threads that check shares without Python (workers.c). Each share is
 * queued on its own with a tag; the threads batch them by job, up to
 * NOMP_WORKERS_MAX_BATCH, at once when `full` of a job are queued and
 * otherwise once its oldest share, if it came while no batch was being
 * checked, is `linger_ns` old. Each thread runs `niceness` steps below
 * the priority of the thread that made it (a Linux thread has a nice value
 * of its own). When the finished list was empty a byte is
 * written to `notify_fd`; read it before nomp_workers_finished, which
 * copies out whole finished batches (each share's tag, nomp_job_check's
 * status and its NOMP_RESULT_SIZE result) up to `max` shares (at least
 * NOMP_WORKERS_MAX_BATCH), and returns how many; call it until it returns 0.
 * Each share's job must stay allocated until its result is taken.
 * nomp_workers_new: NULL when out of memory or given threads < 1 or a
 * `full` outside 1..NOMP_WORKERS_MAX_BATCH. nomp_workers_submit: 0,
 * -ENOMEM, or -EINVAL once stopping. nomp_workers_counts: shares queued,
 * batches being checked and batches taken since the start. nomp_workers_stop lets the threads check what
 * is queued, then joins them; nomp_workers_free stops them first if needed. */
#define NOMP_WORKERS_MAX_BATCH 32
typedef struct nomp_workers nomp_workers;
nomp_workers *nomp_workers_new(int threads, int notify_fd, size_t full, uint64_t linger_ns, int niceness);
int nomp_workers_submit(nomp_workers *workers, const nomp_job *job, const unsigned char *record,
                        uint64_t tag);
size_t nomp_workers_finished(nomp_workers *workers, uint64_t *tags, int *statuses, unsigned char *results,
                             size_t max);
void nomp_workers_counts(nomp_workers *workers, size_t *waiting, size_t *checking, uint64_t *batches);
void nomp_workers_stop(nomp_workers *workers);
void nomp_workers_free(nomp_workers *workers);

void nomp_sha256d(const unsigned char *data, size_t len, unsigned char *out);
/* scrypt(N=1024, r=1, p=1) of `count` 80-byte headers into 32 bytes each. */
int nomp_scrypt(const unsigned char *headers, size_t count, unsigned char *out);

/* Implementation choices, for tests and benchmarks. */
const char *nomp_sha256_implementation(void);
void nomp_sha256_force_portable(int on);
/* Pin the scrypt kernel to 1, 4, 8 or 16 lanes, or 0 to choose by batch
 * size (the default); -ENOTSUP when this CPU has no such kernel. */
int nomp_scrypt_set_lanes(int lanes);
/* Build the scrypt kernels from at most "portable", "sse2", "avx2",
 * "avx512f" or "avx512vl" instructions, or NULL for the best this CPU runs
 * (the default); -ENOTSUP when this CPU has no such instructions. A pinned
 * lane count the new set has no kernel for goes back to 0. For tests and
 * benchmarks. */
int nomp_scrypt_use_kernels(const char *isa);
/* "1:<name> 4:<name> 8:<name> 16:<name>": the kernel behind each lane count. */
const char *nomp_scrypt_kernels(void);

/* Send the same `length` bytes on each of `count` non-blocking sockets
 * (no SIGPIPE). sent[i] is the number of bytes the kernel took (possibly
 * fewer than `length`: the socket's buffer is full) or -errno. */
void nomp_send_each(const int *fds, size_t count, const unsigned char *data, size_t length, long *sent);

/* Ethash and etchash (ethash.c, keccak.c). Keccak here is the original
 * Keccak (padding 0x01), as Ethereum uses it, not SHA-3. */
void nomp_keccak256(const unsigned char *data, size_t len, unsigned char *out);
void nomp_keccak512(const unsigned char *data, size_t len, unsigned char *out);

/* Sizes in bytes of the cache and the dataset of a (size) epoch, and the
 * 32-byte seed of a (seed) epoch: etchash takes them from different epochs. */
uint64_t nomp_ethash_cache_size(uint32_t epoch);
uint64_t nomp_ethash_dataset_size(uint32_t epoch);
void nomp_ethash_seed_hash(uint32_t epoch, unsigned char *out);

/* One hash's input, 40 bytes: the 32-byte header hash, then the nonce as a
 * little-endian uint64. One result, 64 bytes: the 32-byte mix digest, then
 * the 32-byte final hash (compare it as a big-endian integer). */
#define NOMP_ETHASH_RECORD_SIZE 40
#define NOMP_ETHASH_RESULT_SIZE 64

typedef struct nomp_ethash_cache nomp_ethash_cache;

/* Build the light cache of `cache_size` bytes (a multiple of 64) from a
 * 32-byte seed, for hashing over a dataset of `dataset_size` bytes (a
 * multiple of 128); each holds at most 2^32 64-byte items. Slow (seconds):
 * call it off the reactor thread. NULL when out of memory or given sizes
 * that break those rules. */
nomp_ethash_cache *nomp_ethash_cache_new(const unsigned char *seed, uint64_t cache_size,
                                         uint64_t dataset_size);
void nomp_ethash_cache_free(nomp_ethash_cache *cache);
/* The cache's cache_size bytes, read-only. */
const unsigned char *nomp_ethash_cache_bytes(const nomp_ethash_cache *cache);

/* Hashimoto over the cache (dataset items computed as needed) for `count`
 * records into `count` results. Thread-safe. */
void nomp_ethash_light(const nomp_ethash_cache *cache, const unsigned char *records, size_t count,
                       unsigned char *results);

/* Memory for a dataset (or any large buffer): zeroed, lazily committed,
 * huge pages where the kernel offers them; NULL when out of memory. */
unsigned char *nomp_ethash_alloc(uint64_t size);
void nomp_ethash_free(unsigned char *memory, uint64_t size);

/* Dataset items [begin, end), 64 bytes each, into out[0 .. 64 * (end - begin)).
 * Disjoint ranges may be generated by several threads at once. 0, or
 * -EINVAL when the range is not within the cache's dataset. */
int nomp_ethash_dataset_items(const nomp_ethash_cache *cache, uint64_t begin, uint64_t end,
                              unsigned char *out);

/* Hashimoto over a whole generated dataset of `dataset_size` bytes (any
 * alignment; read-only, so any number of threads may share it). 0, or
 * -EINVAL for a size that is not a multiple of 128 or too large. */
int nomp_ethash_full(const unsigned char *dataset, uint64_t dataset_size, const unsigned char *records,
                     size_t count, unsigned char *results);

/* Pin the ethash loops to the copy compiled for "portable", "avx2" or
 * "avx512f", or NULL for the best this CPU runs (the default); -ENOTSUP
 * when this CPU has no such instructions. For tests and benchmarks. */
int nomp_ethash_use_kernels(const char *name);
const char *nomp_ethash_kernels(void);

/* The 32-byte final hash one record (header hash, nonce) has if its mix
 * digest is `mix_digest`, without hashimoto: a share whose claimed digest
 * gives a final hash above its boundary can be refused at this cost; one
 * that passes still needs hashimoto to prove the digest. */
void nomp_ethash_final_hash(const unsigned char *record, const unsigned char *mix_digest, unsigned char *out);
