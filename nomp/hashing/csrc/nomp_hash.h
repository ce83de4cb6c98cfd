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

void nomp_sha256d(const unsigned char *data, size_t len, unsigned char *out);
/* scrypt(N=1024, r=1, p=1) of `count` 80-byte headers into 32 bytes each. */
int nomp_scrypt(const unsigned char *headers, size_t count, unsigned char *out);

/* Implementation choices, for tests and benchmarks. */
const char *nomp_sha256_implementation(void);
void nomp_sha256_force_portable(int on);
/* Pin the scrypt kernel to 1, 8 or 16 lanes, or 0 to choose by batch size
 * (the default); -ENOTSUP when this CPU has no such kernel. */
int nomp_scrypt_set_lanes(int lanes);
/* "1:<name> 8:<name> 16:<name>": the kernel behind each lane count. */
const char *nomp_scrypt_kernels(void);

/* Send the same `length` bytes on each of `count` non-blocking sockets
 * (no SIGPIPE). sent[i] is the number of bytes the kernel took (possibly
 * fewer than `length`: the socket's buffer is full) or -errno. */
void nomp_send_each(const int *fds, size_t count, const unsigned char *data, size_t length, long *sent);
