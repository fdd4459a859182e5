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

#if !defined(__GNUC__) && !defined(__clang__) /* clang-cl defines only __clang__ */
#error "the native sampler needs GCC or Clang vector extensions"
#endif

#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* Lanes per vector: the target's native width (16 bytes: SSE2, NEON; 32 bytes with AVX2). Wider
 * generic vectors are lowered piecewise by GCC when the ISA lacks them, which is far slower. The
 * lane count never changes results: lanes are independent and every sum is an exact integer. */
#if defined(__AVX2__)
#define IE_LANES 8
#else
#define IE_LANES 4
#endif
#define IE_PAD 8 /* rows are padded to a multiple of this (>= IE_LANES) in the workspace */

/* ie_sampling.c and ie_weights.c are compiled once per instruction set (see CMakeLists.txt);
 * their external names carry the variant, and ie_dispatch.c picks one at run time. */
#if defined(__AVX2__)
#define IE_ISA(name) name##_avx2
#else
#define IE_ISA(name) name##_base
#endif

typedef float ie_vf __attribute__((vector_size(IE_LANES * 4)));
typedef int32_t ie_vi __attribute__((vector_size(IE_LANES * 4)));
typedef uint64_t ie_vq __attribute__((vector_size(IE_LANES * 4)));
typedef uint32_t ie_vu __attribute__((vector_size(IE_LANES * 4)));

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

static inline ie_vf ie_splatf(float x) {
    ie_vf v;
    for (int l = 0; l < IE_LANES; l++) v[l] = x;
    return v;
}

static inline ie_vi ie_splati(int32_t x) {
    ie_vi v;
    for (int l = 0; l < IE_LANES; l++) v[l] = x;
    return v;
}

static inline ie_vu ie_splatu(uint32_t x) {
    ie_vu v;
    for (int l = 0; l < IE_LANES; l++) v[l] = x;
    return v;
}

/* Lane l holds l. */
static inline ie_vi ie_iota(void) {
    ie_vi v;
    for (int l = 0; l < IE_LANES; l++) v[l] = l;
    return v;
}

/* Lane-wise mask ? a : b, where mask lanes are all ones or all zeros. */
static inline ie_vf ie_selectf(ie_vi mask, ie_vf a, ie_vf b) {
    return (ie_vf)((mask & (ie_vi)a) | (~mask & (ie_vi)b));
}

/* Lane-wise a > b ? a : b (b when either is NaN): exactly MAXPS, which SSE has as one instruction
 * where the generic select takes four. */
static inline ie_vf ie_maxf(ie_vf a, ie_vf b) {
#if defined(__AVX__) && IE_LANES == 8
    return (ie_vf)_mm256_max_ps((__m256)a, (__m256)b);
#elif defined(__SSE2__) && IE_LANES == 4
    return (ie_vf)_mm_max_ps((__m128)a, (__m128)b);
#else
    return ie_selectf(a > b, a, b);
#endif
}

/* Bit l set when mask lane l is set (MOVMSKPS on SSE/AVX). */
static inline unsigned ie_movemask(ie_vi mask) {
#if defined(__AVX__) && IE_LANES == 8
    return (unsigned)_mm256_movemask_ps((__m256)mask);
#elif defined(__SSE2__) && IE_LANES == 4
    return (unsigned)_mm_movemask_ps((__m128)mask);
#else
    unsigned bits = 0;
    for (int l = 0; l < IE_LANES; l++) bits |= (unsigned)(mask[l] != 0) << l;
    return bits;
#endif
}

static inline int ie_any(ie_vi mask) {
    ie_vq q = (ie_vq)mask;
    uint64_t any = 0;
    for (int j = 0; j < IE_LANES / 2; j++) any |= q[j];
    return any != 0;
}

/* Lanes holding NaN or +inf, which make a row unsampleable. */
static inline ie_vi ie_nonfinite(ie_vf x) { return (x != x) | (x == INFINITY); }

/*
 * exp(d) for d <= 0: Cody-Waite range reduction by ln 2 (in two parts) to |r| <= ln(2)/2, then
 * 1 + r + r^2 q(r) with q a cubic fitted for relative error (max 1.8e-7 over [-87, 0], monotone);
 * clamped at d = -87 so that 2**n stays a normal float. Mirrors exp32() in _reference.py
 * operation for operation; the constants are exact float32 hex literals.
 */
static inline ie_vf ie_exp_nonpos(ie_vf d) {
    d = ie_maxf(ie_splatf(-0x1.5cp+6f), d); /* -87 > d ? -87 : d */
    ie_vf n = (d * 0x1.715476p+0f + 0x1.8p+23f) - 0x1.8p+23f;
    ie_vf r = d - n * 0x1.63p-1f;
    r = r - n * -0x1.bd0106p-13f;
    ie_vf z = r * r;
    ie_vf p = r * 0x1.106284p-7f + 0x1.5729fp-5f;
    p = p * r + 0x1.5557aep-3f;
    p = p * r + 0x1.fffdfcp-2f;
    p = p * z + r;
    p = p + 1.0f;
    ie_vi scale = (__builtin_convertvector(n, ie_vi) + 127) << 23;
    return p * (ie_vf)scale;
}

/* Fixed-point weights trunc(exp(x - max) * 2**30) of a vector of scaled logits. */
static inline ie_vi ie_weights_v(ie_vf x, float x_max) {
    ie_vf e = ie_exp_nonpos(x - x_max);
    return __builtin_convertvector(e * 0x1p30f, ie_vi);
}

/* ie_select.c: order candidates. */
void ie_nth_by_logit(ie_cand *c, int64_t n, int64_t k); /* first k = top k by (x desc, id asc) */
void ie_sort_by_weight(ie_cand *c, int64_t n);          /* (w desc, id asc) */
void ie_sort_by_id(ie_cand *c, int64_t n);              /* id asc */

/* ie_weights.c: weights, top-p and the draw, over candidates or over the whole row. */
ie_status IE_ISA(ie_sample_candidates)(float *logits, ie_cand *c, int64_t n, double top_p, double uniform,
                               int32_t *token);
/* Temperature (multiply by inv_t), top-p and the draw over a whole row; w has room for twice
 * the row padded to IE_PAD plus IE_PAD, scratch for vocab candidates. */
ie_status IE_ISA(ie_sample_row)(float *logits, int64_t vocab, float inv_t, double top_p,
                                double uniform, int32_t *w, ie_cand *scratch, int32_t *token);

/* ie_sampling.c: one row, once the workspace is checked (ie_sample in ie_dispatch.c). */
ie_status IE_ISA(ie_sample_one)(float *logits, int64_t vocab, const ie_params *params,
                                const ie_history *history, const int32_t *mask_ids,
                                int64_t n_mask, double uniform, void *workspace, int32_t *token);
ie_status IE_ISA(ie_process_one)(float *logits, int64_t vocab, const ie_params *params,
                                 const ie_history *history, const int32_t *mask_ids,
                                 int64_t n_mask);
ie_status ie_process_one_base(float *, int64_t, const ie_params *, const ie_history *,
                              const int32_t *, int64_t);
ie_status ie_process_one_avx2(float *, int64_t, const ie_params *, const ie_history *,
                              const int32_t *, int64_t);
ie_status ie_sample_one_base(float *, int64_t, const ie_params *, const ie_history *,
                             const int32_t *, int64_t, double, void *, int32_t *);
ie_status ie_sample_one_avx2(float *, int64_t, const ie_params *, const ie_history *,
                             const int32_t *, int64_t, double, void *, int32_t *);

#endif /* IE_INTERNAL_H */
