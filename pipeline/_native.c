/*
 * pipeline._native: optional C accelerator for the three per-record hot paths.
 *
 * Everything here has a pure-Python reference next to it (pipeline.merkle.CompactRange,
 * pipeline.record.encode_record, pipeline.sanitise._bytes_hint, pipeline.verify.chain's
 * per-line checks); the package works without this module, and the test suite checks that
 * both give the same bytes and the same verdicts.  It exists because the hot tier's
 * throughput targets (issue 2) cannot be met with per-record work in the interpreter.
 *
 * SHA-256 comes from OpenSSL's libcrypto, the same library hashlib uses; nothing
 * cryptographic is implemented here.  Tree hashing follows RFC 6962 section 2.1:
 * leaf = SHA-256(0x00 || line), node = SHA-256(0x01 || left || right).
 *
 * The OTLP decoder's fast path (otlp_event) converts a protobuf log record only when its
 * meaning is free of protobuf's choices (see its section); anything else goes to
 * protobuf's own parser and pipeline.ingest.otlp._event, the reference.
 *
 * The verifier's fast path (scan_lines) only ever accepts a line that the Python verifier
 * would accept with the same result; anything unusual (a seal, a recovery record, the first
 * record of a segment, any deviation at all) stops it, and the Python code judges that line
 * with its full rules.  Its JSON check is a strict subset of what orjson.loads accepts.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co: see sha256() below */
#include <Python.h>
#include <pythread.h>
#include <structmember.h>
#include <stddef.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HASH_LEN 32
#define HEX_LEN 64
#define MAX_LEVELS 64

static const char HEX[] = "0123456789abcdef";


/* decimal digits of v into out (no terminator); returns the length */
static int put_u64(unsigned long long v, char *out)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static char hex_pairs[256][2];

static void hex_init(void)
{
    for (int i = 0; i < 256; i++) {
        hex_pairs[i][0] = HEX[i >> 4];
        hex_pairs[i][1] = HEX[i & 15];
    }
}

static void to_hex(const unsigned char *in, char *out)
{
    for (int i = 0; i < HASH_LEN; i++)
        memcpy(out + 2 * i, hex_pairs[in[i]], 2);
}

/* Standard base64 (RFC 4648 section 4, with '=' padding; the bytes of EVP_EncodeBlock and of
 * Python's base64.b64encode), two output characters per 12-bit lookup. */
static const char B64_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static char b64_pairs[4096][2];

static void b64_init(void)
{
    for (int i = 0; i < 4096; i++) {
        b64_pairs[i][0] = B64_ALPHABET[i >> 6];
        b64_pairs[i][1] = B64_ALPHABET[i & 63];
    }
}

static inline uint64_t load_be64(const unsigned char *p)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
#else
    uint64_t v = 0;
    for (int j = 0; j < 8; j++)
        v = v << 8 | p[j];
    return v;
#endif
}

/* base64 of s[0:n] into out (4 * ((n + 2) / 3) bytes, no terminator); returns the length */
static size_t b64_encode(const unsigned char *s, size_t n, char *out)
{
    char *d = out;
    size_t i = 0;
    for (; i + 8 <= n; i += 6) { /* six bytes (read as eight) -> eight characters, one store */
        uint64_t w = load_be64(s + i);
        char quad[8];
        memcpy(quad, b64_pairs[(w >> 52) & 4095], 2);
        memcpy(quad + 2, b64_pairs[(w >> 40) & 4095], 2);
        memcpy(quad + 4, b64_pairs[(w >> 28) & 4095], 2);
        memcpy(quad + 6, b64_pairs[(w >> 16) & 4095], 2);
        memcpy(d, quad, 8);
        d += 8;
    }
    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        memcpy(d, b64_pairs[w >> 12], 2);
        memcpy(d + 2, b64_pairs[w & 4095], 2);
        d += 4;
    }
    if (n - i == 1) {
        uint32_t w = (uint32_t)s[i] << 16;
        memcpy(d, b64_pairs[w >> 12], 2);
        d[2] = d[3] = '=';
        d += 4;
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        memcpy(d, b64_pairs[w >> 12], 2);
        d[2] = B64_ALPHABET[(w >> 6) & 63];
        d[3] = '=';
        d += 4;
    }
    return (size_t)(d - out);
}

/*
 * SHA-256 through OpenSSL's SHA256_Init/Update/Final.  These are deprecated in OpenSSL 3 in
 * favour of EVP, but remain in every 3.x release; they are used on purpose: the one-shot
 * SHA256() does an implicit algorithm fetch per call in 3.x (about 1 us, twice the cost of
 * hashing a 470-byte line), and a reused EVP context still adds ~0.06 us per call, which is
 * measurable at hundreds of thousands of records per second (three to four hashes each).
 */
static void sha256(const unsigned char *data, size_t n, unsigned char *out)
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, data, n);
    SHA256_Final(out, &ctx);
}

/* RFC 6962 leaf hash: SHA-256(0x00 || data[0:n]). */
static void leaf_hash(const unsigned char *data, size_t n, unsigned char *out)
{
    static const unsigned char zero = 0;
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, &zero, 1);
    SHA256_Update(&ctx, data, n);
    SHA256_Final(out, &ctx);
}

/* RFC 6962 node hash: SHA-256(0x01 || left || right). */
static void node_hash(const unsigned char *left, const unsigned char *right, unsigned char *out)
{
    unsigned char buf[1 + 2 * HASH_LEN];
    buf[0] = 1;
    memcpy(buf + 1, left, HASH_LEN);
    memcpy(buf + 1 + HASH_LEN, right, HASH_LEN);
    sha256(buf, sizeof buf, out);
}

/* ---------------------------------------------------------------- CompactRange ------ */

typedef struct {
    PyObject_HEAD
    uint64_t size;
    int depth; /* popcount(size): number of perfect subtrees held */
    unsigned char stack[MAX_LEVELS][HASH_LEN];
} CompactRangeObject;

static PyTypeObject CompactRangeType;

#define CR_MAX_SIZE ((uint64_t)1 << 62)

/* Callers check size < CR_MAX_SIZE first (this may run without the GIL: it cannot raise). */
static void cr_push(CompactRangeObject *self, const unsigned char *lh)
{
    unsigned char h[HASH_LEN];
    memcpy(h, lh, HASH_LEN);
    uint64_t n = self->size;
    while (n & 1) {
        self->depth--;
        node_hash(self->stack[self->depth], h, h);
        n >>= 1;
    }
    memcpy(self->stack[self->depth], h, HASH_LEN);
    self->depth++;
    self->size++;
}

static int cr_init(CompactRangeObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", "stack", NULL};
    unsigned long long size = 0;
    PyObject *stack = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|KO", kwlist, &size, &stack))
        return -1;
    Py_ssize_t n = 0;
    PyObject *seq = NULL;
    if (stack != NULL) {
        seq = PySequence_Fast(stack, "stack must be a sequence of 32-byte hashes");
        if (seq == NULL)
            return -1;
        n = PySequence_Fast_GET_SIZE(seq);
    }
    if (size >= CR_MAX_SIZE || n != __builtin_popcountll(size)) {
        Py_XDECREF(seq);
        PyErr_SetString(PyExc_ValueError, "compact range needs exactly one hash per set bit of size");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) != HASH_LEN) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "compact range hashes must be 32-byte bytes");
            return -1;
        }
        memcpy(self->stack[i], PyBytes_AS_STRING(item), HASH_LEN);
    }
    Py_XDECREF(seq);
    self->size = size;
    self->depth = (int)n;
    return 0;
}

static PyObject *cr_append(CompactRangeObject *self, PyObject *lh)
{
    if (!PyBytes_Check(lh) || PyBytes_GET_SIZE(lh) != HASH_LEN) {
        PyErr_SetString(PyExc_ValueError, "a leaf hash is 32 bytes");
        return NULL;
    }
    if (self->size >= CR_MAX_SIZE) {
        PyErr_SetString(PyExc_OverflowError, "compact range is full");
        return NULL;
    }
    cr_push(self, (const unsigned char *)PyBytes_AS_STRING(lh));
    Py_RETURN_NONE;
}

static void cr_root_into(CompactRangeObject *self, unsigned char *out)
{
    if (self->depth == 0) {
        sha256((const unsigned char *)"", 0, out);
        return;
    }
    unsigned char h[HASH_LEN];
    memcpy(h, self->stack[self->depth - 1], HASH_LEN);
    for (int i = self->depth - 2; i >= 0; i--)
        node_hash(self->stack[i], h, h);
    memcpy(out, h, HASH_LEN);
}

static PyObject *cr_root(CompactRangeObject *self, PyObject *Py_UNUSED(ignored))
{
    unsigned char h[HASH_LEN];
    cr_root_into(self, h);
    return PyBytes_FromStringAndSize((const char *)h, HASH_LEN);
}

static PyObject *cr_copy(CompactRangeObject *self, PyObject *Py_UNUSED(ignored))
{
    CompactRangeObject *c = PyObject_New(CompactRangeObject, &CompactRangeType);
    if (c == NULL)
        return NULL;
    c->size = self->size;
    c->depth = self->depth;
    memcpy(c->stack, self->stack, (size_t)self->depth * HASH_LEN);
    return (PyObject *)c;
}

static PyObject *cr_get_stack(CompactRangeObject *self, void *Py_UNUSED(closure))
{
    PyObject *list = PyList_New(self->depth);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < self->depth; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)self->stack[i], HASH_LEN);
        if (b == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, b);
    }
    return list;
}

static PyObject *cr_get_size(CompactRangeObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->size);
}

static PyObject *cr_reduce(CompactRangeObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *stack = cr_get_stack(self, NULL);
    if (stack == NULL)
        return NULL;
    return Py_BuildValue("O(KN)", (PyObject *)Py_TYPE(self), (unsigned long long)self->size, stack);
}

static PyObject *cr_repr(CompactRangeObject *self)
{
    return PyUnicode_FromFormat("CompactRange(size=%llu)", (unsigned long long)self->size);
}

static PyMethodDef cr_methods[] = {
    {"append", (PyCFunction)cr_append, METH_O, "Append one leaf hash (already leaf-hashed)."},
    {"root", (PyCFunction)cr_root, METH_NOARGS, "RFC 6962 root of the leaves appended so far."},
    {"copy", (PyCFunction)cr_copy, METH_NOARGS, "An independent copy."},
    {"__reduce__", (PyCFunction)cr_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cr_getset[] = {
    {"size", (getter)cr_get_size, NULL, "number of leaves", NULL},
    {"stack", (getter)cr_get_stack, NULL, "perfect-subtree hashes, largest (leftmost) first", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CompactRangeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._native.CompactRange",
    .tp_basicsize = sizeof(CompactRangeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Merkle compact range (RFC 6962 tree frontier): O(log n) state, append-only.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)cr_init,
    .tp_methods = cr_methods,
    .tp_getset = cr_getset,
    .tp_repr = (reprfunc)cr_repr,
};

static int as_cr(PyObject *o, CompactRangeObject **out)
{
    if (o == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyObject_TypeCheck(o, &CompactRangeType)) {
        PyErr_SetString(PyExc_TypeError, "expected a native CompactRange or None");
        return -1;
    }
    *out = (CompactRangeObject *)o;
    return 0;
}

/*
 * hash_lines(lines, start, seg_cr, stream_cr) -> list[bytes]
 *
 * RFC 6962 leaf hashes of lines[start:] (each a record line; its trailing newline is not
 * part of the leaf), appended in order to both compact ranges (either may be None).  The
 * writer's Merkle maintenance, done by whichever thread flushes or seals: the hashing runs
 * without the GIL, so it overlaps appends on another core.  The list and the ranges must
 * not be changed by another thread meanwhile (the writer's _merkle_lock guarantees it).
 */
static PyObject *hash_lines(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hash_lines(lines: list, start: int, seg_cr, stream_cr)");
        return NULL;
    }
    PyObject *lines = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    CompactRangeObject *seg_cr, *stream_cr;
    if (as_cr(args[2], &seg_cr) < 0 || as_cr(args[3], &stream_cr) < 0)
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(lines);
    if (start < 0 || start > total) {
        PyErr_SetString(PyExc_ValueError, "hash_lines: start outside the list");
        return NULL;
    }
    Py_ssize_t count = total - start;
    if ((seg_cr && seg_cr->size + (uint64_t)count >= CR_MAX_SIZE) ||
        (stream_cr && stream_cr->size + (uint64_t)count >= CR_MAX_SIZE)) {
        PyErr_SetString(PyExc_OverflowError, "compact range is full");
        return NULL;
    }
    const unsigned char **ptrs = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(*ptrs));
    size_t *lens = PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(*lens));
    unsigned char *out = PyMem_RawMalloc((size_t)(count ? count : 1) * HASH_LEN);
    if (ptrs == NULL || lens == NULL || out == NULL) {
        PyMem_RawFree(ptrs);
        PyMem_RawFree(lens);
        PyMem_RawFree(out);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *line = PyList_GET_ITEM(lines, start + i);
        if (!PyBytes_Check(line) || PyBytes_GET_SIZE(line) < 1) {
            PyMem_RawFree(ptrs);
            PyMem_RawFree(lens);
            PyMem_RawFree(out);
            PyErr_SetString(PyExc_TypeError, "hash_lines: every line must be non-empty bytes");
            return NULL;
        }
        ptrs[i] = (const unsigned char *)PyBytes_AS_STRING(line);
        lens[i] = (size_t)PyBytes_GET_SIZE(line) - 1;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned char *lh = out + i * HASH_LEN;
        leaf_hash(ptrs[i], lens[i], lh);
        if (seg_cr)
            cr_push(seg_cr, lh);
        if (stream_cr)
            cr_push(stream_cr, lh);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(ptrs);
    PyMem_RawFree(lens);
    PyObject *result = PyList_New(count);
    for (Py_ssize_t i = 0; result != NULL && i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)(out + i * HASH_LEN), HASH_LEN);
        if (b == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, i, b);
    }
    PyMem_RawFree(out);
    return result;
}

/*
 * append_collect(cr, leaf_hashes, tile_height) -> dict[int, list[bytes]]
 *
 * Appends each 32-byte leaf hash to ``cr`` (as CompactRange.append does) and returns the
 * node hashes completed on the way at every level that is a multiple of ``tile_height``,
 * in order: what a tiled store persists (pipeline.hot.tree.TreeStore.append).  Validates
 * every leaf before changing anything.  Hashes without the GIL: ``cr`` must not be used by
 * another thread meanwhile (TreeStore passes a private copy).
 */
static PyObject *append_collect(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &CompactRangeType) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "append_collect(cr: CompactRange, leaf_hashes: list, tile_height: int)");
        return NULL;
    }
    CompactRangeObject *cr = (CompactRangeObject *)args[0];
    PyObject *leaves = args[1];
    long tile = PyLong_AsLong(args[2]);
    if (tile == -1 && PyErr_Occurred())
        return NULL;
    if (tile < 1 || tile > MAX_LEVELS) {
        PyErr_SetString(PyExc_ValueError, "tile_height must be between 1 and 64");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(leaves);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *lh = PyList_GET_ITEM(leaves, i);
        if (!PyBytes_Check(lh) || PyBytes_GET_SIZE(lh) != HASH_LEN) {
            PyErr_SetString(PyExc_ValueError, "leaf hash must be 32 bytes");
            return NULL;
        }
    }
    if (cr->size + (uint64_t)count >= CR_MAX_SIZE) {
        PyErr_SetString(PyExc_OverflowError, "compact range is full");
        return NULL;
    }
    /* copy the leaves out, then hash without the GIL: TreeStore.append runs on the writer's
     * flush thread, so this work overlaps the appending threads */
    unsigned char *in = PyMem_RawMalloc((size_t)(count ? count : 1) * HASH_LEN);
    size_t cap = (size_t)count + MAX_LEVELS;
    unsigned char *nodes = PyMem_RawMalloc(cap * HASH_LEN);
    int *levels = PyMem_RawMalloc(cap * sizeof(int));
    if (in == NULL || nodes == NULL || levels == NULL) {
        PyMem_RawFree(in);
        PyMem_RawFree(nodes);
        PyMem_RawFree(levels);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++)
        memcpy(in + i * HASH_LEN, PyBytes_AS_STRING(PyList_GET_ITEM(leaves, i)), HASH_LEN);
    size_t produced = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned char h[HASH_LEN];
        memcpy(h, in + i * HASH_LEN, HASH_LEN);
        uint64_t n = cr->size;
        int level = 0;
        while (n & 1) {
            cr->depth--;
            node_hash(cr->stack[cr->depth], h, h);
            n >>= 1;
            level++;
            if (level % tile == 0 && produced < cap) { /* at most one per tile-level merge */
                memcpy(nodes + produced * HASH_LEN, h, HASH_LEN);
                levels[produced++] = level;
            }
        }
        memcpy(cr->stack[cr->depth], h, HASH_LEN);
        cr->depth++;
        cr->size++;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(in);
    PyObject *out = PyDict_New();
    for (size_t j = 0; out != NULL && j < produced; j++) {
        PyObject *key = PyLong_FromLong(levels[j]);
        PyObject *node = PyBytes_FromStringAndSize((const char *)(nodes + j * HASH_LEN), HASH_LEN);
        PyObject *lst = key ? PyDict_GetItemWithError(out, key) : NULL; /* borrowed */
        int bad = key == NULL || node == NULL || PyErr_Occurred();
        if (!bad && lst == NULL) {
            lst = PyList_New(0);
            bad = lst == NULL || PyDict_SetItem(out, key, lst) < 0;
            Py_XDECREF(lst); /* the dict holds it */
        }
        bad = bad || PyList_Append(lst, node) < 0;
        Py_XDECREF(key);
        Py_XDECREF(node);
        if (bad)
            Py_CLEAR(out); /* memory exhaustion: the caller's range is a private copy */
    }
    PyMem_RawFree(nodes);
    PyMem_RawFree(levels);
    return out;
}

/* ----------------------------------------------------------------- append_record ---- */

static const char TS_KEY[] = ",\"ts\":\"";
static const char KIND_KEY[] = "\",\"kind\":\"";
static const char PREV_KEY[] = "\",\"prev\":\"";
static const char DATA_KEY[] = "\",\"data\":";
static const char HASH_KEY[] = ",\"hash\":\"";
static const char TAIL[] = "\"}\n";
#define LIT(s) (sizeof(s) - 1)

/* ------------------------------------------------------------------------ Ratchet ---- */
/*
 * The per-event work of an encrypted stream (docs/FORMAT.md section 11; Python reference:
 * pipeline.crypt.writer.PyRatchet, same bytes):
 *
 *   K(s)  = SHA-256("worm-pipeline/ratchet/v1" 0x00 || K(s-1))
 *   k(s)  = HMAC-SHA-256(K(s), "worm-pipeline/record-key/v1")
 *   ct    = ChaCha20-Poly1305(k(s), 12 zero bytes, plaintext, aad_prefix || DEC(s) 0x00 DEC(S))
 *   data  = head || "_enc":{"key_seq":S,"ct":"<base64(ct)>"}}
 *
 * The chain key lives only in this object's C buffer, overwritten in place at every step and
 * cleansed on erase and on deallocation; the seed is drawn into it with RAND_bytes and leaves
 * it only through wrap(), in a temporary that is cleansed after age has wrapped it.  Record
 * keys live on the C stack and are cleansed after use; the cipher context is re-keyed between
 * the records of one batch and freed (OpenSSL cleanses it) before the call returns.  So,
 * unlike the Python reference, no chain or record key ever becomes a Python object.
 *
 * HMAC is computed over the low-level SHA-256 compression function (RFC 2104 with a 32-byte
 * key, which is shorter than the 64-byte block and so only zero-padded) for the reason given
 * at sha256() above: HMAC() and EVP_MAC fetch or re-key heavier contexts per call (measured
 * here: HMAC() 1.0 us, a reused EVP_MAC_CTX 0.37 us, these two hashes 0.15 us, against a
 * clear append of about 2.5 us per event), and EVP_MAC would keep the keyed pads of the last
 * k(s) in a long-lived context.  The cipher is fetched once, at module initialisation.
 */

#define KEY_LEN 32
#define TAG_LEN 16
#define RATCHET_ERASED ((unsigned long long)1 << 62)

static const char RATCHET_DOMAIN[] = "worm-pipeline/ratchet/v1"; /* followed by its 0x00 */
static const char RECORD_KEY_LABEL[] = "worm-pipeline/record-key/v1";
static const char ENC_HEAD[] = "\"_enc\":{\"key_seq\":";
static const char ENC_CT[] = ",\"ct\":\"";
static const char ENC_TAIL[] = "\"}}";

/*
 * ChaCha20-Poly1305 is called through the functions of the provider that implements it (the
 * OpenSSL 3 provider interface: provider-cipher(7), found with OSSL_PROVIDER_query_operation
 * for the cipher EVP_CIPHER_fetch returned), not through EVP_EncryptInit/Update/Final.  Same
 * implementation, same bytes; EVP's wrappers add ~1,100 instructions per record here (the key
 * and IV lengths are looked up through OSSL_PARAM name searches at every init).  The fetched
 * cipher is kept for the life of the process, and with it the provider these functions
 * belong to.
 */
static EVP_CIPHER *chacha_poly; /* fetched once in PyInit__native */
static struct {
    void *provctx;
    OSSL_FUNC_cipher_newctx_fn *newctx;
    OSSL_FUNC_cipher_freectx_fn *freectx; /* OPENSSL_clear_free: the key and state are cleansed */
    OSSL_FUNC_cipher_encrypt_init_fn *einit;
    OSSL_FUNC_cipher_update_fn *update;
    OSSL_FUNC_cipher_final_fn *final;
    OSSL_FUNC_cipher_get_ctx_params_fn *get_ctx_params;
} aead;

static int has_name(const char *names, const char *want)
{
    size_t lw = strlen(want);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ':');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == lw && OPENSSL_strncasecmp(p, want, lw) == 0)
            return 1;
        if (e == NULL)
            break;
        p = e + 1;
    }
    return 0;
}

/* chacha_poly and aead, once; -1 with ImportError. */
static int aead_init(void)
{
    if (chacha_poly == NULL && (chacha_poly = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL)) == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no ChaCha20-Poly1305");
        return -1;
    }
    const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(chacha_poly);
    int no_store = 0;
    const OSSL_ALGORITHM *alg = prov ? OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_store) : NULL;
    for (const OSSL_ALGORITHM *a = alg; a != NULL && a->algorithm_names != NULL; a++) {
        if (!has_name(a->algorithm_names, "ChaCha20-Poly1305"))
            continue;
        for (const OSSL_DISPATCH *d = a->implementation; d->function_id != 0; d++) {
            switch (d->function_id) {
            case OSSL_FUNC_CIPHER_NEWCTX: aead.newctx = OSSL_FUNC_cipher_newctx(d); break;
            case OSSL_FUNC_CIPHER_FREECTX: aead.freectx = OSSL_FUNC_cipher_freectx(d); break;
            case OSSL_FUNC_CIPHER_ENCRYPT_INIT: aead.einit = OSSL_FUNC_cipher_encrypt_init(d); break;
            case OSSL_FUNC_CIPHER_UPDATE: aead.update = OSSL_FUNC_cipher_update(d); break;
            case OSSL_FUNC_CIPHER_FINAL: aead.final = OSSL_FUNC_cipher_final(d); break;
            case OSSL_FUNC_CIPHER_GET_CTX_PARAMS: aead.get_ctx_params = OSSL_FUNC_cipher_get_ctx_params(d); break;
            default: break;
            }
        }
        break;
    }
    if (alg != NULL)
        OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, alg);
    aead.provctx = prov ? OSSL_PROVIDER_get0_provider_ctx(prov) : NULL;
    if (!aead.newctx || !aead.freectx || !aead.einit || !aead.update || !aead.final || !aead.get_ctx_params) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL's provider of ChaCha20-Poly1305 lacks a cipher function");
        return -1;
    }
    return 0;
}

typedef struct {
    PyObject_HEAD
    unsigned char k[KEY_LEN]; /* K(at) */
    unsigned long long at;    /* RATCHET_ERASED once erased */
    unsigned long long key_seq;
    void *cctx;               /* the provider's cipher context while it holds a record key,
                                 else NULL: freed (cleansed) by ratchet_release() */
    char *aad;                /* aad_prefix, then room for DEC(seq) 0x00 DEC(key_seq) */
    Py_ssize_t aad_prefix_len;
    unsigned char *buf;       /* scratch: the ciphertext, then the data bytes (nothing secret) */
    size_t buf_size;
} RatchetObject;

static PyTypeObject RatchetType;

/*
 * The ratchet step and the record-key HMAC hash fixed-length messages, so their SHA-256
 * padding is known in advance: they run the compression function (SHA256_Transform, which
 * takes the same SHA-NI / AVX code path as SHA256_Update) over pre-padded blocks, without
 * the buffering of SHA256_Update/Final.  Same bytes as SHA-256 (FIPS 180-4 section 5.1.1
 * padding); tests/crypt/test_ratchet_bytes.py and test_native_ratchet.py compare them with the
 * Python reference, which uses hashlib and hmac.
 *
 *   step:  "worm-pipeline/ratchet/v1" 0x00 || K          57 bytes: block 1 = message || 0x80 || 0^6,
 *                                                         block 2 = 0^56 || be64(456)
 *   inner: (K ^ ipad) || RECORD_KEY_LABEL                 block 1 = K ^ 0x36.., block 2 = label || 0x80 || 0.. || be64(728)
 *   outer: (K ^ opad) || inner digest                     block 1 = K ^ 0x5c.., block 2 = digest || 0x80 || 0.. || be64(768)
 */
static const SHA_LONG SHA256_H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
static unsigned char step_block2[64], hmac_inner_block2[64], hmac_outer_block2[64];

static void be64_at_end(unsigned char *block, uint64_t bits)
{
    for (int i = 0; i < 8; i++)
        block[63 - i] = (unsigned char)(bits >> (8 * i));
}

static void ratchet_blocks_init(void)
{
    memset(step_block2, 0, 64);
    be64_at_end(step_block2, (LIT(RATCHET_DOMAIN) + 1 + KEY_LEN) * 8);
    memset(hmac_inner_block2, 0, 64);
    memcpy(hmac_inner_block2, RECORD_KEY_LABEL, LIT(RECORD_KEY_LABEL));
    hmac_inner_block2[LIT(RECORD_KEY_LABEL)] = 0x80;
    be64_at_end(hmac_inner_block2, (64 + LIT(RECORD_KEY_LABEL)) * 8);
    memset(hmac_outer_block2, 0, 64);
    hmac_outer_block2[HASH_LEN] = 0x80;
    be64_at_end(hmac_outer_block2, (64 + HASH_LEN) * 8);
}

/* SHA-256 of the two blocks b1, b2 (the message already padded) into out. */
static void sha256_two_blocks(const unsigned char *b1, const unsigned char *b2, unsigned char *out)
{
    SHA256_CTX ctx;
    memcpy(ctx.h, SHA256_H0, sizeof SHA256_H0);
    SHA256_Transform(&ctx, b1);
    SHA256_Transform(&ctx, b2);
    for (int i = 0; i < 8; i++) {
        SHA_LONG v = ctx.h[i];
        out[4 * i] = (unsigned char)(v >> 24);
        out[4 * i + 1] = (unsigned char)(v >> 16);
        out[4 * i + 2] = (unsigned char)(v >> 8);
        out[4 * i + 3] = (unsigned char)v;
    }
    OPENSSL_cleanse(ctx.h, sizeof ctx.h); /* the only member SHA256_Transform writes */
}

/* K -> SHA-256(RATCHET_DOMAIN 0x00 || K), in place (k may be any KEY_LEN buffer). */
static void chain_step(unsigned char *k)
{
    unsigned char block[64];
    memcpy(block, RATCHET_DOMAIN, LIT(RATCHET_DOMAIN));
    block[LIT(RATCHET_DOMAIN)] = 0;
    memcpy(block + LIT(RATCHET_DOMAIN) + 1, k, KEY_LEN);
    block[LIT(RATCHET_DOMAIN) + 1 + KEY_LEN] = 0x80;
    memset(block + LIT(RATCHET_DOMAIN) + 2 + KEY_LEN, 0, 64 - (LIT(RATCHET_DOMAIN) + 2 + KEY_LEN));
    sha256_two_blocks(block, step_block2, k);
    OPENSSL_cleanse(block, sizeof block);
}

/* K(at) -> K(at+1), in place; the intermediate state is cleansed. */
static void ratchet_step(RatchetObject *r)
{
    chain_step(r->k);
    r->at++;
}

/* k = HMAC-SHA-256(K, RECORD_KEY_LABEL) for a KEY_LEN-byte K (RFC 2104: a key shorter than
 * the 64-byte block is zero-padded). */
static void record_key(const unsigned char *chain_key, unsigned char *out)
{
    unsigned char pad[64], outer2[64];
    for (int i = 0; i < KEY_LEN; i++)
        pad[i] = chain_key[i] ^ 0x36;
    memset(pad + KEY_LEN, 0x36, 64 - KEY_LEN);
    memcpy(outer2, hmac_outer_block2, 64);
    sha256_two_blocks(pad, hmac_inner_block2, outer2); /* the inner digest, into the outer message */
    for (int i = 0; i < KEY_LEN; i++)
        pad[i] = chain_key[i] ^ 0x5c;
    memset(pad + KEY_LEN, 0x5c, 64 - KEY_LEN);
    sha256_two_blocks(pad, outer2, out);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(outer2, sizeof outer2);
}

/* Free the cipher context (the provider frees it with OPENSSL_clear_free, which cleanses the
 * record key and the cipher state): called before any call that sealed returns to Python. */
static void ratchet_release(RatchetObject *r)
{
    if (r->cctx != NULL) {
        aead.freectx(r->cctx);
        r->cctx = NULL;
    }
}

static void ratchet_wipe(RatchetObject *self)
{
    OPENSSL_cleanse(self->k, KEY_LEN);
    self->at = RATCHET_ERASED;
}

/* Ratchet(seed, key_seq, aad_prefix): seed None draws a fresh one from OpenSSL's CSPRNG into
 * the C buffer (the writer's case: the seed then never is a Python object, see wrap()). */
static int ratchet_init(RatchetObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seed", "key_seq", "aad_prefix", NULL};
    Py_buffer seed = {0};
    unsigned long long key_seq;
    PyObject *prefix;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "z*KS", kwlist, &seed, &key_seq, &prefix))
        return -1;
    int rc = -1;
    if (seed.buf != NULL && seed.len != KEY_LEN) {
        PyErr_Format(PyExc_ValueError, "Ratchet: the seed must be %d bytes", KEY_LEN);
        goto done;
    }
    if (key_seq >= RATCHET_ERASED) {
        PyErr_SetString(PyExc_OverflowError, "Ratchet: key_seq out of range");
        goto done;
    }
    Py_ssize_t lp = PyBytes_GET_SIZE(prefix);
    char *aad = PyMem_Realloc(self->aad, (size_t)lp + 2 * 24);
    if (aad == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    self->aad = aad;
    memcpy(aad, PyBytes_AS_STRING(prefix), (size_t)lp);
    self->aad_prefix_len = lp;
    ratchet_release(self);
    if (seed.buf != NULL) {
        memcpy(self->k, seed.buf, KEY_LEN);
    } else if (RAND_bytes(self->k, KEY_LEN) != 1) {
        ratchet_wipe(self);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's RAND_bytes failed: no seed for the key record");
        goto done;
    }
    self->at = self->key_seq = key_seq;
    rc = 0;
done:
    if (seed.obj != NULL)
        PyBuffer_Release(&seed);
    return rc;
}

static PyObject *ratchet_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    RatchetObject *self = (RatchetObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->at = RATCHET_ERASED; /* nothing encrypts before __init__ */
    return (PyObject *)self;
}

static void ratchet_dealloc(RatchetObject *self)
{
    ratchet_wipe(self);
    ratchet_release(self);
    PyMem_Free(self->aad);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ChaCha20-Poly1305 of pt under key (zero nonce) and aad into out (n + TAG_LEN bytes).  The
 * context keeps the key until ratchet_release(); re-keying a keyed context is cheaper than
 * setting the cipher up again for every record of a batch.  -1 with a Python exception. */
static int seal_into(RatchetObject *r, const unsigned char *key, int la, const unsigned char *pt, int n,
                     unsigned char *out)
{
    static const unsigned char nonce[12] = {0};
    size_t len = 0;
    if (r->cctx == NULL && (r->cctx = aead.newctx(aead.provctx)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* what EVP_EncryptInit_ex2, EVP_EncryptUpdate (AAD, then the plaintext), EVP_EncryptFinal_ex
     * and EVP_CTRL_AEAD_GET_TAG call, with the same arguments */
    int ok = aead.einit(r->cctx, key, KEY_LEN, nonce, sizeof nonce, NULL) == 1 &&
             (la == 0 || aead.update(r->cctx, NULL, &len, (size_t)la, (const unsigned char *)r->aad, (size_t)la) == 1) &&
             (n == 0 || (aead.update(r->cctx, out, &len, (size_t)n, pt, (size_t)n) == 1 && len == (size_t)n)) &&
             aead.final(r->cctx, out + n, &len, TAG_LEN) == 1 && len == 0;
    if (ok) {
        OSSL_PARAM tag[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + n, TAG_LEN),
                             OSSL_PARAM_construct_end()};
        ok = aead.get_ctx_params(r->cctx, tag) == 1;
    }
    if (!ok) {
        ratchet_release(r);
        PyErr_SetString(PyExc_RuntimeError, "ChaCha20-Poly1305 encryption failed in OpenSSL");
        return -1;
    }
    return 0;
}

/* The aad of the record at seq into r->aad after its prefix; returns its length. */
static int put_aad(RatchetObject *r, unsigned long long seq)
{
    char *a = r->aad + r->aad_prefix_len;
    a += put_u64(seq, a);
    *a++ = 0;
    a += put_u64(r->key_seq, a);
    return (int)(a - r->aad);
}

/* The length of the data bytes of an event with an n-byte plaintext and an lh-byte head. */
static size_t sealed_len(const RatchetObject *r, Py_ssize_t n, Py_ssize_t lh)
{
    char ks[24];
    size_t lc = (size_t)n + TAG_LEN;
    return (size_t)lh + LIT(ENC_HEAD) + (size_t)put_u64(r->key_seq, ks) + LIT(ENC_CT) + 4 * ((lc + 2) / 3) +
           LIT(ENC_TAIL);
}

/* The data bytes (head, then the _enc member) for ciphertext ct[0:lc] into p; returns the end. */
static char *put_sealed(const RatchetObject *r, char *p, const char *head, Py_ssize_t lh, const unsigned char *ct,
                        size_t lc)
{
    char ks[24];
    int lks = put_u64(r->key_seq, ks);
#define PUT(src, len) do { memcpy(p, (src), (size_t)(len)); p += (len); } while (0)
    PUT(head, lh);
    PUT(ENC_HEAD, LIT(ENC_HEAD));
    PUT(ks, lks);
    PUT(ENC_CT, LIT(ENC_CT));
    p += b64_encode(ct, lc, p);
    PUT(ENC_TAIL, LIT(ENC_TAIL));
#undef PUT
    return p;
}

/* The data bytes of the event at seq (see the section comment) into the scratch buffer,
 * leaving the ratchet at K(seq): returns a pointer to them (valid until the next seal) and
 * their length in *n_out.  NULL with an exception: then nothing was produced (the ratchet may
 * have advanced towards seq, as the Python reference does).  The caller calls
 * ratchet_release() before returning to Python. */
static const char *ratchet_seal_buf(RatchetObject *r, unsigned long long seq, const char *pt, Py_ssize_t n,
                                    const char *head, Py_ssize_t lh, Py_ssize_t *n_out)
{
    if (seq < r->at || seq <= r->key_seq || r->at == RATCHET_ERASED) {
        PyErr_Format(PyExc_RuntimeError, "the key of seq %llu was already erased (ratchet at %llu)", seq, r->at);
        return NULL;
    }
    if (n > (INT_MAX - TAG_LEN) / 2 || lh > INT_MAX || r->aad_prefix_len > INT_MAX - 48) {
        PyErr_SetString(PyExc_OverflowError, "event too large to encrypt");
        return NULL;
    }
    size_t lc = (size_t)n + TAG_LEN, total = sealed_len(r, n, lh);
    if (lc + total > r->buf_size) {
        unsigned char *nb = PyMem_Realloc(r->buf, lc + total);
        if (nb == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        r->buf = nb;
        r->buf_size = lc + total;
    }
    while (r->at < seq)
        ratchet_step(r);
    int la = put_aad(r, seq);
    unsigned char key[HASH_LEN];
    record_key(r->k, key);
    unsigned char *ct = r->buf;
    int rc = seal_into(r, key, la, (const unsigned char *)pt, (int)n, ct);
    OPENSSL_cleanse(key, sizeof key);
    if (rc < 0)
        return NULL;
    char *data = (char *)r->buf + lc;
    put_sealed(r, data, head, lh, ct, lc);
    *n_out = (Py_ssize_t)total;
    return data;
}

static int ratchet_check(PyObject *o, const char *fn)
{
    if (!PyObject_TypeCheck(o, &RatchetType)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a Ratchet", fn);
        return -1;
    }
    return 0;
}

/* seal(seq, plaintext, head) -> data bytes */
static PyObject *ratchet_seal(RatchetObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "seal(seq: int, plaintext: bytes, head: bytes)");
        return NULL;
    }
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[0]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n;
    const char *data = ratchet_seal_buf(self, seq, PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]),
                                        PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]), &n);
    ratchet_release(self);
    return data ? PyBytes_FromStringAndSize(data, n) : NULL;
}

/* wrap(encrypt) -> encrypt(seed): the key record's wrapped seed, while the ratchet is still
 * at its seed.  The seed is handed over in a temporary bytes object that is cleansed as soon
 * as encrypt returns, unless encrypt kept a reference to it (then it is left alone: bytes are
 * immutable to everyone else); what encrypt copies internally is its own. */
static PyObject *ratchet_wrap(RatchetObject *self, PyObject *encrypt)
{
    if (self->at != self->key_seq || self->at == RATCHET_ERASED) {
        PyErr_SetString(PyExc_RuntimeError, "the seed was already erased: wrap() comes first");
        return NULL;
    }
    PyObject *seed = PyBytes_FromStringAndSize((const char *)self->k, KEY_LEN);
    if (seed == NULL)
        return NULL;
    PyObject *out = PyObject_CallOneArg(encrypt, seed);
    if (Py_REFCNT(seed) == 1)
        OPENSSL_cleanse(PyBytes_AS_STRING(seed), KEY_LEN);
    Py_DECREF(seed);
    if (out != NULL && !PyBytes_Check(out)) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_TypeError, "wrap: encrypt must return bytes");
        return NULL;
    }
    return out;
}

/* consumed(seq): the event at seq is queued; K(seq) -> K(seq+1) when the ratchet is at seq. */
static PyObject *ratchet_consumed(RatchetObject *self, PyObject *arg)
{
    unsigned long long seq = PyLong_AsUnsignedLongLong(arg);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (self->at == seq)
        ratchet_step(self);
    Py_RETURN_NONE;
}

static PyObject *ratchet_erase(RatchetObject *self, PyObject *Py_UNUSED(ignored))
{
    ratchet_wipe(self);
    Py_RETURN_NONE;
}

static PyObject *ratchet_held(RatchetObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(Ky#)", self->at, (const char *)self->k, (Py_ssize_t)KEY_LEN);
}

static PyMethodDef ratchet_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))ratchet_seal, METH_FASTCALL,
     "The data bytes of the event at seq (head, then the _enc member); the ratchet stays at K(seq)."},
    {"wrap", (PyCFunction)ratchet_wrap, METH_O, "encrypt(seed) for the key record, the seed's temporary cleansed."},
    {"consumed", (PyCFunction)ratchet_consumed, METH_O, "The event at seq is queued: erase K(seq), keep K(seq+1)."},
    {"erase", (PyCFunction)ratchet_erase, METH_NOARGS, "Cleanse the chain key; nothing encrypts after this."},
    {"held", (PyCFunction)ratchet_held, METH_NOARGS, "(s, K(s)): the key kept (for tests that play the attacker)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RatchetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline._native.Ratchet",
    .tp_basicsize = sizeof(RatchetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ratchet(seed | None, key_seq, aad_prefix): one key record's chain key, in C memory.",
    .tp_new = ratchet_new,
    .tp_init = (initproc)ratchet_init,
    .tp_dealloc = (destructor)ratchet_dealloc,
    .tp_methods = ratchet_methods,
};



/* Build one record line for ``data`` into a new bytes object and hash it.  *hex_out gets the
 * record hash in hex, lh (unless NULL) the leaf hash.  NULL (and no exception) when longer
 * than limit. */
static PyObject *build_line(const char *prefix, Py_ssize_t lp, unsigned long long seq, const char *ts, Py_ssize_t lt,
                            const char *kind, Py_ssize_t lk, const char *prev, const char *data, Py_ssize_t ld,
                            Py_ssize_t limit, char *hex_out, unsigned char *lh, Py_ssize_t *n_out)
{
    char seqbuf[24];
    int seqlen = put_u64(seq, seqbuf);
    Py_ssize_t body_len = lp + seqlen + LIT(TS_KEY) + lt + LIT(KIND_KEY) + lk + LIT(PREV_KEY) + HEX_LEN +
                          LIT(DATA_KEY) + ld;
    Py_ssize_t n = body_len + LIT(HASH_KEY) + HEX_LEN + LIT(TAIL);
    *n_out = n;
    if (n > limit)
        return NULL;
    PyObject *line = PyBytes_FromStringAndSize(NULL, n);
    if (line == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(line);
#define PUT(src, len) do { memcpy(p, (src), (size_t)(len)); p += (len); } while (0)
    PUT(prefix, lp);
    PUT(seqbuf, seqlen);
    PUT(TS_KEY, LIT(TS_KEY));
    PUT(ts, lt);
    PUT(KIND_KEY, LIT(KIND_KEY));
    PUT(kind, lk);
    PUT(PREV_KEY, LIT(PREV_KEY));
    PUT(prev, HEX_LEN);
    PUT(DATA_KEY, LIT(DATA_KEY));
    PUT(data, ld);
    unsigned char digest[HASH_LEN];
    sha256((const unsigned char *)PyBytes_AS_STRING(line), (size_t)body_len, digest);
    PUT(HASH_KEY, LIT(HASH_KEY));
    to_hex(digest, p);
    memcpy(hex_out, p, HEX_LEN);
    p += HEX_LEN;
    PUT(TAIL, LIT(TAIL));
#undef PUT
    if (lh != NULL)
        leaf_hash((const unsigned char *)PyBytes_AS_STRING(line), (size_t)(n - 1), lh);
    return line;
}

/* receipt_type((seq, hash_hex, segment_name, generation)): a tuple subclass allocated and
 * filled as tuple.__new__ would (check_receipt_type ensures it has no __dict__), untracked
 * by the cyclic GC (it holds only ints and strings). */
static PyObject *make_receipt(PyObject *rtype, unsigned long long seq, const char *hex, PyObject *seg_name, PyObject *gen)
{
    PyTypeObject *type = (PyTypeObject *)rtype;
    PyObject *hexstr = PyUnicode_New(HEX_LEN, 127);
    PyObject *seqobj = PyLong_FromUnsignedLongLong(seq);
    PyObject *receipt = (hexstr && seqobj) ? type->tp_alloc(type, 4) : NULL;
    if (receipt == NULL) {
        Py_XDECREF(hexstr);
        Py_XDECREF(seqobj);
        return NULL;
    }
    memcpy(PyUnicode_DATA(hexstr), hex, HEX_LEN);
    Py_INCREF(seg_name);
    Py_INCREF(gen);
    PyTuple_SET_ITEM(receipt, 0, seqobj);
    PyTuple_SET_ITEM(receipt, 1, hexstr);
    PyTuple_SET_ITEM(receipt, 2, seg_name);
    PyTuple_SET_ITEM(receipt, 3, gen);
    if (PyObject_GC_IsTracked(receipt))
        PyObject_GC_UnTrack(receipt);
    return receipt;
}

static int check_receipt_type(PyObject *rtype, const char *fn)
{
    if (!PyType_Check(rtype) || !PyType_IsSubtype((PyTypeObject *)rtype, &PyTuple_Type) ||
        ((PyTypeObject *)rtype)->tp_dictoffset != 0) {
        PyErr_Format(PyExc_TypeError, "%s: receipt_type must be a tuple subclass without __dict__", fn);
        return -1;
    }
    return 0;
}

static int check_bytes_args(PyObject *const *args, const int *which, int count, const char *fn)
{
    for (int i = 0; i < count; i++) {
        if (!PyBytes_Check(args[which[i]])) {
            PyErr_Format(PyExc_TypeError, "%s: argument %d must be bytes", fn, which[i]);
            return -1;
        }
    }
    if (PyBytes_GET_SIZE(args[4]) != HEX_LEN) {
        PyErr_Format(PyExc_ValueError, "%s: prev must be 64 hex characters", fn);
        return -1;
    }
    return 0;
}

/*
 * append_record(prefix, seq, ts, kind, prev, data, seg_cr, stream_cr, chunks, leaves, limit,
 *               receipt_type, segment_name, generation)
 *   -> (receipt, hash_hex: bytes, line_len: int) or None
 *
 * Builds the record line exactly as pipeline.record.encode_record does (prefix is
 * b'{"v":1,"stream":"<name>","seq":'), hashes it, leaf-hashes it into both compact ranges
 * (either may be None) and appends the line to ``chunks`` and the leaf hash to ``leaves``.
 * Returns None, with nothing changed, when the line is longer than ``limit`` bytes.  The
 * receipt is built as in append_records.
 *
 * With two more arguments, ratchet (a Ratchet) and head (bytes), data is the plaintext of an
 * encrypted event: the line holds ratchet.seal(seq, data, head), and the ratchet steps past
 * seq once the line is queued (None leaves it at K(seq), as seal does).
 */
static PyObject *append_record(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    static const int bytes_args[] = {0, 2, 3, 4, 5, 15};
    if (nargs != 14 && nargs != 16) {
        PyErr_SetString(PyExc_TypeError, "append_record takes 14 or 16 arguments");
        return NULL;
    }
    if (check_bytes_args(args, bytes_args, nargs == 16 ? 6 : 5, "append_record") < 0 ||
        check_receipt_type(args[11], "append_record") < 0 || (nargs == 16 && ratchet_check(args[14], "append_record") < 0))
        return NULL;
    RatchetObject *ratchet = nargs == 16 ? (RatchetObject *)args[14] : NULL;
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[1]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    CompactRangeObject *seg_cr, *stream_cr;
    if (as_cr(args[6], &seg_cr) < 0 || as_cr(args[7], &stream_cr) < 0)
        return NULL;
    /* leaves=None (with both ranges None): no Merkle work at all, for benchmarks that
     * measure what the tree maintenance costs */
    int merkle = args[9] != Py_None;
    if (!PyList_Check(args[8]) || (merkle && !PyList_Check(args[9])) || (!merkle && (seg_cr || stream_cr))) {
        PyErr_SetString(PyExc_TypeError, "append_record: chunks must be a list, leaves a list (or None with no ranges)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[10]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if ((seg_cr && seg_cr->size >= CR_MAX_SIZE) || (stream_cr && stream_cr->size >= CR_MAX_SIZE)) {
        PyErr_SetString(PyExc_OverflowError, "compact range is full");
        return NULL;
    }
    char hex[HEX_LEN];
    unsigned char lh[HASH_LEN];
    Py_ssize_t n, dn = PyBytes_GET_SIZE(args[5]);
    const char *dp = PyBytes_AS_STRING(args[5]);
    if (ratchet != NULL) {
        dp = ratchet_seal_buf(ratchet, seq, dp, dn, PyBytes_AS_STRING(args[15]), PyBytes_GET_SIZE(args[15]), &dn);
        ratchet_release(ratchet);
        if (dp == NULL)
            return NULL;
    }
    PyObject *line = build_line(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), seq, PyBytes_AS_STRING(args[2]),
                                PyBytes_GET_SIZE(args[2]), PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3]),
                                PyBytes_AS_STRING(args[4]), dp, dn, limit, hex, merkle ? lh : NULL, &n);
    if (line == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *leaf = merkle ? PyBytes_FromStringAndSize((const char *)lh, HASH_LEN) : NULL;
    PyObject *receipt = make_receipt(args[11], seq, hex, args[12], args[13]);
    PyObject *result = NULL;
    if ((merkle && leaf == NULL) || receipt == NULL)
        goto done;
    PyObject *hexb = PyBytes_FromStringAndSize(hex, HEX_LEN);
    PyObject *nobj = hexb ? PyLong_FromSsize_t(n) : NULL;
    result = nobj ? PyTuple_Pack(3, receipt, hexb, nobj) : NULL;
    Py_XDECREF(hexb);
    Py_XDECREF(nobj);
    if (result == NULL)
        goto done;
    if (PyList_Append(args[8], line) < 0) {
        Py_CLEAR(result);
        goto done;
    }
    if (merkle && PyList_Append(args[9], leaf) < 0) {
        PyList_SetSlice(args[8], PyList_GET_SIZE(args[8]) - 1, PyList_GET_SIZE(args[8]), NULL);
        Py_CLEAR(result);
        goto done;
    }
    if (seg_cr)
        cr_push(seg_cr, lh);
    if (stream_cr)
        cr_push(stream_cr, lh);
    if (ratchet != NULL && ratchet->at == seq)
        ratchet_step(ratchet); /* queued: K(seq) is erased */
done:
    Py_DECREF(line);
    Py_XDECREF(leaf);
    Py_XDECREF(receipt);
    return result;
}

/*
 * append_records(prefix, seq, ts, kind, prev, datas, start, seg_cr, stream_cr, chunks, leaves,
 *                room, seg_count, receipt_type, segment_name, generation)
 *   -> (count, bytes_added, last_hash_hex: bytes, receipts: list)
 *
 * append_record for datas[start:], all with the same timestamp, as long as they fit in the
 * segment: a record is refused when the segment already holds one and the line is longer
 * than the ``room`` left (which shrinks as lines are added).  Each receipt is
 * receipt_type((seq, hash_hex_str, segment_name, generation)) built as a tuple subclass.
 * Stops early, with what was appended so far applied, on an exception (re-raised).
 *
 * With two more arguments, ratchet (a Ratchet) and heads (a list of bytes aligned with
 * datas[start:], or None for b"{" each), every data is the plaintext of an encrypted event:
 * the line holds ratchet.seal(seq, data, head) instead, and the ratchet is advanced past seq
 * once the line is queued (a line that does not fit leaves it at K(seq), as seal does).
 */
static PyObject *append_records(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    static const int bytes_args[] = {0, 2, 3, 4};
    if (nargs != 16 && nargs != 18) {
        PyErr_SetString(PyExc_TypeError, "append_records takes 16 or 18 arguments");
        return NULL;
    }
    RatchetObject *ratchet = NULL;
    PyObject *heads = NULL;
    if (nargs == 18) {
        if (ratchet_check(args[16], "append_records") < 0)
            return NULL;
        ratchet = (RatchetObject *)args[16];
        heads = args[17] == Py_None ? NULL : args[17];
        if (heads && (!PyList_Check(heads) || !PyList_Check(args[5]) ||
                      PyList_GET_SIZE(heads) < PyList_GET_SIZE(args[5]) - PyLong_AsSsize_t(args[6]))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "append_records: heads must be a list, one per item from start");
            return NULL;
        }
    }
    if (check_bytes_args(args, bytes_args, 4, "append_records") < 0)
        return NULL;
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[1]);
    if (seq == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *datas = args[5];
    int merkle = args[10] != Py_None; /* leaves=None with no ranges: lines only (see hash_lines) */
    if (!PyList_Check(datas) || !PyList_Check(args[9]) || (merkle && !PyList_Check(args[10]))) {
        PyErr_SetString(PyExc_TypeError, "append_records: datas and chunks must be lists, leaves a list or None");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[6]);
    Py_ssize_t room = PyLong_AsSsize_t(args[11]);
    Py_ssize_t seg_count = PyLong_AsSsize_t(args[12]);
    if (PyErr_Occurred())
        return NULL;
    CompactRangeObject *seg_cr, *stream_cr;
    if (as_cr(args[7], &seg_cr) < 0 || as_cr(args[8], &stream_cr) < 0)
        return NULL;
    if (!merkle && (seg_cr || stream_cr)) {
        PyErr_SetString(PyExc_TypeError, "append_records: leaves=None needs both ranges None");
        return NULL;
    }
    PyObject *rtype = args[13];
    if (check_receipt_type(rtype, "append_records") < 0)
        return NULL;
    PyObject *seg_name = args[14], *gen = args[15];
    PyObject *receipts = PyList_New(0);
    if (receipts == NULL)
        return NULL;
    char prev[HEX_LEN];
    memcpy(prev, PyBytes_AS_STRING(args[4]), HEX_LEN);
    const char *prefix = PyBytes_AS_STRING(args[0]), *ts = PyBytes_AS_STRING(args[2]), *kind = PyBytes_AS_STRING(args[3]);
    Py_ssize_t lp = PyBytes_GET_SIZE(args[0]), lt = PyBytes_GET_SIZE(args[2]), lk = PyBytes_GET_SIZE(args[3]);
    Py_ssize_t count = 0, added = 0;
    int failed = 0;
    for (Py_ssize_t i = start; i < PyList_GET_SIZE(datas); i++) {
        PyObject *data = PyList_GET_ITEM(datas, i);
        if (!PyBytes_Check(data)) {
            PyErr_SetString(PyExc_TypeError, "append_records: every item must be bytes");
            failed = 1;
            break;
        }
        if ((seg_cr && seg_cr->size >= CR_MAX_SIZE) || (stream_cr && stream_cr->size >= CR_MAX_SIZE)) {
            PyErr_SetString(PyExc_OverflowError, "compact range is full");
            failed = 1;
            break;
        }
        char hex[HEX_LEN];
        unsigned char lh[HASH_LEN];
        Py_ssize_t n;
        Py_ssize_t limit = seg_count > 0 ? room : PY_SSIZE_T_MAX;
        const char *dp = PyBytes_AS_STRING(data);
        Py_ssize_t dn = PyBytes_GET_SIZE(data);
        if (ratchet != NULL) {
            PyObject *head = heads ? PyList_GET_ITEM(heads, i - start) : NULL;
            if (head && !PyBytes_Check(head)) {
                PyErr_SetString(PyExc_TypeError, "append_records: every head must be bytes");
                failed = 1;
                break;
            }
            dp = ratchet_seal_buf(ratchet, seq, dp, dn, head ? PyBytes_AS_STRING(head) : "{",
                                  head ? PyBytes_GET_SIZE(head) : 1, &dn);
            if (dp == NULL) {
                failed = 1;
                break;
            }
        }
        PyObject *line = build_line(prefix, lp, seq, ts, lt, kind, lk, prev, dp, dn, limit, hex, merkle ? lh : NULL, &n);
        if (line == NULL) {
            failed = PyErr_Occurred() != NULL;
            break; /* full: the caller rotates */
        }
        PyObject *leaf = merkle ? PyBytes_FromStringAndSize((const char *)lh, HASH_LEN) : NULL;
        PyObject *receipt = make_receipt(rtype, seq, hex, seg_name, gen);
        int ok = (leaf || !merkle) && receipt && PyList_Append(args[9], line) == 0;
        if (ok && merkle && PyList_Append(args[10], leaf) < 0) {
            PyList_SetSlice(args[9], PyList_GET_SIZE(args[9]) - 1, PyList_GET_SIZE(args[9]), NULL);
            ok = 0;
        }
        if (ok && PyList_Append(receipts, receipt) < 0) {
            PyList_SetSlice(args[9], PyList_GET_SIZE(args[9]) - 1, PyList_GET_SIZE(args[9]), NULL);
            if (merkle)
                PyList_SetSlice(args[10], PyList_GET_SIZE(args[10]) - 1, PyList_GET_SIZE(args[10]), NULL);
            ok = 0;
        }
        Py_DECREF(line);
        Py_XDECREF(leaf);
        Py_XDECREF(receipt);
        if (!ok) {
            failed = 1;
            break;
        }
        if (seg_cr)
            cr_push(seg_cr, lh);
        if (stream_cr)
            cr_push(stream_cr, lh);
        if (ratchet != NULL && ratchet->at == seq)
            ratchet_step(ratchet); /* queued: K(seq) is erased */
        memcpy(prev, hex, HEX_LEN);
        seq++;
        count++;
        added += n;
        room -= n;
        seg_count++;
    }
    if (ratchet != NULL)
        ratchet_release(ratchet);
    if (failed && count == 0) {
        Py_DECREF(receipts);
        return NULL;
    }
    if (failed)
        PyErr_Clear(); /* report what was applied; the caller retries the failing item alone */
    return Py_BuildValue("(nny#N)", count, added, prev, (Py_ssize_t)HEX_LEN, receipts);
}

/* ------------------------------------------------------------------------ utc_now ---- */

static time_t now_sec = -1;
static char now_prefix[20];

/* utc_now() -> b"YYYY-MM-DDTHH:MM:SS.ffffffZ" (the record timestamp, microseconds, UTC). */
static PyObject *utc_now(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* the GIL serialises callers, so the one-second cache needs no lock */
    if (ts.tv_sec != now_sec) {
        struct tm tm;
        if (gmtime_r(&ts.tv_sec, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
            PyErr_SetString(PyExc_OverflowError, "system clock outside years 0000-9999");
            return NULL;
        }
        snprintf(now_prefix, sizeof now_prefix, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        now_sec = ts.tv_sec;
    }
    char out[27];
    memcpy(out, now_prefix, 19);
    out[19] = '.';
    long us = ts.tv_nsec / 1000;
    for (int i = 25; i >= 20; i--) {
        out[i] = (char)('0' + us % 10);
        us /= 10;
    }
    out[26] = 'Z';
    return PyBytes_FromStringAndSize(out, 27);
}

/* ------------------------------------------------------------------------- screen ---- */

#define SCREEN_NULL 1      /* b"null" occurs (NaN/Infinity are serialised as null by orjson) */
#define SCREEN_HINT 2      /* the trigger of some value rule occurs (see pipeline/sanitise.py) */
#define SCREEN_DIGITS 4    /* 13+ digits in a run (separators ' ' . - _ / allowed): card candidate */
#define SCREEN_FLAT 8      /* exactly one '{' and no '[': a flat object */
#define SCREEN_SHIFT 8     /* count of '{' plus '[' above this bit */
#define SCREEN_KV_ANY 1    /* settings: any key=value shape is a hint (custom key patterns) */
#define SCREEN_OPAQUE 2    /* settings: every event is a hint (custom value patterns) */
#define KV_MAX_KEY 64

/* The rule-dependent part of the screen: the secret-key stems (lower-case ASCII, as a table:
 * see stem_in; a key=value shape whose key, lower-cased with _ . - dropped, contains one is
 * a hint) and the SCREEN_KV_ANY / SCREEN_OPAQUE flags. */
typedef struct {
    const char *stems;
    Py_ssize_t stems_len;
    int flags;
} ScreenRules;

/* whether s[0:k] equals `lower` (lowercase ASCII letters) in any letter case: for a letter,
 * c | 0x20 is its lowercase form, and no other byte maps onto a lowercase letter */
static int ci_eq(const unsigned char *s, const char *lower, Py_ssize_t k)
{
    for (Py_ssize_t i = 0; i < k; i++)
        if ((s[i] | 0x20) != (unsigned char)lower[i])
            return 0;
    return 1;
}

/* whether s[i:] starts with the string literal `lit` */
static inline int at_n(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, const char *lit, Py_ssize_t k)
{
    return i >= 0 && n - i >= k && memcmp(s + i, lit, (size_t)k) == 0;
}
#define at(s, n, i, lit) at_n((s), (n), (i), (lit), (Py_ssize_t)sizeof(lit) - 1)

/* byte classes for the scalar screen; 0 for every byte of no interest */
enum { K_NONE = 0, K_DIGIT, K_SEP, K_BRACE, K_BRACKET, K_ANCHOR };
static unsigned char screen_class[256];
static unsigned char ident_byte[256]; /* identifier bytes of a key in free text: A-Z a-z 0-9 _ . - */

static void screen_init(void)
{
    for (int c = '0'; c <= '9'; c++)
        screen_class[c] = K_DIGIT;
    screen_class[' '] = K_SEP;
    screen_class['-'] = K_SEP;
    screen_class['.'] = K_SEP;
    screen_class['_'] = K_SEP;
    screen_class['/'] = K_SEP;
    screen_class['{'] = K_BRACE;
    screen_class['['] = K_BRACKET;
    const char *anchors = "nAbByegxkcm:=wW";
    for (const char *a = anchors; *a; a++)
        screen_class[(unsigned char)*a] = K_ANCHOR;
    for (int c = 0x80; c < 0x100; c++)
        screen_class[c] = K_ANCHOR;
    for (int c = 0; c < 256; c++)
        ident_byte[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '.' || c == '-';
}

/* after an 'A': an AWS key-id prefix, a Google API key, a PyPI token's macaroon prefix or an
 * Azure AccountKey */
static int after_A(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    if (n - i < 3)
        return 0;
    switch (s[i]) {
    case 'K':
        return at(s, n, i, "KIA");
    case 'S':
        return at(s, n, i, "SIA");
    case 'G':
        return at(s, n, i, "GPA");
    case 'I':
        return at(s, n, i, "IDA") || at(s, n, i, "IPA") || at(s, n, i, "Iza");
    case 'R':
        return at(s, n, i, "ROA");
    case 'N':
        return at(s, n, i, "NPA") || at(s, n, i, "NVA");
    case 'g':
        return at(s, n, i, "gEIcHlwaS5vcmc");
    case 'c':
        return at(s, n, i, "ccountKey");
    }
    return 0;
}

/* Whether a stem of the table occurs in word[0:len].  The table (Sanitiser's stems_table) is
 * a bitmap of 65536 bits, bit (c1 << 8 | c2) set when a stem starts with the bytes c1 c2 (a
 * one-byte stem sets every c2, and the position after a word's last byte reads c2 = 0),
 * then each stem as one length byte and its bytes.  The bitmap rules out almost every
 * position with one lookup. */
#define STEM_BITMAP 8192
static int stem_in(const char *word, Py_ssize_t len, const ScreenRules *sr)
{
    if (sr->stems_len < STEM_BITMAP)
        return 0;
    const unsigned char *bits = (const unsigned char *)sr->stems;
    const unsigned char *body = bits + STEM_BITMAP, *end = bits + sr->stems_len;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned pair = (unsigned)(unsigned char)word[i] << 8 | (i + 1 < len ? (unsigned char)word[i + 1] : 0);
        if (!(bits[pair >> 3] & (1u << (pair & 7))))
            continue;
        for (const unsigned char *p = body; p < end && p + 1 + *p <= end; p += 1 + *p) {
            Py_ssize_t k = *p;
            if (k > 0 && k <= len - i && memcmp(word + i, p + 1, (size_t)k) == 0)
                return 1;
        }
    }
    return 0;
}

/* At a ':' or '=': is the identifier before it (spaces, then quotes and backslashes
 * skipped) secret-looking?  (sanitise._kv_hint, which is the reference.) */
static int kv_hint(const unsigned char *s, Py_ssize_t i, const ScreenRules *sr)
{
    if (s[i] == ':' && i >= 1 && s[i - 1] == '"' && !(i >= 2 && s[i - 2] == '\\'))
        return 0; /* orjson's key separator: keys are judged by the key-set verdicts */
    Py_ssize_t j = i;
    while (j > 0 && s[j - 1] == ' ')
        j--;
    while (j > 0 && (s[j - 1] == '"' || s[j - 1] == '\'' || s[j - 1] == '\\'))
        j--;
    Py_ssize_t end = j;
    while (j > 0 && ident_byte[s[j - 1]]) {
        j--;
        if (end - j > KV_MAX_KEY)
            return 1;
    }
    if (j == end)
        return 0;
    if (j > 0 && (s[j - 1] == ':' || s[j - 1] == '=' || s[j - 1] == '/' || s[j - 1] == '@'))
        return 0; /* "a:b:c", "x=y=z", paths and user@host: not a key of its own */
    if (sr->flags & SCREEN_KV_ANY)
        return 1;
    char word[KV_MAX_KEY + 1];
    Py_ssize_t len = 0;
    for (Py_ssize_t k = j; k < end; k++)
        if (s[k] != '_' && s[k] != '.' && s[k] != '-')
            word[len++] = (char)(s[k] | 0x20);
    return stem_in(word, len, sr);
}

/* after "://" at s[i-3..i-1]: a user-info part holding an '@' (credentials), or a Slack
 * webhook host */
static int url_hint(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    if (at(s, n, i, "hooks.slack.com/"))
        return 1;
    for (; i < n; i++) {
        unsigned char c = s[i];
        if (c == '@')
            return 1;
        if (c == '/' || c == '"' || c == '\\' || c == '?' || c == '#' || c <= 0x20)
            return 0;
    }
    return 0;
}

#define AWS_SEEN 0x100 /* internal: "aws" in any case occurs */

/* The checks anchored at s[i] (a byte of class K_ANCHOR): "null", the token prefixes, the
 * credential schemes in any case, "-----BEGIN" (anchored on its B), "eyJ" (on its y),
 * URL credentials and key=value shapes (on the ':' or '='), "aws" (on its w), and any
 * non-ASCII byte.  Each is the same as a branch of sanitise._screen_python. */
static int screen_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, int flags, const ScreenRules *sr)
{
    Py_ssize_t left = n - i - 1; /* bytes after s[i] */
    unsigned char c = s[i];
    if (c >= 0x80)
        return flags | SCREEN_HINT;
    switch (c) {
    case 'n':
        if (left >= 3 && s[i + 1] == 'u' && s[i + 2] == 'l' && s[i + 3] == 'l')
            flags |= SCREEN_NULL;
        break;
    case 'A':
        if (!(flags & SCREEN_HINT) && after_A(s, n, i + 1))
            flags |= SCREEN_HINT;
        break;
    case 'b':
    case 'B':
        if (flags & SCREEN_HINT)
            break;
        if ((left >= 4 && ci_eq(s + i + 1, "asic", 4)) || (left >= 5 && ci_eq(s + i + 1, "earer", 5)) ||
            (c == 'B' && at(s, n, i - 5, "-----BEGIN")))
            flags |= SCREEN_HINT;
        break;
    case 'y':
        if (i >= 1 && s[i - 1] == 'e' && left >= 1 && s[i + 1] == 'J')
            flags |= SCREEN_HINT;
        break;
    case 'g':
        if (left >= 3 && s[i + 1] == 'h' && s[i + 3] == '_' && strchr("pousr", s[i + 2]) != NULL && s[i + 2])
            flags |= SCREEN_HINT;
        else if (at(s, n, i, "github_pat_") || at(s, n, i, "glpat-") || at(s, n, i, "glptt-") ||
                 at(s, n, i, "glrt-") || at(s, n, i, "gldt-"))
            flags |= SCREEN_HINT;
        break;
    case 'x':
        if (at(s, n, i, "xapp-") || (at(s, n, i, "xox") && left >= 4 && s[i + 4] == '-' && s[i + 3] &&
                                     strchr("baprse", s[i + 3]) != NULL))
            flags |= SCREEN_HINT;
        break;
    case 'k':
        if (i >= 1 && (s[i - 1] == 's' || s[i - 1] == 'r') && (at(s, n, i, "k_live_") || at(s, n, i, "k_test_")))
            flags |= SCREEN_HINT;
        break;
    case 'c':
        if (at(s, n, i - 4, "whsec_"))
            flags |= SCREEN_HINT;
        break;
    case 'm':
        if (at(s, n, i - 2, "npm_"))
            flags |= SCREEN_HINT;
        break;
    case 'w':
    case 'W':
        if (i >= 1 && (s[i - 1] | 0x20) == 'a' && left >= 1 && (s[i + 1] | 0x20) == 's')
            flags |= AWS_SEEN;
        break;
    case ':':
        if (!(flags & SCREEN_HINT) && ((at(s, n, i, "://") && url_hint(s, n, i + 3)) || kv_hint(s, i, sr)))
            flags |= SCREEN_HINT;
        break;
    case '=':
        if (!(flags & SCREEN_HINT) && kv_hint(s, i, sr))
            flags |= SCREEN_HINT;
        break;
    }
    return flags;
}

/* whether some run of digits, in which separators neither count nor break the run, holds
 * 13 or more digits */
static int thirteen_digits(const unsigned char *s, Py_ssize_t n)
{
    unsigned run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned k = screen_class[s[i]];
        if (k == K_DIGIT) {
            if (++run >= 13)
                return 1;
        } else if (k != K_SEP) {
            run = 0;
        }
    }
    return 0;
}

/* whether 40 bytes of [A-Za-z0-9+/] occur in a row (an AWS secret key candidate) */
static int b64_run40(const unsigned char *s, Py_ssize_t n)
{
    unsigned run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '/') {
            if (++run >= 40)
                return 1;
        } else {
            run = 0;
        }
    }
    return 0;
}

/* ---- card numbers: sanitise._card_in, exactly -------------------------------------------
 * _CARD_RE is (?<!\d)PREFIX(?:[ .\-_/]?\d){11,17}(?!\d), PREFIX one of 4 | 5[1-5] | 2[2-7] |
 * 3[47] | 3[0689] | 6011 | 65 | 64[4-9] | 35 (mutually exclusive), found left to right
 * without overlap (finditer).  A unit "[ .-]?digit" parses deterministically, so the
 * regex's backtracking only shortens the run of units: the match has the most units k
 * (11 <= k <= 17, k <= the units available) such that no digit follows.  Each match is a
 * card when its digits (separators dropped) number 13 to 19 and pass Luhn, or when it ends
 * in ".0" and the part before does (a float as orjson writes it). */
static int card_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_card_sep(unsigned char c) { return c == ' ' || c == '.' || c == '-' || c == '_' || c == '/'; }

static Py_ssize_t card_prefix(const unsigned char *s, Py_ssize_t n, Py_ssize_t p)
{
    unsigned char a = s[p], b = p + 1 < n ? s[p + 1] : 0;
    if (a == '4')
        return 1;
    if (a == '5' && b >= '1' && b <= '5')
        return 2;
    if (a == '2' && b >= '2' && b <= '7')
        return 2;
    if (a == '3' && (b == '4' || b == '7' || b == '0' || b == '6' || b == '8' || b == '9' || b == '5'))
        return 2;
    if (a == '6') {
        if (b == '0' && p + 3 < n && s[p + 2] == '1' && s[p + 3] == '1')
            return 4;
        if (b == '5')
            return 2;
        if (b == '4' && p + 2 < n && s[p + 2] >= '4' && s[p + 2] <= '9')
            return 3;
    }
    return 0;
}

static int luhn_digits(const unsigned char *s, Py_ssize_t from, Py_ssize_t to)
{
    /* the digits of s[from:to], separators skipped: 13 to 19 of them passing Luhn */
    int count = 0, total = 0;
    for (Py_ssize_t i = to - 1; i >= from; i--) {
        if (!card_digit(s[i]))
            continue;
        int d = s[i] - '0';
        if (count & 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        total += d;
        count++;
    }
    return count >= 13 && count <= 19 && total % 10 == 0;
}

static int card_in(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t p = 0;
    while (p < n) {
        Py_ssize_t plen;
        if (!card_digit(s[p]) || (p > 0 && card_digit(s[p - 1])) || (plen = card_prefix(s, n, p)) == 0) {
            p++;
            continue;
        }
        /* units after the prefix: ends[k] is the end of unit k+1 */
        Py_ssize_t ends[17], starts_sep[17];
        int m = 0;
        Py_ssize_t q = p + plen;
        while (m < 17) {
            if (q < n && card_digit(s[q])) {
                starts_sep[m] = 0;
                ends[m++] = ++q;
            } else if (q + 1 < n && is_card_sep(s[q]) && card_digit(s[q + 1])) {
                starts_sep[m] = 1;
                q += 2;
                ends[m++] = q;
            } else {
                break;
            }
        }
        int k = -1;
        for (int j = m; j >= 11; j--) {
            Py_ssize_t e = ends[j - 1];
            /* no digit may follow: after unit j comes unit j+1 (a digit start fails) or the end */
            int next_digit = j < m ? !starts_sep[j] : (e < n && card_digit(s[e]));
            if (!next_digit) {
                k = j;
                break;
            }
        }
        if (k < 0) {
            p++;
            continue;
        }
        Py_ssize_t end = ends[k - 1];
        if (luhn_digits(s, p, end))
            return 1;
        if (end - p >= 2 && s[end - 2] == '.' && s[end - 1] == '0' && luhn_digits(s, p, end - 2))
            return 1;
        p = end;
    }
    return 0;
}

/* card_in(data: bytes) -> bool: sanitise._card_in, for the equivalence tests */
static PyObject *py_card_in(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "card_in takes bytes");
        return NULL;
    }
    return PyBool_FromLong(card_in((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}

static int screen_finish(const unsigned char *s, Py_ssize_t n, int flags, const ScreenRules *sr)
{
    if (sr->flags & SCREEN_OPAQUE)
        flags |= SCREEN_HINT;
    if ((flags & AWS_SEEN) && !(flags & SCREEN_HINT) && b64_run40(s, n))
        flags |= SCREEN_HINT;
    return flags & ~AWS_SEEN;
}

#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>

/*
 * Sixteen bytes at a time with SSE2 (every x86-64 has it): the brace and bracket counts
 * are popcounts of byte masks; the few places where a pattern can start are found with
 * byte-pair masks ("nu", any 'A', "ba"/"be" in any case (which covers the B of BEGIN),
 * "yJ", "gh"/"gi"/"gl", "xo"/"xa", "k_", "c_", "m_", "ws" in any case, ':', '=', and any
 * non-ASCII byte) and checked one by one with screen_at; and the digit-run rule is only
 * evaluated exactly (thirteen_digits) when some stretch of 13 or more bytes holds nothing
 * but digits and separators, which ordinary events rarely have.
 */
static long long screen_bytes(const unsigned char *s, Py_ssize_t n, const ScreenRules *sr)
{
    int flags = 0;
    long long braces = 0, brackets = 0;
    unsigned carry = 0; /* digits/separators in a row up to the current block */
    int digit_candidate = 0;
#define SET1(c) _mm_set1_epi8((char)(c))
    const __m128i c_lbrace = SET1('{'), c_lbracket = SET1('['), c_n = SET1('n'), c_u = SET1('u'), c_A = SET1('A'),
                  c_b = SET1('b'), c_a = SET1('a'), c_e = SET1('e'), c_lower = SET1(0x20), c_0 = SET1('0'),
                  c_9 = SET1(9), c_space = SET1(' '), c_hyphen = SET1('-'), c_dot = SET1('.'), c_under = SET1('_'), c_slash = SET1('/'), c_y = SET1('y'), c_J = SET1('J'), c_g = SET1('g'), c_h = SET1('h'),
                  c_i = SET1('i'), c_l = SET1('l'), c_x = SET1('x'), c_o = SET1('o'), c_k = SET1('k'),
                  c_c = SET1('c'), c_m = SET1('m'), c_w = SET1('w'), c_s = SET1('s'), c_colon = SET1(':'),
                  c_eq = SET1('=');
#undef SET1
    for (Py_ssize_t b = 0; b < n; b += 16) {
        __m128i x, next; /* s[b:b+16] and s[b+1:b+17] */
        unsigned valid = 0xFFFF;
        if (n - b >= 17) {
            x = _mm_loadu_si128((const __m128i *)(s + b));
            next = _mm_loadu_si128((const __m128i *)(s + b + 1));
        } else { /* the tail, zero-padded: a zero byte is of no interest and ends a run */
            unsigned char tail[32] = {0};
            memcpy(tail, s + b, (size_t)(n - b));
            x = _mm_loadu_si128((const __m128i *)tail);
            next = _mm_loadu_si128((const __m128i *)(tail + 1));
            if (n - b < 16)
                valid = (1u << (n - b)) - 1;
        }
        unsigned open_braces = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, c_lbrace));
        unsigned open_brackets = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, c_lbracket));
        /* few bits are ever set: count them one by one (a popcount instruction is not part
         * of baseline x86-64, and GCC's generic one is a library call) */
        for (; open_braces; open_braces &= open_braces - 1)
            braces++;
        for (; open_brackets; open_brackets &= open_brackets - 1)
            brackets++;
        __m128i x_low = _mm_or_si128(x, c_lower), next_low = _mm_or_si128(next, c_lower);
        __m128i nu = _mm_and_si128(_mm_cmpeq_epi8(x, c_n), _mm_cmpeq_epi8(next, c_u));
        __m128i bx = _mm_and_si128(_mm_cmpeq_epi8(x_low, c_b),
                                   _mm_or_si128(_mm_cmpeq_epi8(next_low, c_a), _mm_cmpeq_epi8(next_low, c_e)));
        __m128i yj = _mm_and_si128(_mm_cmpeq_epi8(x, c_y), _mm_cmpeq_epi8(next, c_J));
        __m128i gx = _mm_and_si128(_mm_cmpeq_epi8(x, c_g),
                                   _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(next, c_h), _mm_cmpeq_epi8(next, c_i)),
                                                _mm_cmpeq_epi8(next, c_l)));
        __m128i xx = _mm_and_si128(_mm_cmpeq_epi8(x, c_x),
                                   _mm_or_si128(_mm_cmpeq_epi8(next, c_o), _mm_cmpeq_epi8(next, c_a)));
        __m128i under = _mm_and_si128(
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, c_k), _mm_cmpeq_epi8(x, c_c)), _mm_cmpeq_epi8(x, c_m)),
            _mm_cmpeq_epi8(next, c_under));
        __m128i ws = _mm_and_si128(_mm_cmpeq_epi8(x_low, c_w), _mm_cmpeq_epi8(next_low, c_s));
        __m128i single = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, c_A), _mm_cmpeq_epi8(x, c_colon)),
                                      _mm_cmpeq_epi8(x, c_eq));
        __m128i any = _mm_or_si128(_mm_or_si128(_mm_or_si128(nu, bx), _mm_or_si128(yj, gx)),
                                   _mm_or_si128(_mm_or_si128(xx, under), _mm_or_si128(ws, single)));
        unsigned high_bit = (unsigned)_mm_movemask_epi8(x) & valid; /* non-ASCII bytes */
        if (high_bit)
            flags |= SCREEN_HINT;
        unsigned starts = (unsigned)_mm_movemask_epi8(any) & valid;
        while (starts) {
            flags = screen_at(s, n, b + __builtin_ctz(starts), flags, sr);
            starts &= starts - 1;
        }
        if (digit_candidate)
            continue;
        __m128i t = _mm_sub_epi8(x, c_0);
        __m128i digit = _mm_cmpeq_epi8(_mm_min_epu8(t, c_9), t);
        __m128i sep = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, c_space), _mm_cmpeq_epi8(x, c_hyphen)),
                                   _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, c_dot), _mm_cmpeq_epi8(x, c_under)),
                                                _mm_cmpeq_epi8(x, c_slash)));
        unsigned r = (unsigned)_mm_movemask_epi8(_mm_or_si128(digit, sep)) & valid;
        if (r == 0xFFFF) {
            carry += 16;
            if (carry >= 13)
                digit_candidate = 1;
            continue;
        }
        unsigned inv = ~r & 0xFFFF;
        unsigned low = (unsigned)__builtin_ctz(inv);   /* ones at the low end continue the run */
        unsigned high = (unsigned)__builtin_clz(inv) - 16; /* ones at the high end start the next */
        unsigned w = r; /* some 13 ones in a row inside the block: w keeps bit i iff r[i..i+12] */
        w &= w >> 1;
        w &= w >> 2;
        w &= w >> 4;
        w &= w >> 5;
        if (carry + low >= 13 || w)
            digit_candidate = 1;
        carry = high;
    }
    flags = screen_finish(s, n, flags, sr);
    if (digit_candidate && thirteen_digits(s, n))
        flags |= SCREEN_DIGITS;
    if (braces == 1 && brackets == 0)
        flags |= SCREEN_FLAT;
    return ((braces + brackets) << SCREEN_SHIFT) | flags;
}

#else

/* One pass, one table lookup per byte (no SSE2). */
static long long screen_bytes(const unsigned char *s, Py_ssize_t n, const ScreenRules *sr)
{
    int flags = 0;
    long long braces = 0, brackets = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned k = screen_class[s[i]];
        if (k == K_BRACE)
            braces++;
        else if (k == K_BRACKET)
            brackets++;
        else if (k == K_ANCHOR)
            flags = screen_at(s, n, i, flags, sr);
    }
    flags = screen_finish(s, n, flags, sr);
    if (thirteen_digits(s, n))
        flags |= SCREEN_DIGITS;
    if (braces == 1 && brackets == 0)
        flags |= SCREEN_FLAT;
    return ((braces + brackets) << SCREEN_SHIFT) | flags;
}

#endif

/*
 * screen(data: bytes, stems: bytes = b"", flags: int = 0) -> int
 *
 * One pass over the serialised event for the sanitiser: exactly the flags of
 * pipeline.sanitise._screen_python (the triggers of the value rules, a 13-digit run as card
 * candidate, whose issuer and Luhn checks stay in Python), plus the bracket counts the
 * depth check needs.  Flags as defined above; bracket count << 8.
 */
static int screen_rules(PyObject *stems, PyObject *flags, ScreenRules *sr)
{
    if (!PyBytes_Check(stems)) {
        PyErr_SetString(PyExc_TypeError, "screen: stems must be bytes");
        return -1;
    }
    sr->stems = PyBytes_AS_STRING(stems);
    sr->stems_len = PyBytes_GET_SIZE(stems);
    long f = PyLong_AsLong(flags);
    if (f == -1 && PyErr_Occurred())
        return -1;
    sr->flags = (int)f;
    return 0;
}

static PyObject *screen(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "screen takes bytes, and optionally stems (bytes) and flags (int)");
        return NULL;
    }
    ScreenRules sr = {"", 0, 0};
    if (nargs >= 2) {
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL)
            return NULL;
        int bad = screen_rules(args[1], nargs == 3 ? args[2] : zero, &sr);
        Py_DECREF(zero);
        if (bad < 0)
            return NULL;
    }
    return PyLong_FromLongLong(
        screen_bytes((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), &sr));
}

typedef struct {
    PyObject *dumps, *kwnames, *option, *box; /* box: [(redact, redact_values, keyset_verdicts,
                                                  last_clean, stems, flags)] */
    Py_ssize_t max_bytes;
    long long max_depth;
} PrepareArgs;

#define PREPARE_SETTINGS 6

/* args[0..5]: dumps, dumps_kwnames, dumps_option, max_bytes, max_depth, box */
static int prepare_args(PyObject *const *args, PrepareArgs *pa)
{
    pa->dumps = args[0];
    pa->kwnames = args[1];
    pa->option = args[2];
    pa->max_bytes = PyLong_AsSsize_t(args[3]);
    pa->max_depth = PyLong_AsLongLong(args[4]);
    pa->box = args[5];
    if (PyErr_Occurred())
        return -1;
    if (!PyTuple_Check(pa->kwnames) || !PyList_Check(pa->box) || PyList_GET_SIZE(pa->box) != 1) {
        PyErr_SetString(PyExc_TypeError, "prepare: kwnames must be a tuple, box a one-item list");
        return -1;
    }
    return 0;
}

/* The rule-dependent state, read from the box on every call (Sanitiser.reconfigure swaps
 * it): 0, or -1 with an exception set when it is malformed. */
typedef struct {
    int redact, redact_values;
    PyObject *keyset_verdicts, *last_clean, *key_verdicts;
    ScreenRules sr;
} PrepareState;

static int prepare_state(PyObject *state, PrepareState *ps)
{
    if (!PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != 7) {
        PyErr_SetString(PyExc_TypeError, "prepare: the box must hold a 7-tuple");
        return -1;
    }
    ps->redact = PyObject_IsTrue(PyTuple_GET_ITEM(state, 0));
    ps->redact_values = PyObject_IsTrue(PyTuple_GET_ITEM(state, 1));
    ps->keyset_verdicts = PyTuple_GET_ITEM(state, 2);
    ps->last_clean = PyTuple_GET_ITEM(state, 3);
    ps->key_verdicts = PyTuple_GET_ITEM(state, 6);
    if (ps->redact < 0 || ps->redact_values < 0)
        return -1;
    if (!PyDict_CheckExact(ps->keyset_verdicts) || !PyList_Check(ps->last_clean) ||
        PyList_GET_SIZE(ps->last_clean) != 1 || !PyDict_CheckExact(ps->key_verdicts)) {
        PyErr_SetString(PyExc_TypeError, "prepare: keyset_verdicts must be a dict, last_clean a one-item list");
        return -1;
    }
    return screen_rules(PyTuple_GET_ITEM(state, 4), PyTuple_GET_ITEM(state, 5), &ps->sr);
}

/* Whether every key of a nested event is known not to look secret (key_verdicts[key] is
 * False, recorded by the Python sanitiser's _keys_suspect): 1 yes, 0 "let Python decide"
 * (an unseen or secret-looking key, a container subclass), -1 on an error. */
static int keys_clean(PyObject *node, PyObject *verdicts, int depth)
{
    if (depth > 256)
        return 0;
    PyObject *const *items;
    Py_ssize_t n;
    if (PyDict_CheckExact(node)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(node, &pos, &k, &v)) {
            if (!PyUnicode_CheckExact(k))
                return 0;
            PyObject *verdict = PyDict_GetItemWithError(verdicts, k); /* borrowed */
            if (verdict != Py_False)
                return verdict == NULL && PyErr_Occurred() ? -1 : 0;
            if (PyDict_CheckExact(v) || PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
                int r = keys_clean(v, verdicts, depth + 1);
                if (r != 1)
                    return r;
            } else if (PyDict_Check(v) || PyList_Check(v) || PyTuple_Check(v)) {
                return 0;
            }
        }
        return 1;
    }
    if (PyList_CheckExact(node)) {
        items = &PyList_GET_ITEM(node, 0);
        n = PyList_GET_SIZE(node);
    } else {
        items = &PyTuple_GET_ITEM(node, 0);
        n = PyTuple_GET_SIZE(node);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = items[i];
        if (PyDict_CheckExact(v) || PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
            int r = keys_clean(v, verdicts, depth + 1);
            if (r != 1)
                return r;
        } else if (PyDict_Check(v) || PyList_Check(v) || PyTuple_Check(v)) {
            return 0;
        }
    }
    return 1;
}

/* The sanitiser's common case (see prepare_fast): a new reference to the serialised bytes,
 * a new reference to None when the Python sanitiser must decide, NULL on a hard error. */
static PyObject *prepare_core(PyObject *event, const PrepareArgs *pa)
{
    if (!PyDict_CheckExact(event))
        Py_RETURN_NONE;
    PyObject *state = PyList_GET_ITEM(pa->box, 0);
    Py_INCREF(state); /* held across dumps, in case the box is swapped meanwhile */
    PrepareState ps;
    if (prepare_state(state, &ps) < 0) {
        Py_DECREF(state);
        return NULL;
    }
    PyObject *call_args[2] = {event, pa->option};
    PyObject *out = PyObject_Vectorcall(pa->dumps, call_args, 1, pa->kwnames);
    if (out == NULL) {
        PyErr_Clear(); /* the Python path raises the precise InvalidEvent */
        Py_DECREF(state);
        Py_RETURN_NONE;
    }
    if (!PyBytes_Check(out) || PyBytes_GET_SIZE(out) > pa->max_bytes)
        goto slow;
    long long r = screen_bytes((const unsigned char *)PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out), &ps.sr);
    if ((r & SCREEN_NULL) || (r >> SCREEN_SHIFT) > pa->max_depth)
        goto slow;
    if (!ps.redact)
        goto done;
    if (ps.redact_values && ((r & SCREEN_HINT) ||
                             ((r & SCREEN_DIGITS) &&
                              card_in((const unsigned char *)PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out)))))
        goto slow;
    if (!(r & SCREEN_FLAT)) {
        /* nested: every key (at any depth) must be known clean.  A list can mutate while
         * walked only by Python code, and none runs here. */
        int clean = keys_clean(event, ps.key_verdicts, 0);
        if (clean < 0) {
            Py_DECREF(out);
            Py_DECREF(state);
            return NULL;
        }
        if (clean)
            goto done;
        goto slow;
    }
    /* the key set seen last and known clean, compared by identity: an application's
     * events reuse the same key objects (literals, orjson's key cache), so this usually
     * answers without building a tuple */
    PyObject *last = PyList_GET_ITEM(ps.last_clean, 0);
    if (PyTuple_CheckExact(last) && PyTuple_GET_SIZE(last) == PyDict_GET_SIZE(event)) {
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *v;
        int same = 1;
        while (PyDict_Next(event, &pos, &k, &v)) {
            if (i >= PyTuple_GET_SIZE(last) || PyTuple_GET_ITEM(last, i) != k) {
                same = 0;
                break;
            }
            i++;
        }
        if (same && i == PyTuple_GET_SIZE(last))
            goto done;
    }
    PyObject *keys = PyTuple_New(PyDict_GET_SIZE(event));
    if (keys == NULL) {
        Py_DECREF(out);
        Py_DECREF(state);
        return NULL;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(event, &pos, &k, &v)) {
        if (i >= PyTuple_GET_SIZE(keys))
            break;
        Py_INCREF(k);
        PyTuple_SET_ITEM(keys, i++, k);
    }
    if (i != PyTuple_GET_SIZE(keys)) {
        Py_DECREF(keys);
        goto slow;
    }
    PyObject *verdict = PyDict_GetItemWithError(ps.keyset_verdicts, keys); /* borrowed */
    if (verdict == Py_False) {
        PyList_SetItem(ps.last_clean, 0, keys); /* steals keys */
        goto done;
    }
    Py_DECREF(keys);
    if (verdict == NULL && PyErr_Occurred())
        PyErr_Clear();
slow:
    Py_DECREF(out);
    Py_DECREF(state);
    Py_RETURN_NONE;
done:
    Py_DECREF(state);
    return out;
}

/*
 * prepare_fast(dumps, dumps_kwnames, dumps_option, max_bytes, max_depth, box, event)
 *     -> bytes or None
 *
 * (The event comes last so that functools.partial can bind the settings once.)
 *
 * The sanitiser's common case in one call: a plain dict that serialises (dumps(event,
 * option=...)) within max_bytes, contains no null (NaN/Infinity hide there), cannot be nested
 * deeper than max_depth, shows no trigger of a value rule (screen with box[0]'s stems and
 * flags), and, when flat, whose key set is already known to hold no secret-looking key
 * (keyset_verdicts[tuple(keys)] is False; the last such key tuple is kept in last_clean[0]
 * for an identity check); a nested event instead needs every key at every depth known
 * clean (key_verdicts[key] is False).  box[0] is (redact, redact_values, keyset_verdicts,
 * last_clean, stems, flags, key_verdicts), read on every call: Sanitiser.reconfigure
 * replaces it.  Returns the
 * serialised bytes, or None whenever any of that does not hold: the Python sanitiser then
 * decides (and raises InvalidEvent, redacts, or records the key-set verdict).
 */
static PyObject *prepare_fast(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != PREPARE_SETTINGS + 1) {
        PyErr_SetString(PyExc_TypeError, "prepare_fast takes 7 arguments");
        return NULL;
    }
    PrepareArgs pa;
    if (prepare_args(args, &pa) < 0)
        return NULL;
    return prepare_core(args[PREPARE_SETTINGS], &pa);
}

/*
 * prepare_many(items, loads, max_line, dumps, dumps_kwnames, dumps_option, max_bytes,
 *              max_depth, box) -> list
 *
 * prepare_fast for each item.  With ``loads`` (NDJSON lines) each item is first parsed:
 * prepare_fast(loads(raw)); the result is None when the line is not bytes, is longer than
 * max_line, or does not parse.  Without (``loads`` None) the items are the events.  None
 * also wherever the Python sanitiser must decide (it then gives the exact result or
 * InvalidEvent).
 */
static PyObject *prepare_many(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != PREPARE_SETTINGS + 3) {
        PyErr_SetString(PyExc_TypeError, "prepare_many takes 9 arguments");
        return NULL;
    }
    PyObject *raws = args[0], *loads = args[1];
    if (!PyList_Check(raws)) {
        PyErr_SetString(PyExc_TypeError, "prepare_many: items must be a list");
        return NULL;
    }
    Py_ssize_t max_line = PyLong_AsSsize_t(args[2]);
    if (max_line == -1 && PyErr_Occurred())
        return NULL;
    PrepareArgs pa;
    if (prepare_args(args + 3, &pa) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(raws);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyList_GET_ITEM(raws, i);
        PyObject *item;
        if (loads == Py_None) {
            item = prepare_core(raw, &pa);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        } else if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) > max_line) {
            item = Py_None;
            Py_INCREF(item);
        } else {
            PyObject *obj = PyObject_Vectorcall(loads, &raw, 1, NULL);
            if (obj == NULL) {
                PyErr_Clear();
                item = Py_None;
                Py_INCREF(item);
            } else {
                item = prepare_core(obj, &pa);
                Py_DECREF(obj);
                if (item == NULL) {
                    Py_DECREF(out);
                    return NULL;
                }
            }
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* ---------------------------------------------------------------------- scan_lines ---- */

/* Strict-subset JSON validation (see the file comment): compact JSON as orjson writes it,
 * within the log's JSON profile (docs/FORMAT.md section 1.1, pipeline/strictjson.py). */

#define PROFILE_MAX_DEPTH 64 /* pipeline.strictjson.MAX_DEPTH */

/* the longest record line, newline included (docs/FORMAT.md section 1, check 2): a longer
 * one is left to Python, which judges it without copying it */
#define MAX_LINE_BYTES ((Py_ssize_t)32 << 20) /* pipeline.format.record.MAX_LINE_BYTES */

/* the keys of the objects being checked, innermost last: a duplicate key is left to Python */
#define KEY_STACK 512

typedef struct {
    const unsigned char *p, *end;
    int nkeys;
    const unsigned char *key[KEY_STACK];
    Py_ssize_t key_len[KEY_STACK];
    uint64_t key_fp[KEY_STACK];
} Cursor;

/* The JSON profile's integer range (docs/FORMAT.md section 1.1): [-2^63, 2^64-1], given the
 * digits of an integer literal (no sign, no leading zero: the JSON grammar's). */
static int int_in_range(int negative, const unsigned char *digits, Py_ssize_t n)
{
    if (negative)
        return n < 19 || (n == 19 && memcmp(digits, "9223372036854775808", 19) <= 0);
    return n < 20 || (n == 20 && memcmp(digits, "18446744073709551615", 20) <= 0);
}

static int json_value(Cursor *c, int depth);

/* 1 for bytes that end a run of plain string content: '"' and '\\' */
static unsigned char string_stop[256];

/* 1 for bytes a JSON string may hold as they are: printable ASCII other than '"' and '\\' */
static unsigned char json_plain[256];

static void json_init(void)
{
    string_stop['"'] = string_stop['\\'] = 1;
    for (int c = 0x20; c < 0x80; c++)
        json_plain[c] = c != '"' && c != '\\';
}

static int json_string(Cursor *c)
{
    /* at the opening quote; returns 1 for a string without escapes, 2 with, 0 if invalid */
    int escaped = 0;
    c->p++;
    while (c->p < c->end) {
        /* eight bytes at a time while none is a quote, backslash, control byte or non-ASCII
         * (the classic SWAR zero-byte tests); then byte by byte */
        while (c->end - c->p >= 8) {
            uint64_t x;
            memcpy(&x, c->p, 8);
            const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
            uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
            uint64_t special = ((q - ones) & ~q) | ((b - ones) & ~b) | (x - ones * 0x20) | x;
            if (special & highs)
                break;
            c->p += 8;
        }
        while (c->p < c->end && json_plain[*c->p])
            c->p++;
        if (c->p >= c->end)
            return 0;
        unsigned char ch = *c->p;
        if (ch == '"') {
            c->p++;
            return 1 + escaped;
        }
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            escaped = 1;
            if (c->end - c->p < 2)
                return 0;
            unsigned char e = c->p[1];
            if (e == 'u') {
                if (c->end - c->p < 6)
                    return 0;
                unsigned v = 0;
                for (int i = 2; i < 6; i++) {
                    unsigned char h = c->p[i];
                    v <<= 4;
                    if (h >= '0' && h <= '9')
                        v |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f')
                        v |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F')
                        v |= (unsigned)(h - 'A' + 10);
                    else
                        return 0;
                }
                if (v >= 0xD800 && v <= 0xDFFF)
                    return 0; /* surrogates: leave to orjson */
                c->p += 6;
                continue;
            }
            if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                c->p += 2;
                continue;
            }
            return 0;
        }
        if (ch < 0x80) {
            c->p++;
            continue;
        }
        /* strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF */
        Py_ssize_t left = c->end - c->p;
        if (ch >= 0xC2 && ch <= 0xDF) {
            if (left < 2 || (c->p[1] & 0xC0) != 0x80)
                return 0;
            c->p += 2;
        } else if (ch >= 0xE0 && ch <= 0xEF) {
            if (left < 3 || (c->p[1] & 0xC0) != 0x80 || (c->p[2] & 0xC0) != 0x80)
                return 0;
            if (ch == 0xE0 && c->p[1] < 0xA0)
                return 0;
            if (ch == 0xED && c->p[1] >= 0xA0)
                return 0;
            c->p += 3;
        } else if (ch >= 0xF0 && ch <= 0xF4) {
            if (left < 4 || (c->p[1] & 0xC0) != 0x80 || (c->p[2] & 0xC0) != 0x80 || (c->p[3] & 0xC0) != 0x80)
                return 0;
            if (ch == 0xF0 && c->p[1] < 0x90)
                return 0;
            if (ch == 0xF4 && c->p[1] >= 0x90)
                return 0;
            c->p += 4;
        } else {
            return 0;
        }
    }
    return 0;
}

static int json_number(Cursor *c)
{
    int negative = c->p < c->end && *c->p == '-';
    if (negative)
        c->p++;
    const unsigned char *start = c->p;
    int digits = 0;
    if (c->p >= c->end)
        return 0;
    if (*c->p == '0') {
        c->p++;
        digits++;
    } else if (*c->p >= '1' && *c->p <= '9') {
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            c->p++;
            digits++;
        }
    } else {
        return 0;
    }
    if (!(c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')) && !int_in_range(negative, start, digits))
        return 0; /* an integer outside the profile's range: Python names it */
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        int frac = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            c->p++;
            frac++;
        }
        if (frac == 0)
            return 0;
        digits += frac;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        int exp = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            c->p++;
            exp++;
        }
        if (exp == 0 || exp > 2)
            return 0; /* large exponents may overflow to infinity, which orjson refuses */
    }
    return digits <= 40; /* longer numbers: leave to orjson */
}

static int json_value(Cursor *c, int depth)
{
    if (c->p >= c->end)
        return 0;
    unsigned char ch = *c->p;
    if (ch == '"')
        return json_string(c);
    if (ch == '{' || ch == '[') {
        if (depth >= PROFILE_MAX_DEPTH)
            return 0; /* deeper than the profile allows (the outermost value is depth 0 here) */
        unsigned char close = ch == '{' ? '}' : ']';
        int keys_from = c->nkeys;
        c->p++;
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 1;
        }
        for (;;) {
            if (ch == '{') {
                const unsigned char *key = c->p;
                /* unique keys: compared as bytes, which is exact for keys without escapes (a key
                 * with one is left to Python); a fingerprint of the length and first bytes
                 * settles almost every comparison without memcmp */
                if (c->p >= c->end || *c->p != '"' || json_string(c) != 1 || c->nkeys >= KEY_STACK)
                    return 0;
                Py_ssize_t key_len = c->p - key;
                uint64_t fp = 0;
                memcpy(&fp, key, key_len < 8 ? (size_t)key_len : 8);
                fp ^= (uint64_t)key_len << 56;
                for (int i = keys_from; i < c->nkeys; i++)
                    if (c->key_fp[i] == fp && c->key_len[i] == key_len && memcmp(c->key[i], key, (size_t)key_len) == 0)
                        return 0;
                c->key[c->nkeys] = key;
                c->key_fp[c->nkeys] = fp;
                c->key_len[c->nkeys++] = key_len;
                if (c->p >= c->end || *c->p != ':')
                    return 0;
                c->p++;
            }
            if (!json_value(c, depth + 1))
                return 0;
            if (c->p >= c->end)
                return 0;
            if (*c->p == ',') {
                c->p++;
                continue;
            }
            if (*c->p == close) {
                c->p++;
                c->nkeys = keys_from;
                return 1;
            }
            return 0;
        }
    }
    if (ch == 't')
        return c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0 ? (c->p += 4, 1) : 0;
    if (ch == 'f')
        return c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0 ? (c->p += 5, 1) : 0;
    if (ch == 'n')
        return c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0 ? (c->p += 4, 1) : 0;
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return json_number(c);
    return 0;
}

static int json_object_exact(const unsigned char *s, Py_ssize_t n)
{
    if (n < 2 || s[0] != '{')
        return 0;
    Cursor c;
    c.p = s;
    c.end = s + n;
    c.nkeys = 0;
    return json_value(&c, 0) && c.p == c.end;
}

/* ------------------------------------------------------------- the JSON profile ---- */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Keys of every object in ``o``; -1 past ``levels`` levels (the caller's object need not be
 * what the text holds, and may even contain itself: the walk stays bounded). */
static Py_ssize_t count_keys(PyObject *o, long long levels)
{
    Py_ssize_t n = 0, sub;
    if (levels <= 0)
        return -1;
    if (PyDict_CheckExact(o)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        n = PyDict_GET_SIZE(o);
        while (PyDict_Next(o, &pos, &k, &v))
            if (PyDict_CheckExact(v) || PyList_CheckExact(v)) {
                if ((sub = count_keys(v, levels - 1)) < 0)
                    return -1;
                n += sub;
            }
    } else if (PyList_CheckExact(o)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++) {
            PyObject *v = PyList_GET_ITEM(o, i);
            if (PyDict_CheckExact(v) || PyList_CheckExact(v)) {
                if ((sub = count_keys(v, levels - 1)) < 0)
                    return -1;
                n += sub;
            }
        }
    }
    return n;
}

/* Whether ``s`` (a JSON text orjson has parsed into ``obj``) is within the profile beyond what
 * orjson checks: no object holds a key twice, integers in range, at most max_depth levels,
 * and with ``compact`` no whitespace outside strings.  One pass over the bytes (which are
 * valid JSON, so quotes and escapes delimit the strings): every ':' outside a string follows
 * exactly one key, so the keys written equal the keys parsed (counted in ``obj``, where a
 * repeated key collapses) exactly when no key repeats.  0 means "not shown": the Python
 * reference (pipeline.strictjson.loads) then decides and names the rule broken. */
static int profile_ok(const unsigned char *s, Py_ssize_t n, PyObject *obj, int compact, long long max_depth)
{
    Py_ssize_t i = 0, colons = 0, containers = 0;
    long long depth = 0;
    while (i < n) {
        unsigned char ch = s[i];
        if (ch == '"') {
            i++;
            for (;;) {
                /* eight bytes at a time while none is a quote or backslash (SWAR zero-byte test) */
                while (n - i >= 8) {
                    uint64_t x;
                    memcpy(&x, s + i, 8);
                    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
                    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
                    if ((((q - ones) & ~q) | ((b - ones) & ~b)) & highs)
                        break;
                    i += 8;
                }
                while (i < n && !string_stop[s[i]])
                    i++;
                if (i >= n)
                    return 0;
                if (s[i] == '\\') {
                    i += 2;
                    continue;
                }
                i++;
                break;
            }
            continue;
        }
        if (ch == '{' || ch == '[') {
            containers++;
            if (++depth > max_depth)
                return 0;
        } else if (ch == '}' || ch == ']') {
            depth--;
        } else if (ch == ':') {
            colons++;
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (compact)
                return 0;
        } else if (ch == '-' || is_digit(ch)) {
            int negative = ch == '-';
            Py_ssize_t start = i + negative, j = start;
            while (j < n && is_digit(s[j]))
                j++;
            if (!(j < n && (s[j] == '.' || s[j] == 'e' || s[j] == 'E')) && !int_in_range(negative, s + start, j - start))
                return 0;
            while (j < n && (is_digit(s[j]) || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || s[j] == '+' || s[j] == '-'))
                j++;
            i = j;
            continue;
        }
        i++;
    }
    if (containers == 1 && PyDict_CheckExact(obj))
        return colons == PyDict_GET_SIZE(obj); /* one flat object: nothing to walk */
    return colons == count_keys(obj, max_depth < 1024 ? max_depth : 1024); /* orjson nests at most 1024 */
}

static int profile_args(PyObject *raw, const char *fn)
{
    if (!PyBytes_Check(raw)) {
        PyErr_Format(PyExc_TypeError, "%s: the JSON text must be bytes", fn);
        return -1;
    }
    return 0;
}

/* profile_ok(raw, obj, compact, max_depth) -> bool: see profile_ok above. */
static PyObject *profile_ok_py(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "profile_ok takes 4 arguments");
        return NULL;
    }
    if (profile_args(args[0], "profile_ok") < 0)
        return NULL;
    int compact = PyObject_IsTrue(args[2]);
    long long max_depth = PyLong_AsLongLong(args[3]);
    if (compact < 0 || (max_depth == -1 && PyErr_Occurred()))
        return NULL;
    return PyBool_FromLong(profile_ok((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                                      args[1], compact, max_depth));
}

/*
 * profile_loads(loads, max_depth, raw) -> object
 *
 * loads(raw) when profile_ok shows the text within the profile (whitespace allowed);
 * otherwise ValueError, meaning "not shown here": the sanitiser's C batch path
 * (prepare_many) then leaves the line to Sanitiser.prepare_json, whose exact check names
 * the broken rule.  Bound with functools.partial as prepare_many's ``loads``.
 */
static PyObject *profile_loads(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "profile_loads takes 3 arguments");
        return NULL;
    }
    PyObject *raw = args[2];
    long long max_depth = PyLong_AsLongLong(args[1]);
    if ((max_depth == -1 && PyErr_Occurred()) || profile_args(raw, "profile_loads") < 0)
        return NULL;
    PyObject *obj = PyObject_Vectorcall(args[0], &raw, 1, NULL);
    if (obj == NULL)
        return NULL;
    if (!profile_ok((const unsigned char *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), obj, 0, max_depth)) {
        Py_DECREF(obj);
        PyErr_SetString(PyExc_ValueError, "not shown to be within the JSON profile");
        return NULL;
    }
    return obj;
}

static int two(const unsigned char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's days_from_civil) */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" -> epoch seconds, as pipeline.verify.chain._ts_seconds
 * computes it; 0 for anything outside 1970..9999 or not a real calendar time. */
static int ts_seconds(const unsigned char *t, double *out)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int i = 0; i < 26; i++) {
        if (i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19)
            continue;
        if (!is_digit(t[i]))
            return 0;
    }
    if (t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':' || t[19] != '.' || t[26] != 'Z')
        return 0;
    int year = two(t) * 100 + two(t + 2), mon = two(t + 5), day = two(t + 8);
    int hh = two(t + 11), mm = two(t + 14), ss = two(t + 17);
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || hh > 23 || mm > 59 || ss > 59)
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > mdays[mon - 1] + (mon == 2 && leap))
        return 0;
    long long secs = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400LL + hh * 3600 + mm * 60 + ss;
    long micro = 0;
    for (int i = 20; i < 26; i++)
        micro = micro * 10 + (t[i] - '0');
    *out = (double)secs + (double)micro / 1e6;
    return 1;
}

typedef struct {
    const unsigned char *stream;
    Py_ssize_t stream_len;
    unsigned long long expected_seq;
    unsigned char prev[HEX_LEN];
    double prev_ts;
    int have_prev_ts;
    double max_gap;
    long long max_gap_after; /* -1: none recorded */
    long long records;
    CompactRangeObject *seg_cr, *stream_cr;
} ScanState;

#define MAX_SEQ_VALUE 999999999999999999ULL

/* One line (with its newline) checked as the Python verifier checks an event or heartbeat
 * record that follows another record of the same segment.  1: accepted and applied. */
static int scan_one(ScanState *st, const unsigned char *s, Py_ssize_t n)
{
    static const char V1[] = "{\"v\":1,\"stream\":\"";
    static const char SEQ_KEY[] = "\",\"seq\":";
    Py_ssize_t suffix = LIT(HASH_KEY) + HEX_LEN + LIT(TAIL);
    if (n < suffix + 2 || memcmp(s + n - 3, TAIL, 3) != 0)
        return 0;
    Py_ssize_t body_end = n - suffix;
    if (memcmp(s + body_end, HASH_KEY, LIT(HASH_KEY)) != 0)
        return 0;
    /* the claimed hash is compared with the computed lowercase hex below, which also
     * rejects any other spelling */
    const unsigned char *claimed = s + body_end + LIT(HASH_KEY);
    if (memchr(s, '\n', (size_t)body_end) != NULL)
        return 0;
    const unsigned char *p = s, *end = s + body_end;
    if (end - p < (Py_ssize_t)LIT(V1) || memcmp(p, V1, LIT(V1)) != 0)
        return 0;
    p += LIT(V1);
    if (end - p < st->stream_len || memcmp(p, st->stream, (size_t)st->stream_len) != 0)
        return 0;
    p += st->stream_len;
    if (end - p < (Py_ssize_t)LIT(SEQ_KEY) || memcmp(p, SEQ_KEY, LIT(SEQ_KEY)) != 0)
        return 0;
    p += LIT(SEQ_KEY);
    unsigned long long seq = 0;
    int nd = 0;
    while (p < end && is_digit(*p) && nd < 19) {
        seq = seq * 10 + (unsigned)(*p - '0');
        p++;
        nd++;
    }
    if (nd == 0 || (nd > 1 && p[-nd] == '0') || seq > MAX_SEQ_VALUE || seq != st->expected_seq)
        return 0;
    if (end - p < (Py_ssize_t)LIT(TS_KEY) + 27 || memcmp(p, TS_KEY, LIT(TS_KEY)) != 0)
        return 0;
    p += LIT(TS_KEY);
    double t;
    if (!ts_seconds(p, &t))
        return 0;
    p += 27;
    if (end - p < (Py_ssize_t)LIT(KIND_KEY) || memcmp(p, KIND_KEY, LIT(KIND_KEY)) != 0)
        return 0;
    p += LIT(KIND_KEY);
    if (end - p >= 5 && memcmp(p, "event", 5) == 0)
        p += 5;
    else if (end - p >= 9 && memcmp(p, "heartbeat", 9) == 0)
        p += 9;
    else
        return 0; /* seals and recoveries are judged in Python */
    if (end - p < (Py_ssize_t)LIT(PREV_KEY) + HEX_LEN || memcmp(p, PREV_KEY, LIT(PREV_KEY)) != 0)
        return 0;
    p += LIT(PREV_KEY);
    if (memcmp(p, st->prev, HEX_LEN) != 0)
        return 0;
    p += HEX_LEN;
    if (end - p < (Py_ssize_t)LIT(DATA_KEY) || memcmp(p, DATA_KEY, LIT(DATA_KEY)) != 0)
        return 0;
    p += LIT(DATA_KEY);
    if (!json_object_exact(p, end - p))
        return 0;
    unsigned char digest[HASH_LEN];
    char hex[HEX_LEN];
    sha256(s, (size_t)body_end, digest);
    to_hex(digest, hex);
    if (memcmp(hex, claimed, HEX_LEN) != 0)
        return 0;
    if (st->seg_cr->size >= CR_MAX_SIZE || (st->stream_cr && st->stream_cr->size >= CR_MAX_SIZE))
        return 0;
    /* accepted: apply exactly what the Python loop does for such a record */
    if (st->have_prev_ts && t - st->prev_ts > st->max_gap) {
        st->max_gap = t - st->prev_ts;
        st->max_gap_after = (long long)st->expected_seq - 1;
    }
    st->prev_ts = t;
    st->have_prev_ts = 1;
    unsigned char lh[HASH_LEN];
    leaf_hash(s, (size_t)(n - 1), lh);
    cr_push(st->seg_cr, lh);
    if (st->stream_cr)
        cr_push(st->stream_cr, lh);
    memcpy(st->prev, claimed, HEX_LEN);
    st->expected_seq = seq + 1;
    st->records++;
    return 1;
}

/*
 * scan_lines(buf, pos, stream, expected_seq, prev_hash, prev_ts, max_gap, max_gap_after,
 *            seg_cr, stream_cr)
 *   -> (pos, last_line_start, count, expected_seq, prev_hash, prev_ts, max_gap, max_gap_after)
 *
 * Checks consecutive complete lines of ``buf`` from ``pos`` while each is an event or
 * heartbeat record that the Python verifier would accept after the previous one, and stops
 * at the first line it does not fully accept (or at the end of the last complete line),
 * returning where it stopped (and where the last accepted line began, or -1) and the updated state.  prev_ts: float or None;
 * max_gap_after: int or None.  Runs without the GIL.  The compact ranges must not be used
 * by another thread meanwhile.
 */
static PyObject *scan_lines(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "scan_lines takes 10 arguments");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    ScanState st;
    memset(&st, 0, sizeof st);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        goto out;
    if (pos < 0 || pos > view.len) {
        PyErr_SetString(PyExc_ValueError, "pos outside the buffer");
        goto out;
    }
    if (!PyBytes_Check(args[2]) || !PyBytes_Check(args[4]) || PyBytes_GET_SIZE(args[4]) != HEX_LEN) {
        PyErr_SetString(PyExc_TypeError, "scan_lines: stream must be bytes, prev_hash 64 hex bytes");
        goto out;
    }
    st.stream = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    st.stream_len = PyBytes_GET_SIZE(args[2]);
    st.expected_seq = PyLong_AsUnsignedLongLong(args[3]);
    if (st.expected_seq == (unsigned long long)-1 && PyErr_Occurred())
        goto out;
    memcpy(st.prev, PyBytes_AS_STRING(args[4]), HEX_LEN);
    if (args[5] != Py_None) {
        st.prev_ts = PyFloat_AsDouble(args[5]);
        if (st.prev_ts == -1.0 && PyErr_Occurred())
            goto out;
        st.have_prev_ts = 1;
    }
    st.max_gap = PyFloat_AsDouble(args[6]);
    if (st.max_gap == -1.0 && PyErr_Occurred())
        goto out;
    st.max_gap_after = -1;
    if (args[7] != Py_None) {
        st.max_gap_after = PyLong_AsLongLong(args[7]);
        if (st.max_gap_after == -1 && PyErr_Occurred())
            goto out;
    }
    if (as_cr(args[8], &st.seg_cr) < 0 || as_cr(args[9], &st.stream_cr) < 0)
        goto out;
    if (st.seg_cr == NULL) {
        PyErr_SetString(PyExc_TypeError, "scan_lines needs the segment's compact range");
        goto out;
    }
    const unsigned char *base = (const unsigned char *)view.buf;
    Py_ssize_t len = view.len;
    Py_ssize_t last_start = -1;
    Py_BEGIN_ALLOW_THREADS
    while (pos < len) {
        const unsigned char *nl = memchr(base + pos, '\n', (size_t)(len - pos));
        if (nl == NULL)
            break;
        Py_ssize_t n = nl - (base + pos) + 1;
        if (n > MAX_LINE_BYTES || !scan_one(&st, base + pos, n))
            break;
        last_start = pos;
        pos += n;
    }
    Py_END_ALLOW_THREADS
    PyObject *prev_ts = st.have_prev_ts ? PyFloat_FromDouble(st.prev_ts) : (Py_INCREF(Py_None), Py_None);
    PyObject *gap_after = st.max_gap_after >= 0 ? PyLong_FromLongLong(st.max_gap_after) : (Py_INCREF(Py_None), Py_None);
    if (prev_ts == NULL || gap_after == NULL) {
        Py_XDECREF(prev_ts);
        Py_XDECREF(gap_after);
        goto out;
    }
    result = Py_BuildValue("(nnLKy#NdN)", pos, last_start, st.records, st.expected_seq, (const char *)st.prev,
                           (Py_ssize_t)HEX_LEN, prev_ts, st.max_gap, gap_after);
out:
    PyBuffer_Release(&view);
    return result;
}

/*
 * write_lines(fd, lines) -> None
 *
 * Write the byte strings in order to fd with writev, all of them in one call that lets go
 * of the GIL once (os.writev takes the GIL back after every 1024 lines; each time an
 * appending thread may hold it for a whole switch interval, 5 ms, which starved the
 * writer's background flush).  Short writes continue where they stopped; EINTR runs the
 * signal handlers and goes on; any other error raises OSError with what was written so far
 * left in the file, exactly as a loop of os.writev would.
 */
static PyObject *write_lines(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "write_lines takes 2 arguments");
        return NULL;
    }
    long fd_long = PyLong_AsLong(args[0]);
    if (fd_long == -1 && PyErr_Occurred())
        return NULL;
    if (fd_long < 0 || fd_long > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "write_lines: bad file descriptor");
        return NULL;
    }
    int fd = (int)fd_long;
    /* a tuple holds every line alive and unchanged while the GIL is released */
    PyObject *lines = PySequence_Tuple(args[1]);
    if (lines == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(lines);
    struct iovec *iov = PyMem_New(struct iovec, n > 0 ? n : 1);
    if (iov == NULL) {
        Py_DECREF(lines);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyTuple_GET_ITEM(lines, i);
        if (!PyBytes_Check(line)) {
            PyMem_Free(iov);
            Py_DECREF(lines);
            PyErr_SetString(PyExc_TypeError, "write_lines: every line must be bytes");
            return NULL;
        }
        iov[i].iov_base = PyBytes_AS_STRING(line);
        iov[i].iov_len = (size_t)PyBytes_GET_SIZE(line);
    }
    Py_ssize_t at = 0; /* the first iovec not yet fully written */
    int err = 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        while (at < n) {
            if (iov[at].iov_len == 0) {
                at++;
                continue;
            }
            int count = n - at > IOV_MAX ? IOV_MAX : (int)(n - at);
            ssize_t w = writev(fd, iov + at, count);
            if (w < 0) {
                err = errno;
                break;
            }
            size_t left = (size_t)w;
            while (at < n && left >= iov[at].iov_len) {
                left -= iov[at].iov_len;
                at++;
            }
            if (left) {
                iov[at].iov_base = (char *)iov[at].iov_base + left;
                iov[at].iov_len -= left;
            }
        }
        Py_END_ALLOW_THREADS
        if (err == EINTR) {
            err = 0;
            if (PyErr_CheckSignals() < 0)
                break;
            continue;
        }
        break;
    }
    PyMem_Free(iov);
    Py_DECREF(lines);
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/*
 * fsync(fd, data_only=False) -> None
 *
 * os.fsync / os.fdatasync for the writer's flush, without the GIL.  EINTR runs the signal
 * handlers and retries; any other error raises OSError.
 */
static PyObject *fsync_fd(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "fsync(fd, data_only=False)");
        return NULL;
    }
    long fd_long = PyLong_AsLong(args[0]);
    if (fd_long == -1 && PyErr_Occurred())
        return NULL;
    if (fd_long < 0 || fd_long > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fsync: bad file descriptor");
        return NULL;
    }
    int data_only = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (data_only < 0)
        return NULL;
    int fd = (int)fd_long, r, err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = data_only ? fdatasync(fd) : fsync(fd);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r == 0)
            Py_RETURN_NONE;
        if (err != EINTR)
            break;
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* ---------------------------------------------------------------- syslog (RFC 5424) ---- */

/*
 * syslog_events(items, at, parse, unparsed) -> list[dict]
 *
 * The events of a batch of syslog frames (pipeline.ingest.syslog.frame_events): item[at] is
 * a frame's bytes, item[at + 1] its framing error or None.  A frame with an error becomes
 * unparsed(frame, error).  A well-formed RFC 5424 message -- exactly what the reference's
 * _FAST_5424 expression matches, followed by structured data and MSG that parse without
 * error and are UTF-8 -- is parsed here into the same dict (same keys in the same order,
 * same values) as pipeline.ingest.syslog.parse_message; every other frame (RFC 3164,
 * anything malformed, bytes that are not UTF-8) is handed to parse(frame), the Python
 * reference, so the two can never disagree on the unusual cases.  Reads stay within the
 * frame's bytes for every input.
 */

static PyObject *sl_str_syslog, *sl_str_rfc5424, *sl_str_facility, *sl_str_severity, *sl_str_sd,
    *sl_str_message, *sl_header_keys[5];
static unsigned char sl_sd_name_char[256];
static PyObject *sl_relp_syslog;

static int syslog_init(void)
{
    static const char *const header[5] = {"timestamp", "hostname", "app_name", "procid", "msgid"};
    for (int c = 0x21; c < 0x7f; c++)
        sl_sd_name_char[c] = c != '=' && c != ']' && c != '"';
    sl_str_syslog = PyUnicode_InternFromString("syslog");
    sl_str_rfc5424 = PyUnicode_InternFromString("rfc5424");
    sl_str_facility = PyUnicode_InternFromString("facility");
    sl_str_severity = PyUnicode_InternFromString("severity");
    sl_str_sd = PyUnicode_InternFromString("structured_data");
    sl_str_message = PyUnicode_InternFromString("message");
    if (!sl_str_syslog || !sl_str_rfc5424 || !sl_str_facility || !sl_str_severity || !sl_str_sd || !sl_str_message)
        return -1;
    for (int k = 0; k < 5; k++)
        if ((sl_header_keys[k] = PyUnicode_InternFromString(header[k])) == NULL)
            return -1;
    return (sl_relp_syslog = PyUnicode_InternFromString("syslog")) == NULL ? -1 : 0;
}

#define SL_DIGIT(c) ((unsigned)((c) - '0') < 10u)
#define SL_PRINT(c) ((c) >= 0x21 && (c) <= 0x7e)

/* n ASCII digits at p[i..] (bounds checked); advances *i */
static int sl_digits(const unsigned char *p, Py_ssize_t len, Py_ssize_t *i, int n)
{
    if (len - *i < n)
        return 0;
    for (int k = 0; k < n; k++)
        if (!SL_DIGIT(p[*i + k]))
            return 0;
    *i += n;
    return 1;
}

static int sl_byte(const unsigned char *p, Py_ssize_t len, Py_ssize_t *i, unsigned char c)
{
    if (*i >= len || p[*i] != c)
        return 0;
    (*i)++;
    return 1;
}

/* the RFC 3339 timestamp of _FAST_5424: YYYY-MM-DDThh:mm:ss[.1-6 digits](Z|+hh:mm|-hh:mm) */
static int sl_timestamp(const unsigned char *p, Py_ssize_t len, Py_ssize_t *i)
{
    if (!(sl_digits(p, len, i, 4) && sl_byte(p, len, i, '-') && sl_digits(p, len, i, 2) && sl_byte(p, len, i, '-') &&
          sl_digits(p, len, i, 2) && sl_byte(p, len, i, 'T') && sl_digits(p, len, i, 2) && sl_byte(p, len, i, ':') &&
          sl_digits(p, len, i, 2) && sl_byte(p, len, i, ':') && sl_digits(p, len, i, 2)))
        return 0;
    if (*i < len && p[*i] == '.') {
        Py_ssize_t j = *i + 1;
        while (j < len && j - *i <= 7 && SL_DIGIT(p[j]))
            j++;
        if (j - *i == 1 || j - *i == 8)  /* no digit, or a 7th: the expression cannot match */
            return 0;
        *i = j;
    }
    if (*i >= len)
        return 0;
    if (p[*i] == 'Z') {
        (*i)++;
        return 1;
    }
    if (p[*i] != '+' && p[*i] != '-')
        return 0;
    (*i)++;
    return sl_digits(p, len, i, 2) && sl_byte(p, len, i, ':') && sl_digits(p, len, i, 2);
}

/* a run of 1..limit printable ASCII bytes followed by a space; sets *start, *end (exclusive) */
static int sl_field(const unsigned char *p, Py_ssize_t len, Py_ssize_t *i, Py_ssize_t limit, Py_ssize_t *start,
                    Py_ssize_t *end)
{
    Py_ssize_t j = *i, stop = len - *i > limit ? *i + limit : len;
    while (j < stop && SL_PRINT(p[j]))
        j++;
    if (j == *i || j >= len || p[j] != ' ')
        return 0;
    *start = *i;
    *end = j;
    *i = j + 1;
    return 1;
}

/* UTF-8 text, or 0 with no error set when the bytes are not UTF-8 (the caller falls back) */
static int sl_utf8(const char *s, Py_ssize_t n, PyObject **out)
{
    *out = PyUnicode_DecodeUTF8(s, n, NULL);
    if (*out != NULL)
        return 1;
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* one PARAM-VALUE (between the quotes, escapes \" \\ \] resolved, other backslashes kept) */
static int sl_param_value(const unsigned char *v, Py_ssize_t n, int escaped, PyObject **out)
{
    if (!escaped)
        return sl_utf8((const char *)v, n, out);
    char small[256];
    char *buf = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)n);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (v[k] == '\\' && k + 1 < n && (v[k + 1] == '"' || v[k + 1] == '\\' || v[k + 1] == ']')) {
            buf[m++] = (char)v[k + 1];
            k++;
        } else {
            buf[m++] = (char)v[k];
        }
    }
    int r = sl_utf8(buf, m, out);
    if (buf != small)
        PyMem_Free(buf);
    return r;
}

/* params[name] = value, or a list of every value when the name is given again */
static int sl_add_param(PyObject *params, PyObject *name, PyObject *value)
{
    PyObject *prev = PyDict_GetItemWithError(params, name);
    if (prev == NULL)
        return PyErr_Occurred() ? -1 : PyDict_SetItem(params, name, value);
    if (PyList_CheckExact(prev))
        return PyList_Append(prev, value);
    PyObject *both = PyList_New(2);
    if (both == NULL)
        return -1;
    Py_INCREF(prev);
    Py_INCREF(value);
    PyList_SET_ITEM(both, 0, prev);
    PyList_SET_ITEM(both, 1, value);
    int r = PyDict_SetItem(params, name, both);
    Py_DECREF(both);
    return r;
}

/* an SD-NAME: 1..32 bytes of PRINTUSASCII except = ] " ; *i is left on the byte after it */
static Py_ssize_t sl_sd_name(const unsigned char *p, Py_ssize_t len, Py_ssize_t *i)
{
    Py_ssize_t j = *i, stop = len - *i > 33 ? *i + 33 : len;
    while (j < stop && sl_sd_name_char[p[j]])
        j++;
    Py_ssize_t n = j - *i;
    if (n < 1 || n > 32)
        return 0;
    *i = j;
    return n;
}

/* SD-ELEMENTs from p[*i] == '[' into sd; 1 parsed, 0 fall back, -1 error */
static int sl_structured_data(const unsigned char *p, Py_ssize_t len, Py_ssize_t *i, PyObject *sd)
{
    while (*i < len && p[*i] == '[') {
        Py_ssize_t j = *i + 1, id_start = j, id_len = sl_sd_name(p, len, &j);
        if (id_len == 0 || j >= len || (p[j] != ' ' && p[j] != ']'))
            return 0;
        PyObject *id = PyUnicode_DecodeASCII((const char *)p + id_start, id_len, NULL);
        if (id == NULL)
            return -1;
        PyObject *params = PyDict_GetItemWithError(sd, id);  /* a repeated SD-ID adds to the first */
        if (params == NULL) {
            if (PyErr_Occurred() || (params = PyDict_New()) == NULL) {
                Py_DECREF(id);
                return -1;
            }
            int r = PyDict_SetItem(sd, id, params);
            Py_DECREF(params);  /* sd holds it */
            if (r < 0) {
                Py_DECREF(id);
                return -1;
            }
        }
        Py_DECREF(id);
        for (;;) {
            if (j >= len)
                return 0;
            if (p[j] == ']') {
                j++;
                break;
            }
            if (p[j] != ' ')
                return 0;
            j++;
            Py_ssize_t name_start = j, name_len = sl_sd_name(p, len, &j);
            if (name_len == 0 || len - j < 2 || p[j] != '=' || p[j + 1] != '"')
                return 0;
            j += 2;
            Py_ssize_t value_start = j;
            int escaped = 0;
            while (j < len && p[j] != '"') {
                if (p[j] == '\\') {
                    escaped = 1;
                    j++;  /* the escaped byte, whatever it is, does not end the value */
                }
                j++;
            }
            if (j >= len)
                return 0;
            PyObject *value;
            int r = sl_param_value(p + value_start, j - value_start, escaped, &value);
            if (r <= 0)
                return r;
            j++;  /* the closing quote */
            PyObject *name = PyUnicode_DecodeASCII((const char *)p + name_start, name_len, NULL);
            if (name == NULL) {
                Py_DECREF(value);
                return -1;
            }
            r = sl_add_param(params, name, value);
            Py_DECREF(name);
            Py_DECREF(value);
            if (r < 0)
                return -1;
        }
        *i = j;
    }
    return 1;
}

static int sl_set(PyObject *d, PyObject *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int r = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return r;
}

/* one message: 1 with *out the event, 0 when the reference must decide, -1 error */
static int sl_parse(const unsigned char *p, Py_ssize_t len, PyObject **out)
{
    Py_ssize_t i = 1;
    int pri = 0;
    if (len < 1 || p[0] != '<')
        return 0;
    if (i < len && p[i] == '0') {
        i++;
    } else {
        while (i < len && i < 4 && SL_DIGIT(p[i]))
            pri = pri * 10 + (p[i++] - '0');
        if (i == 1)
            return 0;
    }
    if (!sl_byte(p, len, &i, '>') || pri > 191 || !sl_byte(p, len, &i, '1') || !sl_byte(p, len, &i, ' '))
        return 0;
    Py_ssize_t spans[5][2];
    if (len - i >= 2 && p[i] == '-' && p[i + 1] == ' ') {
        spans[0][0] = i;
        spans[0][1] = i + 1;
        i += 2;
    } else {
        spans[0][0] = i;
        if (!sl_timestamp(p, len, &i))
            return 0;
        spans[0][1] = i;
        if (!sl_byte(p, len, &i, ' '))
            return 0;
    }
    static const Py_ssize_t limits[5] = {0, 255, 48, 128, 32};
    for (int k = 1; k < 5; k++)
        if (!sl_field(p, len, &i, limits[k], &spans[k][0], &spans[k][1]))
            return 0;
    if (i >= len || (p[i] != '-' && p[i] != '['))
        return 0;

    PyObject *d = PyDict_New();
    if (d == NULL)
        return -1;
    if (PyDict_SetItem(d, sl_str_syslog, sl_str_rfc5424) < 0 || sl_set(d, sl_str_facility, PyLong_FromLong(pri >> 3)) < 0 ||
        sl_set(d, sl_str_severity, PyLong_FromLong(pri & 7)) < 0)
        goto error;
    for (int k = 0; k < 5; k++) {
        Py_ssize_t n = spans[k][1] - spans[k][0];
        if (n == 1 && p[spans[k][0]] == '-')
            continue;
        if (sl_set(d, sl_header_keys[k], PyUnicode_DecodeASCII((const char *)p + spans[k][0], n, NULL)) < 0)
            goto error;
    }
    if (p[i] == '-') {
        i++;
    } else {
        PyObject *sd = PyDict_New();
        if (sd == NULL)
            goto error;
        int r = sl_structured_data(p, len, &i, sd);
        if (r <= 0) {
            Py_DECREF(sd);
            if (r < 0)
                goto error;
            Py_DECREF(d);
            return 0;
        }
        if (sl_set(d, sl_str_sd, sd) < 0)
            goto error;
    }
    if (i < len) {
        if (p[i] != ' ') {
            Py_DECREF(d);
            return 0;
        }
        i++;
        if (len - i >= 3 && p[i] == 0xef && p[i + 1] == 0xbb && p[i + 2] == 0xbf)
            i += 3;
        PyObject *msg;
        int r = sl_utf8((const char *)p + i, len - i, &msg);
        if (r <= 0) {
            if (r < 0)
                goto error;
            Py_DECREF(d);
            return 0;
        }
        if (sl_set(d, sl_str_message, msg) < 0)
            goto error;
    }
    *out = d;
    return 1;
error:
    Py_DECREF(d);
    return -1;
}

static PyObject *syslog_events(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "syslog_events(items, at, parse, unparsed)");
        return NULL;
    }
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    if (at < 0) {
        PyErr_SetString(PyExc_ValueError, "syslog_events: at must be >= 0");
        return NULL;
    }
    PyObject *parse = args[2], *unparsed_fn = args[3];
    PyObject *items = PySequence_Fast(args[0], "syslog_events: items must be a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PySequence_Fast_ITEMS(items)[k];
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "syslog_events: each item must be a tuple");
            goto fail;
        }
        if (PyTuple_GET_SIZE(item) < at + 2) {
            PyErr_SetString(PyExc_IndexError, "syslog_events: item has no frame and error at that index");
            goto fail;
        }
        PyObject *frame = PyTuple_GET_ITEM(item, at), *err = PyTuple_GET_ITEM(item, at + 1), *event = NULL;
        if (!PyBytes_Check(frame)) {
            PyErr_SetString(PyExc_TypeError, "syslog_events: a frame must be bytes");
            goto fail;
        }
        if (err != Py_None) {
            event = PyObject_CallFunctionObjArgs(unparsed_fn, frame, err, NULL);
        } else {
            int r = sl_parse((const unsigned char *)PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), &event);
            if (r < 0)
                goto fail;
            if (r == 0)
                event = PyObject_CallOneArg(parse, frame);
        }
        if (event == NULL)
            goto fail;
        PyList_SET_ITEM(out, k, event);
    }
    Py_DECREF(items);
    return out;
fail:
    Py_XDECREF(out);
    Py_DECREF(items);
    return NULL;
}

/*
 * relp_frames(buf, pos, max_data) -> (frames, pos)
 *
 * RELP frames (TXNR SP COMMAND SP DATALEN SP DATA LF) from buf[pos:], as the
 * (txnr, command, data, None) tuples of pipeline.ingest.stream.RelpParser.feed, for as long
 * as they are complete, well-formed and carry DATALEN 1..max_data; returns them and the
 * position of the first byte not taken.  Anything else (an incomplete frame, an empty or
 * over-long one, a malformed header) is left for RelpParser's own loop to decide.
 */
static PyObject *relp_frames(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "relp_frames(buf: bytes, pos, max_data)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), max_data = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || max_data == -1) && PyErr_Occurred())
        return NULL;
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "relp_frames: pos out of range");
        return NULL;
    }
    PyObject *frames = PyList_New(0);
    if (frames == NULL)
        return NULL;
    while (pos < n) {
        Py_ssize_t i = pos;
        long txnr = 0, length = 0;
        int digits = 0;
        while (i < n && digits < 10 && SL_DIGIT(p[i]))
            txnr = txnr * 10 + (p[i++] - '0'), digits++;
        if (digits == 0 || digits > 9 || i >= n || p[i] != ' ')
            break;
        Py_ssize_t cmd = ++i;
        while (i < n && i - cmd < 33 && ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'z'))
            i++;
        Py_ssize_t cmd_len = i - cmd;
        if (cmd_len == 0 || cmd_len > 32 || i >= n || p[i] != ' ')
            break;
        i++;
        digits = 0;
        while (i < n && digits < 10 && SL_DIGIT(p[i]))
            length = length * 10 + (p[i++] - '0'), digits++;
        if (digits == 0 || digits > 9 || i >= n || p[i] != ' ' || length == 0 || length > max_data)
            break;
        Py_ssize_t start = i + 1;
        if (n - start < (Py_ssize_t)length + 1 || p[start + length] != '\n')
            break;
        PyObject *command;
        if (cmd_len == 6 && memcmp(p + cmd, "syslog", 6) == 0) {
            command = sl_relp_syslog;
            Py_INCREF(command);
        } else if ((command = PyUnicode_DecodeASCII((const char *)p + cmd, cmd_len, NULL)) == NULL) {
            goto fail;
        }
        PyObject *t = PyLong_FromLong(txnr), *data = PyBytes_FromStringAndSize((const char *)p + start, length);
        PyObject *frame = t && data ? PyTuple_Pack(4, t, command, data, Py_None) : NULL;
        Py_XDECREF(t);
        Py_XDECREF(data);
        Py_DECREF(command);
        if (frame == NULL)
            goto fail;
        int r = PyList_Append(frames, frame);
        Py_DECREF(frame);
        if (r < 0)
            goto fail;
        pos = start + length + 1;
    }
    PyObject *result = Py_BuildValue("(Nn)", frames, pos);
    return result;
fail:
    Py_DECREF(frames);
    return NULL;
}

/*
 * syslog_frames(buf, pos, max_frame) -> (frames, pos)
 *
 * RFC 6587 frames from buf[pos:] as the (msg, None) pairs of
 * pipeline.ingest.syslog.Framer.feed, for as long as they are complete and within
 * max_frame: octet-counted (LEN SP MSG) when a frame starts with a digit, else ended by LF
 * (a CR before it dropped); LFs and NULs between frames are skipped.  Returns them and the
 * position of the first byte not taken; anything else (an incomplete frame, an over-long
 * one, a bad octet count) is left for Framer's own loop to decide.
 */
static PyObject *syslog_frames(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "syslog_frames(buf: bytes, pos, max_frame)");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), max_frame = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || max_frame == -1) && PyErr_Occurred())
        return NULL;
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "syslog_frames: pos out of range");
        return NULL;
    }
    PyObject *frames = PyList_New(0);
    if (frames == NULL)
        return NULL;
    while (pos < n) {
        Py_ssize_t start, end, next;
        unsigned char c = p[pos];
        if (SL_DIGIT(c)) {
            /* Framer: a space within the next 11 bytes, only digits before it */
            Py_ssize_t i = pos, stop = n - pos > 11 ? pos + 11 : n;
            long long length = 0;
            while (i < stop && SL_DIGIT(p[i]))
                length = length * 10 + (p[i++] - '0');
            if (i >= stop || p[i] != ' ' || length > max_frame)
                break;
            start = i + 1;
            if (n - start < length)
                break;
            end = start + (Py_ssize_t)length;
            next = end;
        } else if (c == '\n' || c == 0) {
            pos++;
            continue;
        } else {
            const unsigned char *lf = memchr(p + pos, '\n', (size_t)(n - pos));
            if (lf == NULL)
                break;
            start = pos;
            end = lf - p;
            next = end + 1;
            if (end > pos && p[end - 1] == '\r')
                end--;
            if (end - start > max_frame)
                break;
        }
        PyObject *msg = PyBytes_FromStringAndSize((const char *)p + start, end - start);
        PyObject *frame = msg ? PyTuple_Pack(2, msg, Py_None) : NULL;
        Py_XDECREF(msg);
        if (frame == NULL)
            goto fail;
        int r = PyList_Append(frames, frame);
        Py_DECREF(frame);
        if (r < 0)
            goto fail;
        pos = next;
    }
    return Py_BuildValue("(Nn)", frames, pos);
fail:
    Py_DECREF(frames);
    return NULL;
}

/* ---------------------------------------------------------------- OTLP log records ---- */
/*
 * otlp_event: one protobuf LogRecord, as the event JSON object that pipeline.ingest.otlp's
 * _event builds from protobuf's own parse of it (docs/FORMAT.md section 3.1), or None.
 *
 * None means "not shown to be simple": the caller then parses the record with protobuf
 * and converts it in Python, whose answer is the reference.  So this only has to be exact
 * on what it accepts, and it accepts only records whose meaning under protobuf's rules
 * has no choice in it: every field known to this version of the schema, with its declared
 * wire type, every singular field and every AnyValue at most once (protobuf lets a later
 * one win or merge), integers that fit their declared type without truncation, valid
 * UTF-8, keys unique within each list, and nesting no deeper than OT_MAX_DEPTH values
 * (far inside protobuf's own limit of 100 messages and the sanitiser's 64 levels).
 * Anything else - unknown fields, string-table references, groups, a malformed or
 * truncated encoding, a repeated key - is declined and judged by the Python path.
 */

#define OT_MAX_DEPTH 16

typedef struct {
    uint32_t field;
    int wt;
    uint64_t v;             /* wire types 0, 1, 5 */
    const unsigned char *s; /* wire type 2: the payload */
    Py_ssize_t n;
} OtField;

static PyObject *ot_keys[13];
enum { OK_TIME, OK_OBSERVED, OK_SEV_NUM, OK_SEV_TEXT, OK_EVENT_NAME, OK_BODY, OK_ATTRS, OK_DROPPED, OK_TRACE,
       OK_SPAN, OK_FLAGS, OK_RESOURCE, OK_SCOPE };
static const char *const ot_key_names[13] = {
    "time", "observed_time", "severity_number", "severity_text", "event_name", "body", "attributes",
    "dropped_attributes_count", "trace_id", "span_id", "flags", "resource", "scope"};
static PyObject *ot_nan, *ot_inf, *ot_ninf, *ot_empty;

static int ot_init(void)
{
    for (int i = 0; i < 13; i++)
        if ((ot_keys[i] = PyUnicode_InternFromString(ot_key_names[i])) == NULL)
            return -1;
    ot_nan = PyUnicode_InternFromString("NaN");
    ot_inf = PyUnicode_InternFromString("Infinity");
    ot_ninf = PyUnicode_InternFromString("-Infinity");
    ot_empty = PyUnicode_FromStringAndSize("", 0);
    return ot_nan && ot_inf && ot_ninf && ot_empty ? 0 : -1;
}

/* a varint of at most 10 bytes whose value fits in 64 bits; 0: decline */
static int ot_varint(const unsigned char **pp, const unsigned char *end, uint64_t *v)
{
    const unsigned char *p = *pp;
    uint64_t r = 0;
    for (int i = 0; i < 10 && p < end; i++) {
        unsigned char b = *p++;
        if (i == 9 && b > 1)
            return 0;
        r |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80) {
            *v = r;
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* the next field of a message; 0: decline (malformed, or a wire type we never accept) */
static int ot_next(const unsigned char **pp, const unsigned char *end, OtField *f)
{
    uint64_t tag;
    if (!ot_varint(pp, end, &tag) || tag > 0xFFFFFFFFu || (tag >> 3) == 0)
        return 0;
    f->field = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    const unsigned char *p = *pp;
    switch (f->wt) {
    case 0:
        if (!ot_varint(&p, end, &f->v))
            return 0;
        break;
    case 1:
        if (end - p < 8)
            return 0;
        f->v = 0;
        for (int i = 7; i >= 0; i--)
            f->v = (f->v << 8) | p[i];
        p += 8;
        break;
    case 5:
        if (end - p < 4)
            return 0;
        f->v = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
        p += 4;
        break;
    case 2: {
        uint64_t n;
        if (!ot_varint(&p, end, &n) || n > (uint64_t)(end - p))
            return 0;
        f->s = p;
        f->n = (Py_ssize_t)n;
        p += n;
        break;
    }
    default:
        return 0;
    }
    *pp = p;
    return 1;
}

/* 1: *out is a new str; 0: not valid UTF-8 (declined); -1: error */
static int ot_str(const unsigned char *s, Py_ssize_t n, PyObject **out)
{
    if (n == 0) {
        *out = Py_NewRef(ot_empty);
        return 1;
    }
    *out = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    if (*out != NULL)
        return 1;
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

static PyObject *ot_hex(const unsigned char *s, Py_ssize_t n)
{
    PyObject *out = PyUnicode_New(2 * n, 127);
    if (out == NULL)
        return NULL;
    char *d = (char *)PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        d[2 * i] = hex_pairs[s[i]][0];
        d[2 * i + 1] = hex_pairs[s[i]][1];
    }
    return out;
}

static PyObject *ot_base64(const unsigned char *s, Py_ssize_t n)
{
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    PyObject *out = PyUnicode_New(4 * ((n + 2) / 3), 127);
    if (out == NULL)
        return NULL;
    char *d = (char *)PyUnicode_1BYTE_DATA(out);
    Py_ssize_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = B64[w >> 18];
        *d++ = B64[(w >> 12) & 63];
        *d++ = B64[(w >> 6) & 63];
        *d++ = B64[w & 63];
    }
    if (n - i == 1) {
        uint32_t w = (uint32_t)s[i] << 16;
        *d++ = B64[w >> 18];
        *d++ = B64[(w >> 12) & 63];
        *d++ = '=';
        *d++ = '=';
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = B64[w >> 18];
        *d++ = B64[(w >> 12) & 63];
        *d++ = B64[(w >> 6) & 63];
        *d++ = '=';
    }
    return out;
}

/* Unix nanoseconds as RFC 3339 UTC with nine fractional digits (otlp._Clock.text); the
 * civil date by H. Hinnant's days_from_civil inverse (proleptic Gregorian, as gmtime) */
static PyObject *ot_time(uint64_t ns)
{
    uint64_t secs = ns / 1000000000u;
    unsigned frac = (unsigned)(ns % 1000000000u);
    int64_t z = (int64_t)(secs / 86400) + 719468;
    unsigned sod = (unsigned)(secs % 86400);
    int64_t era = z / 146097; /* z >= 0 */
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned day = doy - (153 * mp + 2) / 5 + 1;
    unsigned month = mp < 10 ? mp + 3 : mp - 9;
    unsigned year = (unsigned)((int64_t)yoe + era * 400 + (month <= 2)); /* 1970..2554: four digits */
    PyObject *out = PyUnicode_New(30, 127);
    if (out == NULL)
        return NULL;
    char *d = (char *)PyUnicode_1BYTE_DATA(out); /* YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ */
    const unsigned parts[5] = {month, day, sod / 3600, sod / 60 % 60, sod % 60};
    d[0] = (char)('0' + year / 1000), d[1] = (char)('0' + year / 100 % 10);
    d[2] = (char)('0' + year / 10 % 10), d[3] = (char)('0' + year % 10);
    for (int i = 0; i < 5; i++) {
        d[4 + 3 * i] = "--T::"[i];
        d[5 + 3 * i] = (char)('0' + parts[i] / 10);
        d[6 + 3 * i] = (char)('0' + parts[i] % 10);
    }
    d[19] = '.';
    for (int i = 28; i >= 20; i--, frac /= 10)
        d[i] = (char)('0' + frac % 10);
    d[29] = 'Z';
    return out;
}

static int ot_any(const unsigned char *p, const unsigned char *end, int depth, PyObject **out);

/* one KeyValue into d; 1 ok, 0 declined, -1 error */
static int ot_kv_into(PyObject *d, const unsigned char *p, const unsigned char *end, int depth)
{
    OtField f;
    const unsigned char *key_s = NULL, *val_s = NULL, *val_e = NULL;
    Py_ssize_t key_n = 0;
    int have_key = 0, have_val = 0;
    while (p < end) {
        if (!ot_next(&p, end, &f) || f.wt != 2)
            return 0;
        if (f.field == 1 && !have_key) {
            have_key = 1;
            key_s = f.s;
            key_n = f.n;
        } else if (f.field == 2 && !have_val) {
            have_val = 1;
            val_s = f.s;
            val_e = f.s + f.n;
        } else {
            return 0; /* key_strindex, unknown, or repeated */
        }
    }
    PyObject *key, *val;
    int r = ot_str(key_s, key_n, &key);
    if (r <= 0)
        return r;
    if (have_val) {
        r = ot_any(val_s, val_e, depth, &val);
        if (r <= 0) {
            Py_DECREF(key);
            return r;
        }
    } else {
        val = Py_NewRef(Py_None);
    }
    Py_ssize_t before = PyDict_GET_SIZE(d);
    r = PyDict_SetItem(d, key, val);
    Py_DECREF(key);
    Py_DECREF(val);
    if (r < 0)
        return -1;
    return PyDict_GET_SIZE(d) > before; /* a repeated key: the Python path refuses it */
}

/* the KeyValues of a KeyValueList, as a new dict */
static int ot_kvlist(const unsigned char *p, const unsigned char *end, int depth, PyObject **out)
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return -1;
    OtField f;
    while (p < end) {
        int r = ot_next(&p, end, &f) && f.field == 1 && f.wt == 2 ? ot_kv_into(d, f.s, f.s + f.n, depth) : 0;
        if (r <= 0) {
            Py_DECREF(d);
            return r;
        }
    }
    *out = d;
    return 1;
}

static int ot_array(const unsigned char *p, const unsigned char *end, int depth, PyObject **out)
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return -1;
    OtField f;
    while (p < end) {
        PyObject *item;
        int r = ot_next(&p, end, &f) && f.field == 1 && f.wt == 2 ? ot_any(f.s, f.s + f.n, depth, &item) : 0;
        if (r > 0) {
            r = PyList_Append(list, item) < 0 ? -1 : 1;
            Py_DECREF(item);
        }
        if (r <= 0) {
            Py_DECREF(list);
            return r;
        }
    }
    *out = list;
    return 1;
}

/* an AnyValue at nesting level depth (1: a body or an attribute's value) */
static int ot_any(const unsigned char *p, const unsigned char *end, int depth, PyObject **out)
{
    OtField f;
    if (depth > OT_MAX_DEPTH)
        return 0;
    if (p == end) {
        *out = Py_NewRef(Py_None); /* no value set */
        return 1;
    }
    if (!ot_next(&p, end, &f) || p != end)
        return 0; /* malformed, or more than one field: protobuf's oneof rules decide */
    switch (f.field) {
    case 1:
        return f.wt == 2 ? ot_str(f.s, f.n, out) : 0;
    case 2:
        if (f.wt != 0 || f.v > 1)
            return 0;
        *out = PyBool_FromLong((long)f.v);
        return 1;
    case 3:
        if (f.wt != 0)
            return 0;
        *out = PyLong_FromLongLong((long long)(int64_t)f.v);
        return *out ? 1 : -1;
    case 4: {
        if (f.wt != 1)
            return 0;
        double d;
        memcpy(&d, &f.v, sizeof d);
        if (isnan(d))
            *out = Py_NewRef(ot_nan);
        else if (isinf(d))
            *out = Py_NewRef(d > 0 ? ot_inf : ot_ninf);
        else
            *out = PyFloat_FromDouble(d);
        return *out ? 1 : -1;
    }
    case 5:
        return f.wt == 2 ? ot_array(f.s, f.s + f.n, depth + 1, out) : 0;
    case 6:
        return f.wt == 2 ? ot_kvlist(f.s, f.s + f.n, depth + 1, out) : 0;
    case 7:
        if (f.wt != 2)
            return 0;
        *out = ot_base64(f.s, f.n);
        return *out ? 1 : -1;
    default:
        return 0; /* string_value_strindex, or unknown */
    }
}

/* set d[key] = value (a new reference, consumed); -1 on error */
static int ot_set(PyObject *d, int key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int r = PyDict_SetItem(d, ot_keys[key], value);
    Py_DECREF(value);
    return r;
}

/* otlp_event(body, start, end, resource, scope) -> dict | None */
static PyObject *otlp_event(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "otlp_event(body: bytes, start, end, resource, scope)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), stop = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (start < 0 || stop < start || stop > PyBytes_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "otlp_event: span outside the body");
        return NULL;
    }
    const unsigned char *base = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *p = base + start, *end = base + stop;

    /* pass 1: the singular fields (each at most once, with its declared wire type) */
    OtField f, one[13];
    uint32_t seen = 0;
    Py_ssize_t attributes = 0;
    while (p < end) {
        if (!ot_next(&p, end, &f))
            Py_RETURN_NONE;
        int want, slot;
        switch (f.field) {
        case 1: want = 1, slot = OK_TIME; break;
        case 11: want = 1, slot = OK_OBSERVED; break;
        case 2: want = 0, slot = OK_SEV_NUM; break;
        case 3: want = 2, slot = OK_SEV_TEXT; break;
        case 12: want = 2, slot = OK_EVENT_NAME; break;
        case 5: want = 2, slot = OK_BODY; break;
        case 6: want = 2, slot = OK_ATTRS; break;
        case 7: want = 0, slot = OK_DROPPED; break;
        case 9: want = 2, slot = OK_TRACE; break;
        case 10: want = 2, slot = OK_SPAN; break;
        case 8: want = 5, slot = OK_FLAGS; break;
        default: Py_RETURN_NONE;
        }
        if (f.wt != want)
            Py_RETURN_NONE;
        if (slot == OK_ATTRS) {
            attributes++;
            continue;
        }
        if (seen & (1u << slot))
            Py_RETURN_NONE;
        seen |= 1u << slot;
        one[slot] = f;
    }
    /* int32 (an open enum: any value, sign-extended to 64 bits on the wire) and uint32 */
    if (seen & (1u << OK_SEV_NUM) && one[OK_SEV_NUM].v > 0x7FFFFFFFu &&
        one[OK_SEV_NUM].v < 0xFFFFFFFF80000000u)
        Py_RETURN_NONE;
    if (seen & (1u << OK_DROPPED) && one[OK_DROPPED].v > 0xFFFFFFFFu)
        Py_RETURN_NONE;

    /* the event, keys in the order of docs/FORMAT.md section 3.1; absent when default */
    PyObject *ev = PyDict_New(), *v;
    if (ev == NULL)
        return NULL;
    int r;
#define OT_HAS(slot) (seen & (1u << (slot)))
#define OT_FAIL_IF(cond) do { if (cond) goto fail; } while (0)
    if (OT_HAS(OK_TIME) && one[OK_TIME].v)
        OT_FAIL_IF(ot_set(ev, OK_TIME, ot_time(one[OK_TIME].v)) < 0);
    if (OT_HAS(OK_OBSERVED) && one[OK_OBSERVED].v)
        OT_FAIL_IF(ot_set(ev, OK_OBSERVED, ot_time(one[OK_OBSERVED].v)) < 0);
    if (OT_HAS(OK_SEV_NUM) && one[OK_SEV_NUM].v)
        OT_FAIL_IF(ot_set(ev, OK_SEV_NUM, PyLong_FromLong((long)(int32_t)(uint32_t)one[OK_SEV_NUM].v)) < 0);
    for (int slot = OK_SEV_TEXT; slot <= OK_EVENT_NAME; slot++) { /* severity_text, event_name */
        if (!OT_HAS(slot) || one[slot].n == 0)
            continue;
        r = ot_str(one[slot].s, one[slot].n, &v);
        if (r == 0)
            goto decline;
        OT_FAIL_IF(r < 0 || ot_set(ev, slot, v) < 0);
    }
    if (OT_HAS(OK_BODY)) {
        r = ot_any(one[OK_BODY].s, one[OK_BODY].s + one[OK_BODY].n, 1, &v);
        if (r == 0)
            goto decline;
        OT_FAIL_IF(r < 0 || ot_set(ev, OK_BODY, v) < 0);
    }
    if (attributes) {
        PyObject *attrs = PyDict_New();
        OT_FAIL_IF(attrs == NULL);
        p = base + start;
        r = 1;
        while (p < end && r > 0) {
            ot_next(&p, end, &f); /* shown well-formed by pass 1 */
            if (f.field == 6)
                r = ot_kv_into(attrs, f.s, f.s + f.n, 1);
        }
        if (r <= 0) {
            Py_DECREF(attrs);
            if (r == 0)
                goto decline;
            goto fail;
        }
        OT_FAIL_IF(ot_set(ev, OK_ATTRS, attrs) < 0);
    }
    if (OT_HAS(OK_DROPPED) && one[OK_DROPPED].v)
        OT_FAIL_IF(ot_set(ev, OK_DROPPED, PyLong_FromUnsignedLongLong(one[OK_DROPPED].v)) < 0);
    if (OT_HAS(OK_TRACE) && one[OK_TRACE].n)
        OT_FAIL_IF(ot_set(ev, OK_TRACE, ot_hex(one[OK_TRACE].s, one[OK_TRACE].n)) < 0);
    if (OT_HAS(OK_SPAN) && one[OK_SPAN].n)
        OT_FAIL_IF(ot_set(ev, OK_SPAN, ot_hex(one[OK_SPAN].s, one[OK_SPAN].n)) < 0);
    if (OT_HAS(OK_FLAGS) && one[OK_FLAGS].v)
        OT_FAIL_IF(ot_set(ev, OK_FLAGS, PyLong_FromUnsignedLongLong(one[OK_FLAGS].v)) < 0);
    if (args[3] != Py_None)
        OT_FAIL_IF(PyDict_SetItem(ev, ot_keys[OK_RESOURCE], args[3]) < 0);
    if (args[4] != Py_None)
        OT_FAIL_IF(PyDict_SetItem(ev, ot_keys[OK_SCOPE], args[4]) < 0);
#undef OT_HAS
#undef OT_FAIL_IF
    return ev;
decline:
    Py_DECREF(ev);
    Py_RETURN_NONE;
fail:
    Py_DECREF(ev);
    return NULL;
}

/* wire_fields(buf, pos, end, max_fields) -> ([(field, wire type, start, stop), ...], pos) | None
 *
 * pipeline.ingest.otlp._Wire.fields for up to max_fields fields from pos, and where the
 * next field starts; None at the first field it leaves to the Python walk, which then
 * goes on from the position returned before (a group, a field number 0, a varint of 10
 * bytes or more, a wire type 3, 4, 6 or 7, or a field that runs past end: the walk
 * skips, or refuses with its own message). */
static int wf_varint(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < 9 && *pos < end; i++) {
        unsigned char c = b[(*pos)++];
        r |= (uint64_t)(c & 0x7F) << (7 * i);
        if (c < 0x80) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

static PyObject *wire_fields(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "wire_fields(buf: bytes, pos, end, max_fields)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_fields = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (pos < 0 || end < pos || end > PyBytes_GET_SIZE(args[0]) || max_fields < 1) {
        PyErr_SetString(PyExc_ValueError, "wire_fields: span outside the buffer");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    Py_ssize_t n = 0;
    while (pos < end && n < max_fields) {
        Py_ssize_t p = pos, start, stop;
        uint64_t key, v;
        if (!wf_varint(b, &p, end, &key) || (key >> 3) == 0)
            goto decline;
        int wt = (int)(key & 7);
        if (wt == 2) {
            if (!wf_varint(b, &p, end, &v) || v > (uint64_t)(end - p))
                goto decline;
            start = p;
            stop = p + (Py_ssize_t)v;
        } else if (wt == 0) {
            start = p;
            if (!wf_varint(b, &p, end, &v))
                goto decline;
            stop = p;
        } else if (wt == 1 || wt == 5) {
            start = p;
            stop = p + (wt == 1 ? 8 : 4);
            if (stop > end)
                goto decline;
        } else {
            goto decline;
        }
        PyObject *t = PyTuple_New(4);
        if (t != NULL) {
            PyTuple_SET_ITEM(t, 0, PyLong_FromUnsignedLongLong(key >> 3));
            PyTuple_SET_ITEM(t, 1, PyLong_FromLong(wt));
            PyTuple_SET_ITEM(t, 2, PyLong_FromSsize_t(start));
            PyTuple_SET_ITEM(t, 3, PyLong_FromSsize_t(stop));
        }
        int bad = t == NULL || !PyTuple_GET_ITEM(t, 0) || !PyTuple_GET_ITEM(t, 1) || !PyTuple_GET_ITEM(t, 2) ||
                  !PyTuple_GET_ITEM(t, 3) || PyList_Append(list, t) < 0;
        Py_XDECREF(t);
        if (bad) {
            Py_DECREF(list);
            return NULL;
        }
        pos = stop;
        n++;
    }
    return Py_BuildValue("(Nn)", list, pos);
decline:
    if (n > 0) /* the fields before it, and the Python walk takes over from pos */
        return Py_BuildValue("(Nn)", list, pos);
    Py_DECREF(list);
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------------- pgoutput ---- */

/* pg_insert_row(msg, names, kinds) -> dict | None: the new tuple of a pgoutput (protocol 1)
 * INSERT message rendered as pipeline.pg.decode.row_json does, in one pass.  ``names`` is
 * the relation's column names (a tuple of str), ``kinds`` one byte per column: 0 text (the
 * value as it is), 1 an integer type (int(text)), 2 bool (text == "t"), 3 json/jsonb (the
 * text; the caller renders it with render_value).  None whenever Python must decide: a
 * column count that does not match, a value that is not text or NULL, an integer or a
 * boolean not spelled as PostgreSQL's output function spells it, a truncated message.
 * Message layout: 'I', Int32 relation OID, 'N', Int16 column count, then per column 'n'
 * (NULL), 'u' (unchanged TOAST) or 't' Int32 length and that many bytes. */
static PyObject *pg_insert_row(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer msg;
    if (nargs != 3 || !PyTuple_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "pg_insert_row(msg, names: tuple, kinds: bytes)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &msg, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *names = args[1];
    const unsigned char *kinds = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    Py_ssize_t ncols = PyTuple_GET_SIZE(names);
    const unsigned char *p = msg.buf;
    Py_ssize_t len = msg.len, pos = 8;
    PyObject *row = NULL;
    if (PyBytes_GET_SIZE(args[2]) != ncols || len < 8 || p[0] != 'I' || p[5] != 'N' ||
        (((Py_ssize_t)p[6] << 8) | p[7]) != ncols)
        goto decline;
    row = PyDict_New();
    if (row == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyObject *value;
        if (pos >= len)
            goto decline;
        unsigned char tag = p[pos++];
        if (tag == 'n') {
            value = Py_NewRef(Py_None);
        } else if (tag == 't') {
            if (len - pos < 4)
                goto decline;
            uint32_t size = ((uint32_t)p[pos] << 24) | ((uint32_t)p[pos + 1] << 16) | ((uint32_t)p[pos + 2] << 8) |
                            (uint32_t)p[pos + 3];
            pos += 4;
            if ((Py_ssize_t)size > len - pos)
                goto decline;
            const char *text = (const char *)p + pos;
            pos += (Py_ssize_t)size;
            if (kinds[i] == 1) {
                /* PostgreSQL's integer output: an optional '-' and 1 to 20 digits */
                char digits[24];
                Py_ssize_t start = (size > 0 && text[0] == '-') ? 1 : 0;
                if ((Py_ssize_t)size <= start || (Py_ssize_t)size - start > 20)
                    goto decline;
                for (Py_ssize_t k = start; k < (Py_ssize_t)size; k++)
                    if (text[k] < '0' || text[k] > '9')
                        goto decline;
                memcpy(digits, text, size);
                digits[size] = '\0';
                value = PyLong_FromString(digits, NULL, 10);
            } else if (kinds[i] == 2) {
                if (size != 1 || (text[0] != 't' && text[0] != 'f'))
                    goto decline;
                value = Py_NewRef(text[0] == 't' ? Py_True : Py_False);
            } else {
                value = PyUnicode_DecodeUTF8(text, (Py_ssize_t)size, "replace");
            }
        } else {
            goto decline; /* 'u' (only an UPDATE leaves a value out) or binary: Python decides */
        }
        if (value == NULL)
            goto fail;
        int rc = PyDict_SetItem(row, PyTuple_GET_ITEM(names, i), value);
        Py_DECREF(value);
        if (rc < 0)
            goto fail;
    }
    if (pos != len)
        goto decline;
    PyBuffer_Release(&msg);
    return row;
decline:
    Py_XDECREF(row);
    PyBuffer_Release(&msg);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(row);
    PyBuffer_Release(&msg);
    return NULL;
}

/* -------------------------------------------------------------------------- module ---- */

static PyMethodDef module_methods[] = {
    {"append_record", (PyCFunction)(void (*)(void))append_record, METH_FASTCALL,
     "Build, hash and queue one record line (see pipeline.record.encode_record)."},
    {"hash_lines", (PyCFunction)(void (*)(void))hash_lines, METH_FASTCALL,
     "Leaf-hash record lines into compact ranges, without the GIL."},
    {"append_collect", (PyCFunction)(void (*)(void))append_collect, METH_FASTCALL,
     "Append leaf hashes to a compact range, returning the tile-level nodes completed."},
    {"append_records", (PyCFunction)(void (*)(void))append_records, METH_FASTCALL,
     "append_record for a list of prepared events (one timestamp), building receipts."},
    {"fsync", (PyCFunction)(void (*)(void))fsync_fd, METH_FASTCALL,
     "os.fsync (or fdatasync) without the GIL."},
    {"write_lines", (PyCFunction)(void (*)(void))write_lines, METH_FASTCALL,
     "Write byte strings in order with writev, letting go of the GIL once."},
    {"utc_now", (PyCFunction)utc_now, METH_NOARGS, "The record timestamp for now, as bytes."},
    {"screen", (PyCFunction)(void (*)(void))screen, METH_FASTCALL, "Screen serialised event bytes for the sanitiser."},
    {"card_in", (PyCFunction)py_card_in, METH_O, "Whether a Luhn-valid card-number shape occurs (sanitise._card_in)."},
    {"prepare_fast", (PyCFunction)(void (*)(void))prepare_fast, METH_FASTCALL,
     "The sanitiser's common case in one call, or None."},
    {"prepare_many", (PyCFunction)(void (*)(void))prepare_many, METH_FASTCALL,
     "prepare_fast over events, or over parsed NDJSON lines; None where Python must decide."},
    {"scan_lines", (PyCFunction)(void (*)(void))scan_lines, METH_FASTCALL,
     "Verifier fast path over consecutive event/heartbeat lines."},
    {"profile_ok", (PyCFunction)(void (*)(void))profile_ok_py, METH_FASTCALL,
     "Whether parsed JSON bytes are shown to be within the log's JSON profile."},
    {"profile_loads", (PyCFunction)(void (*)(void))profile_loads, METH_FASTCALL,
     "loads(raw), or ValueError when the text is not shown to be within the JSON profile."},
    /* syslog (RFC 5424) */
    {"syslog_events", (PyCFunction)(void (*)(void))syslog_events, METH_FASTCALL,
     "The events of a batch of syslog frames; the Python reference decides the unusual ones."},
    {"relp_frames", (PyCFunction)(void (*)(void))relp_frames, METH_FASTCALL,
     "Complete, well-formed RELP frames from a buffer; RelpParser decides the rest."},
    {"syslog_frames", (PyCFunction)(void (*)(void))syslog_frames, METH_FASTCALL,
     "Complete RFC 6587 frames within max_frame from a buffer; Framer decides the rest."},
    {"wire_fields", (PyCFunction)(void (*)(void))wire_fields, METH_FASTCALL,
     "Protobuf fields of a span (pipeline.ingest.otlp._Wire.fields), or None where Python must walk."},
    {"otlp_event", (PyCFunction)(void (*)(void))otlp_event, METH_FASTCALL,
     "One protobuf LogRecord as its event object (pipeline.ingest.otlp._event), or None."},
    /* PostgreSQL source */
    {"pg_insert_row", (PyCFunction)(void (*)(void))pg_insert_row, METH_FASTCALL,
     "The row of a pgoutput INSERT message (pipeline.pg.decode.row_json), or None where Python must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "pipeline._native", "C accelerator for the hot paths (optional).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    screen_init();
    json_init();
    hex_init();
    ratchet_blocks_init();
    b64_init();
    if (syslog_init() < 0)
        return NULL;
    if (ot_init() < 0)
        return NULL;
    if (PyType_Ready(&CompactRangeType) < 0 || PyType_Ready(&RatchetType) < 0)
        return NULL;
    if (aead_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CompactRangeType);
    Py_INCREF(&RatchetType);
    if (PyModule_AddObject(m, "CompactRange", (PyObject *)&CompactRangeType) < 0 ||
        PyModule_AddObject(m, "Ratchet", (PyObject *)&RatchetType) < 0 ||
        PyModule_AddIntConstant(m, "SCREEN_NULL", SCREEN_NULL) < 0 ||
        PyModule_AddIntConstant(m, "SCREEN_HINT", SCREEN_HINT) < 0 ||
        PyModule_AddIntConstant(m, "SCREEN_DIGITS", SCREEN_DIGITS) < 0 ||
        PyModule_AddIntConstant(m, "SCREEN_FLAT", SCREEN_FLAT) < 0 ||
        PyModule_AddIntConstant(m, "SCREEN_SHIFT", SCREEN_SHIFT) < 0) {
        Py_DECREF(&CompactRangeType);
        Py_DECREF(&RatchetType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
