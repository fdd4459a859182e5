/*
 * golden_check.c - replays golden vectors of the numpy reference through the native sampler.
 *
 * Usage: golden_check FILE. FILE comes from make_golden.py (its docstring has the format). Each
 * case runs through ie_sample on every instruction set this build and CPU offer; the status, the
 * token id and every byte of the logits left behind must equal the reference's. Prints one line
 * per instruction set and exits 0 when all cases match, 1 on a mismatch, 2 on a bad file.
 * Built with the same flags as the Python module (CMakeLists.txt, IMAGINE_EDGE_GOLDEN=ON), so
 * that `make check-arm64` proves the module's arithmetic on linux-aarch64 under qemu-user.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ie_sampling.h"

typedef struct reader {
    const unsigned char *p, *end;
    int bad;
} reader;

/* Reads n bytes (the file is little-endian, as are x86-64 and aarch64 Linux). */
static void take(reader *r, void *out, size_t n) {
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p, n);
    r->p += n;
}

static int64_t take_i64(reader *r) {
    int64_t v;
    take(r, &v, sizeof v);
    return v;
}

static int32_t take_i32(reader *r) {
    int32_t v;
    take(r, &v, sizeof v);
    return v;
}

static double take_f64(reader *r) {
    double v;
    take(r, &v, sizeof v);
    return v;
}

/* A pointer to n items of size bytes inside the file (copied out: the mapping is unaligned). */
static void *take_array(reader *r, int64_t n, size_t size) {
    if (n < 0 || n > IE_MAX_VOCAB) {
        r->bad = 1;
        return NULL;
    }
    void *out = malloc((size_t)n * size + 1);
    if (out == NULL) {
        r->bad = 1;
        return NULL;
    }
    take(r, out, (size_t)n * size);
    return out;
}

typedef struct golden_case {
    int64_t vocab, n_mask;
    ie_params params;
    ie_history history;
    int32_t *rep, *gen, *counts, *mask;
    double uniform;
    float *logits_in, *logits_out;
    int32_t status, token;
} golden_case;

static void free_case(golden_case *c) {
    free(c->rep);
    free(c->gen);
    free(c->counts);
    free(c->mask);
    free(c->logits_in);
    free(c->logits_out);
}

static int read_case(reader *r, golden_case *c) {
    memset(c, 0, sizeof *c);
    c->vocab = take_i64(r);
    c->params.temperature = take_f64(r);
    c->params.top_p = take_f64(r);
    c->params.repetition_penalty = take_f64(r);
    c->params.presence_penalty = take_f64(r);
    c->params.frequency_penalty = take_f64(r);
    c->params.top_k = take_i64(r);
    c->params.greedy = take_i32(r);
    c->params.mask_active = take_i32(r);
    const int64_t n_rep = take_i64(r);
    c->rep = take_array(r, n_rep, sizeof(int32_t));
    const int64_t n_gen = take_i64(r);
    c->gen = take_array(r, n_gen, sizeof(int32_t));
    c->counts = take_array(r, n_gen, sizeof(int32_t));
    c->n_mask = take_i64(r);
    c->mask = take_array(r, c->n_mask, sizeof(int32_t));
    c->uniform = take_f64(r);
    c->logits_in = take_array(r, c->vocab, sizeof(float));
    c->status = take_i32(r);
    c->token = take_i32(r);
    if (!r->bad && c->status == IE_OK) c->logits_out = take_array(r, c->vocab, sizeof(float));
    c->history = (ie_history){c->rep, n_rep, c->gen, c->counts, n_gen};
    return r->bad ? -1 : 0;
}

/* Runs one case; 0 when status, token and logits all equal the reference's. */
static int check_case(const golden_case *c, float *row, void *workspace, size_t workspace_bytes,
                      long index, const char *isa) {
    memcpy(row, c->logits_in, (size_t)c->vocab * sizeof(float));
    int32_t token = -1;
    const ie_status status = ie_sample(row, c->vocab, &c->params, &c->history, c->mask,
                                       c->n_mask, c->uniform, workspace, workspace_bytes, &token);
    if ((int32_t)status != c->status) {
        printf("%s case %ld (vocab %lld): status %d, reference %d\n", isa, index,
               (long long)c->vocab, (int)status, (int)c->status);
        return 1;
    }
    if (status != IE_OK) return 0;
    if (token != c->token) {
        printf("%s case %ld (vocab %lld): token %d, reference %d\n", isa, index,
               (long long)c->vocab, (int)token, (int)c->token);
        return 1;
    }
    if (memcmp(row, c->logits_out, (size_t)c->vocab * sizeof(float)) != 0) {
        for (int64_t i = 0; i < c->vocab; i++) {
            if (memcmp(&row[i], &c->logits_out[i], sizeof(float)) != 0) {
                printf("%s case %ld (vocab %lld): logit %lld is %a, reference %a\n", isa, index,
                       (long long)c->vocab, (long long)i, row[i], c->logits_out[i]);
                break;
            }
        }
        return 1;
    }
    return 0;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    unsigned char *data = NULL;
    size_t used = 0, cap = 0, got;
    do {
        if (used == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            unsigned char *grown = realloc(data, cap);
            if (grown == NULL) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = grown;
        }
        got = fread(data + used, 1, cap - used, f);
        used += got;
    } while (got > 0);
    fclose(f);
    *size = used;
    return data;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s GOLDEN_FILE\n", argv[0]);
        return 2;
    }
    size_t size = 0;
    unsigned char *data = read_file(argv[1], &size);
    if (data == NULL || size < 12 || memcmp(data, "IEGOLD01", 8) != 0) {
        fprintf(stderr, "%s: not a golden-vector file\n", argv[1]);
        free(data);
        return 2;
    }
    uint32_t n_cases;
    memcpy(&n_cases, data + 8, sizeof n_cases);
    golden_case *cases = calloc(n_cases ? n_cases : 1, sizeof *cases);
    reader r = {data + 12, data + size, 0};
    int64_t max_vocab = 1;
    long read = 0;
    for (; cases != NULL && read < (long)n_cases; read++) {
        if (read_case(&r, &cases[read]) != 0) break;
        if (cases[read].vocab > max_vocab) max_vocab = cases[read].vocab;
    }
    const int bad_file = cases == NULL || read != (long)n_cases || r.p != r.end;
    if (bad_file) fprintf(stderr, "%s: truncated or malformed at case %ld\n", argv[1], read);
    int failed = bad_file;
    const size_t workspace_bytes = ie_workspace_bytes(max_vocab);
    void *workspace = malloc(workspace_bytes);
    float *row = malloc((size_t)max_vocab * sizeof(float));
    int isas_run = 0;
    static const char *const isas[] = {"avx2", "sse2", "neon", "generic"};
    for (size_t k = 0; !failed && workspace && row && k < sizeof isas / sizeof *isas; k++) {
        if (ie_select_isa(isas[k]) != 0) continue;
        isas_run++;
        long mismatches = 0;
        for (long i = 0; i < (long)n_cases; i++) {
            mismatches += check_case(&cases[i], row, workspace, workspace_bytes, i, isas[k]);
        }
        printf("%s: %ld of %u golden cases bit-equal to the numpy reference\n", isas[k],
               (long)n_cases - mismatches, n_cases);
        failed |= mismatches != 0;
    }
    if (!failed && isas_run == 0) {
        fprintf(stderr, "no instruction set of this build runs here\n");
        failed = 1;
    }
    for (long i = 0; cases != NULL && i < (long)n_cases; i++) free_case(&cases[i]);
    free(cases);
    free(workspace);
    free(row);
    free(data);
    return bad_file ? 2 : failed ? 1 : 0;
}
