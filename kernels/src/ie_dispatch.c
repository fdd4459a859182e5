/*
 * ie_dispatch.c - the public entry points: argument checks, then the sampling chain compiled for
 * the best instruction set this CPU has (chosen once; every variant gives identical results).
 */
#include "ie_internal.h"

typedef ie_status (*ie_one_fn)(float *, int64_t, const ie_params *, const ie_history *,
                               const int32_t *, int64_t, double, void *, int32_t *);

#if defined(__x86_64__) || defined(__i386__)
#define IE_BASE_NAME "sse2"
#elif defined(__aarch64__) || defined(__ARM_NEON)
#define IE_BASE_NAME "neon"
#else
#define IE_BASE_NAME "generic"
#endif

typedef ie_status (*ie_process_fn)(float *, int64_t, const ie_params *, const ie_history *,
                                   const int32_t *, int64_t);

static ie_one_fn chosen = NULL;
static ie_process_fn chosen_process = NULL;
static const char *chosen_name = IE_BASE_NAME;

static int have_avx2(void) {
#if defined(IE_HAVE_AVX2)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int ie_select_isa(const char *name) {
    if (name == NULL) name = have_avx2() ? "avx2" : IE_BASE_NAME;
#if defined(IE_HAVE_AVX2)
    if (strcmp(name, "avx2") == 0) {
        if (!have_avx2()) return -1;
        chosen = ie_sample_one_avx2;
        chosen_process = ie_process_one_avx2;
        chosen_name = "avx2";
        return 0;
    }
#endif
    if (strcmp(name, IE_BASE_NAME) != 0) return -1;
    chosen = ie_sample_one_base;
    chosen_process = ie_process_one_base;
    chosen_name = IE_BASE_NAME;
    return 0;
}

const char *ie_isa(void) {
    if (chosen == NULL) ie_select_isa(NULL);
    return chosen_name;
}

size_t ie_workspace_bytes(int64_t vocab) {
    if (vocab < 1 || vocab > IE_MAX_VOCAB) return 0;
    const size_t vpad = (size_t)(vocab + IE_PAD - 1) / IE_PAD * IE_PAD;
    return (2 * vpad + IE_PAD) * sizeof(int32_t) + (size_t)vocab * sizeof(ie_cand);
}

ie_status ie_sample(float *logits, int64_t vocab, const ie_params *p, const ie_history *h,
                    const int32_t *mask_ids, int64_t n_mask, double uniform, void *workspace,
                    size_t workspace_bytes, int32_t *token) {
    const size_t need = ie_workspace_bytes(vocab);
    if (need == 0 || workspace_bytes < need || ((uintptr_t)workspace % sizeof(int64_t)) != 0) {
        return IE_ERR_BAD_ARG;
    }
    if (chosen == NULL) ie_select_isa(NULL);
    return chosen(logits, vocab, p, h, mask_ids, n_mask, uniform, workspace, token);
}

ie_status ie_sample_batch(float *logits, int64_t batch, int64_t vocab, const ie_params *params,
                          const ie_history *histories, const int32_t *mask_ids, int64_t n_mask,
                          const double *uniforms, void *workspace, size_t workspace_bytes,
                          int32_t *tokens, int64_t *failed_row) {
    for (int64_t b = 0; b < batch; b++) {
        ie_status status = ie_sample(logits + b * vocab, vocab, &params[b], &histories[b], mask_ids,
                                     n_mask, uniforms[b], workspace, workspace_bytes, &tokens[b]);
        if (status != IE_OK) {
            *failed_row = b;
            return status;
        }
    }
    return IE_OK;
}

ie_status ie_process(float *logits, int64_t vocab, const ie_params *p, const ie_history *h,
                     const int32_t *mask_ids, int64_t n_mask) {
    if (vocab < 1 || vocab > IE_MAX_VOCAB) return IE_ERR_BAD_ARG;
    if (chosen_process == NULL) ie_select_isa(NULL);
    return chosen_process(logits, vocab, p, h, mask_ids, n_mask);
}
