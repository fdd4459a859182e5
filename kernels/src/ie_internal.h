/*
 * ie_internal.h - helpers shared by the sampling translation units (not a public API).
 *
 * SIMD is written with GCC/Clang vector extensions rather than intrinsics: the same source
 * compiles to SSE2/AVX on x86-64 and NEON on ARM64, and every lane operation is a plain IEEE
 * float32 operation, so results equal the scalar numpy reference bit for bit. The build must keep
 * -ffp-contract=off (no fused multiply-add) and must not use -ffast-math.
 */
#ifndef IE_INTERNAL_H
#define IE_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ie_sampling.h"

#if !defined(__GNUC__)
#error "the native sampler needs GCC or Clang vector extensions"
#endif

#define IE_LANES 8

typedef float ie_vf __attribute__((vector_size(32)));
typedef int32_t ie_vi __attribute__((vector_size(32)));
typedef int64_t ie_vl __attribute__((vector_size(64)));
typedef uint64_t ie_vq __attribute__((vector_size(32)));

/* A sampling candidate: its scaled logit, token id and fixed-point weight. */
typedef struct ie_cand {
    float x;
    int32_t id;
    int32_t w;
} ie_cand;

static inline ie_vf ie_loadf(const float *p) {
    ie_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void ie_storef(float *p, ie_vf v) { memcpy(p, &v, sizeof v); }

static inline ie_vi ie_loadi(const int32_t *p) {
    ie_vi v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void ie_storei(int32_t *p, ie_vi v) { memcpy(p, &v, sizeof v); }

static inline ie_vf ie_splatf(float x) { return (ie_vf){x, x, x, x, x, x, x, x}; }

static inline ie_vi ie_splati(int32_t x) { return (ie_vi){x, x, x, x, x, x, x, x}; }

/* Lane-wise mask ? a : b, where mask lanes are all ones or all zeros. */
static inline ie_vf ie_selectf(ie_vi mask, ie_vf a, ie_vf b) {
    return (ie_vf)((mask & (ie_vi)a) | (~mask & (ie_vi)b));
}

static inline int ie_any(ie_vi mask) {
    ie_vq q = (ie_vq)mask;
    return (q[0] | q[1] | q[2] | q[3]) != 0;
}

/* Lanes holding NaN or +inf, which make a row unsampleable. */
static inline ie_vi ie_nonfinite(ie_vf x) { return (x != x) | (x == INFINITY); }

/*
 * exp(d) for d <= 0: Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial),
 * clamped at d = -87 so that 2**n stays a normal float. Mirrors exp32() in _reference.py
 * operation for operation; the constants are exact float32 hex literals.
 */
static inline ie_vf ie_exp_nonpos(ie_vf d) {
    const ie_vf lo = ie_splatf(-0x1.5cp+6f);
    d = ie_selectf(d < lo, lo, d);
    ie_vf n = (d * 0x1.715476p+0f + 0x1.8p+23f) - 0x1.8p+23f;
    ie_vf r = d - n * 0x1.63p-1f;
    r = r - n * -0x1.bd0106p-13f;
    ie_vf z = r * r;
    ie_vf p = r * 0x1.a0d2cep-13f + 0x1.6e879cp-10f;
    p = p * r + 0x1.11121p-7f;
    p = p * r + 0x1.555382p-5f;
    p = p * r + 0x1.555554p-3f;
    p = p * r + 0.5f;
    p = p * z + r;
    p = p + 1.0f;
    ie_vi scale = (__builtin_convertvector(n, ie_vi) + 127) << 23;
    return p * (ie_vf)scale;
}

/* Fixed-point weights trunc(exp(x - max) * 2**30) of 8 scaled logits. */
static inline ie_vi ie_weights8(ie_vf x, float x_max) {
    ie_vf e = ie_exp_nonpos(x - x_max);
    return __builtin_convertvector(e * 0x1p30f, ie_vi);
}

static inline int64_t ie_sum_lanes(ie_vl v) {
    int64_t s = 0;
    for (int j = 0; j < IE_LANES; j++) s += v[j];
    return s;
}

/* ie_select.c: order candidates. */
void ie_nth_by_logit(ie_cand *c, int64_t n, int64_t k); /* first k = top k by (x desc, id asc) */
void ie_sort_by_weight(ie_cand *c, int64_t n);          /* (w desc, id asc) */
void ie_sort_by_id(ie_cand *c, int64_t n);              /* id asc */

/* ie_weights.c: weights, top-p and the draw, over candidates or over the whole row. */
ie_status ie_sample_candidates(float *logits, ie_cand *c, int64_t n, double top_p, double uniform,
                               int32_t *token);
ie_status ie_sample_row(float *logits, int64_t vocab, float x_max, double top_p, double uniform,
                        int32_t *w, ie_cand *scratch, int32_t *token);

#endif /* IE_INTERNAL_H */
