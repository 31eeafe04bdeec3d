/* The least per-record work any writer of issue 21's scheme does through OpenSSL, in CPU
 * microseconds (the thread's CPU time, the minimum of several runs), for bench/crypto_floor.py.
 *
 *     crypto_floor PLAINTEXT_BYTES AAD_BYTES CLEAR_LINE_BYTES EXTRA_LINE_BYTES
 *
 * Prints one "name value" line per piece.  The pieces are the ones no design of the scheme
 * avoids (docs/FORMAT.md section 11, docs/BENCHMARKS.md "Encryption"): a one-way step of the
 * chain key and a one-way record key (one SHA-256 compression each, the least a hash can
 * cost; the format's HMAC costs four), one AEAD call under a fresh key through EVP with a
 * reused context (ChaCha20-Poly1305, and AES-256-GCM for comparison), base64 of the
 * ciphertext, and hashing the longer line twice (record hash, Merkle leaf).  Built by
 * crypto_floor.py with `cc -O2 ... -lcrypto`; it is a measurement, not product code. */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Transform: one compression, nothing around it */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ROUNDS = 5, N = 400000 };

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile unsigned char sink; /* keeps every result alive */

static double time_aead(const char *name, size_t pt_len, size_t aad_len) {
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char key[32] = {7}, iv[12] = {0}, tag[16];
    unsigned char *pt = malloc(pt_len), *ct = malloc(pt_len + 16), *aad = malloc(aad_len);
    if (!cipher || !ctx || !pt || !ct || !aad || !EVP_EncryptInit_ex2(ctx, cipher, NULL, NULL, NULL)) {
        fprintf(stderr, "crypto_floor: OpenSSL has no usable %s\n", name);
        exit(2);
    }
    memset(pt, 'a', pt_len);
    memset(aad, 'b', aad_len);
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_now();
        for (int i = 0; i < N; i++) {
            int n = 0, m = 0;
            key[0] = (unsigned char)i; /* a fresh key per record, as the scheme has */
            if (!EVP_EncryptInit_ex2(ctx, NULL, key, iv, NULL) ||
                !EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) ||
                !EVP_EncryptUpdate(ctx, ct, &n, pt, (int)pt_len) ||
                !EVP_EncryptFinal_ex(ctx, ct + n, &m) ||
                !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag)) {
                fprintf(stderr, "crypto_floor: %s failed\n", name);
                exit(2);
            }
            sink ^= tag[0];
        }
        double t = (cpu_now() - t0) / N * 1e6;
        best = t < best ? t : best;
    }
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    free(pt), free(ct), free(aad);
    return best;
}

static double time_compression(void) {
    SHA256_CTX s;
    unsigned char block[64] = {0};
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        SHA256_Init(&s);
        double t0 = cpu_now();
        for (int i = 0; i < N; i++) {
            block[0] = (unsigned char)i;
            SHA256_Transform(&s, block);
        }
        double t = (cpu_now() - t0) / N * 1e6;
        best = t < best ? t : best;
        sink ^= (unsigned char)s.h[0];
    }
    return best;
}

static double time_base64(size_t ct_len) {
    unsigned char *ct = calloc(1, ct_len), *out = malloc(4 * (ct_len / 3 + 1) + 1);
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_now();
        for (int i = 0; i < N; i++) {
            ct[0] = (unsigned char)i;
            EVP_EncodeBlock(out, ct, (int)ct_len);
            sink ^= out[0];
        }
        double t = (cpu_now() - t0) / N * 1e6;
        best = t < best ? t : best;
    }
    free(ct), free(out);
    return best;
}

/* SHA-256 of a line of `len` bytes with a reused digest context. */
static double time_line_hash(size_t len) {
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *line = malloc(len), out[32];
    memset(line, 'x', len);
    double best = 1e9;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_now();
        for (int i = 0; i < N; i++) {
            line[0] = (unsigned char)i;
            if (!EVP_DigestInit_ex2(ctx, md, NULL) || !EVP_DigestUpdate(ctx, line, len) ||
                !EVP_DigestFinal_ex(ctx, out, NULL)) {
                fprintf(stderr, "crypto_floor: SHA-256 failed\n");
                exit(2);
            }
            sink ^= out[0];
        }
        double t = (cpu_now() - t0) / N * 1e6;
        best = t < best ? t : best;
    }
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
    free(line);
    return best;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: crypto_floor PLAINTEXT_BYTES AAD_BYTES CLEAR_LINE_BYTES EXTRA_LINE_BYTES\n");
        return 2;
    }
    size_t pt_len = strtoul(argv[1], NULL, 10), aad_len = strtoul(argv[2], NULL, 10);
    size_t clear_line = strtoul(argv[3], NULL, 10), extra = strtoul(argv[4], NULL, 10);
    printf("compression %.4f\n", time_compression());
    printf("chacha20-poly1305 %.4f\n", time_aead("ChaCha20-Poly1305", pt_len, aad_len));
    printf("aes-256-gcm %.4f\n", time_aead("AES-256-GCM", pt_len, aad_len));
    printf("base64 %.4f\n", time_base64(pt_len + 16));
    printf("line-hash-clear %.4f\n", time_line_hash(clear_line));
    printf("line-hash-encrypted %.4f\n", time_line_hash(clear_line + extra));
    return 0;
}
