/* The share check: from a job and a miner's extranonce2/ntime/nonce to the
 * block header and its proof-of-work hash, in one call. Written for nomp.
 *
 * Per job, the SHA-256 state after the whole 64-byte blocks of coinb1 is
 * computed once; per share only the rest of the coinbase is hashed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

#include "nomp_hash.h"

int scrypt_headers(const uint8_t *in, size_t in_stride, uint8_t *out, size_t out_stride, size_t count);

struct nomp_job {
    int algorithm;
    uint32_t nbits;
    uint32_t coinb1_midstate[8];
    size_t coinb1_prefix;   /* bytes of coinb1 inside the midstate */
    size_t coinb1_len;
    size_t coinb2_len;
    size_t branch_count;
    uint8_t prevhash[32];
    uint8_t *coinb1;
    uint8_t *coinb2;
    uint8_t *branch;
};

nomp_job *nomp_job_new(int algorithm,
                       const unsigned char *coinb1, size_t coinb1_len,
                       const unsigned char *coinb2, size_t coinb2_len,
                       const unsigned char *branch, size_t branch_count,
                       const unsigned char *prevhash, uint32_t nbits)
{
    if (algorithm != NOMP_ALGO_SHA256D && algorithm != NOMP_ALGO_SCRYPT)
        return NULL;
    nomp_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return NULL;
    /* One allocation for the three byte strings; +1 keeps malloc(0) away. */
    uint8_t *bytes = malloc(coinb1_len + coinb2_len + 32 * branch_count + 1);
    if (bytes == NULL) {
        free(job);
        return NULL;
    }
    job->algorithm = algorithm;
    job->nbits = nbits;
    job->coinb1 = bytes;
    job->coinb2 = bytes + coinb1_len;
    job->branch = bytes + coinb1_len + coinb2_len;
    memcpy(job->coinb1, coinb1, coinb1_len);
    memcpy(job->coinb2, coinb2, coinb2_len);
    memcpy(job->branch, branch, 32 * branch_count);
    memcpy(job->prevhash, prevhash, 32);
    job->coinb1_len = coinb1_len;
    job->coinb2_len = coinb2_len;
    job->branch_count = branch_count;
    job->coinb1_prefix = coinb1_len & ~(size_t)63;
    memcpy(job->coinb1_midstate, sha256_initial_state, 32);
    sha256_compress(job->coinb1_midstate, coinb1, coinb1_len / 64);
    return job;
}

void nomp_job_free(nomp_job *job)
{
    if (job != NULL) {
        free(job->coinb1);
        free(job);
    }
}

/* Build the header of one share into out[0..80). */
static int share_header(const nomp_job *job, const uint8_t *share, uint8_t *out)
{
    size_t extranonce_len = share[16];
    if (extranonce_len == 0 || extranonce_len > 16 || share[17] | share[18] | share[19])
        return -EINVAL;

    sha256_ctx ctx;
    memcpy(ctx.state, job->coinb1_midstate, 32);
    ctx.length = job->coinb1_prefix;
    ctx.buffered = 0;
    sha256_update(&ctx, job->coinb1 + job->coinb1_prefix, job->coinb1_len - job->coinb1_prefix);
    sha256_update(&ctx, share, extranonce_len);
    sha256_update(&ctx, job->coinb2, job->coinb2_len);

    uint8_t pair[64], once[32];
    sha256_final(&ctx, once);
    sha256_32(once, pair); /* pair[0..32) = coinbase txid, internal order */
    for (size_t i = 0; i < job->branch_count; i++) {
        memcpy(pair + 32, job->branch + 32 * i, 32);
        sha256d_64(pair, pair);
    }

    memcpy(out, share + 20, 4);          /* version */
    memcpy(out + 4, job->prevhash, 32);
    memcpy(out + 36, pair, 32);          /* merkle root */
    memcpy(out + 68, share + 24, 4);     /* ntime */
    store_le32(out + 72, job->nbits);
    memcpy(out + 76, share + 28, 4);     /* nonce */
    return 0;
}

int nomp_job_check(const nomp_job *job, const unsigned char *shares, size_t count,
                   unsigned char *results)
{
    for (size_t i = 0; i < count; i++) {
        int rc = share_header(job, shares + i * NOMP_SHARE_SIZE, results + i * NOMP_RESULT_SIZE);
        if (rc != 0)
            return rc;
    }
    if (job->algorithm == NOMP_ALGO_SCRYPT)
        return scrypt_headers(results, NOMP_RESULT_SIZE, results + 80, NOMP_RESULT_SIZE, count);
    for (size_t i = 0; i < count; i++) {
        uint8_t *r = results + i * NOMP_RESULT_SIZE;
        sha256d(r, 80, r + 80);
    }
    return 0;
}

void nomp_sha256d(const unsigned char *data, size_t len, unsigned char *out)
{
    sha256d(data, len, out);
}

const char *nomp_sha256_implementation(void)
{
    return sha256_implementation();
}

void nomp_sha256_force_portable(int on)
{
    sha256_select(on);
}
