/*
 * ie_sampling.c - the chain: mask, penalties, greedy argmax, temperature, top-k, then hand-off to
 * ie_weights.c for top-p and the draw. Mirrors kernels/_reference.py stage by stage.
 *
 * Passes over the row: the penalties touch only history tokens; greedy is one vectorized argmax
 * pass; with top-k, one read pass selects the candidates and one write pass fills -inf; without
 * it, one pass scales in place and finds the maximum, then ie_sample_row takes over.
 */
#include "ie_internal.h"

#define IE_TOP_K_SLACK 2048        /* candidates buffered beyond k before re-selecting */
#define IE_SMALL_CANDIDATES 1024   /* up to this many top-k survivors go the sorted-list way */

size_t ie_workspace_bytes(int64_t vocab) {
    if (vocab < 1 || vocab > IE_MAX_VOCAB) return 0;
    const size_t vpad = (size_t)(vocab + IE_LANES - 1) / IE_LANES * IE_LANES;
    return vpad * sizeof(int32_t) + (size_t)vocab * sizeof(ie_cand);
}

static ie_status apply_mask(float *logits, int64_t vocab, const int32_t *ids, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        if (ids[j] < 0 || ids[j] >= vocab) return IE_ERR_BAD_ID;
        logits[ids[j]] = -INFINITY;
    }
    return IE_OK;
}

/* Repetition (HF/vLLM): divide positive logits, multiply negative ones, once per distinct token
 * of prompt and output; dividing a negative logit would raise it, which is the bug the rule
 * avoids. Presence/frequency (OpenAI): subtract float(frequency * count + presence). */
static ie_status apply_penalties(float *logits, int64_t vocab, const ie_params *p,
                                 const ie_history *h) {
    if (p->repetition_penalty != 1.0) {
        const float penalty = (float)p->repetition_penalty;
        for (int64_t j = 0; j < h->n_rep; j++) {
            const int32_t id = h->rep_ids[j];
            if (id < 0 || id >= vocab) return IE_ERR_BAD_ID;
            const float v = logits[id];
            logits[id] = v > 0.0f ? v / penalty : v * penalty;
        }
    }
    if (p->presence_penalty != 0.0 || p->frequency_penalty != 0.0) {
        for (int64_t j = 0; j < h->n_gen; j++) {
            const int32_t id = h->gen_ids[j];
            if (id < 0 || id >= vocab) return IE_ERR_BAD_ID;
            const double adjust = p->frequency_penalty * (double)h->gen_counts[j];
            logits[id] -= (float)(adjust + p->presence_penalty);
        }
    }
    return IE_OK;
}

/* First index of the maximum (lowest id wins ties), in one vectorized pass. */
static ie_status argmax(const float *logits, int64_t vocab, int32_t *token) {
    ie_vf best = ie_splatf(-INFINITY);
    ie_vi best_id = ie_splati(0), ids = {0, 1, 2, 3, 4, 5, 6, 7}, bad = ie_splati(0);
    int64_t i = 0;
    for (; i + IE_LANES <= vocab; i += IE_LANES, ids += IE_LANES) {
        ie_vf x = ie_loadf(logits + i);
        ie_vi gt = x > best; /* strict: each lane keeps its first maximum */
        best = ie_selectf(gt, x, best);
        best_id = (gt & ids) | (~gt & best_id);
        bad |= ie_nonfinite(x);
    }
    float top = -INFINITY;
    int32_t top_id = 0;
    for (int l = 0; l < IE_LANES; l++) {
        if (best[l] > top || (best[l] == top && best_id[l] < top_id)) {
            top = best[l];
            top_id = best_id[l];
        }
    }
    for (; i < vocab; i++) { /* tail ids exceed all lane ids: strict comparison keeps ties */
        const float x = logits[i];
        if (x != x || x == INFINITY) return IE_ERR_NONFINITE;
        if (x > top) {
            top = x;
            top_id = (int32_t)i;
        }
    }
    if (ie_any(bad)) return IE_ERR_NONFINITE;
    if (top == -INFINITY) return IE_ERR_NO_CANDIDATE;
    *token = top_id;
    return IE_OK;
}

/* Temperature in place (multiply by float(1/t)) and the maximum, in one pass. */
static ie_status scale_and_max(float *logits, int64_t vocab, float inv_t, float *x_max) {
    ie_vf best = ie_splatf(-INFINITY);
    ie_vi bad = ie_splati(0);
    int64_t i = 0;
    for (; i + IE_LANES <= vocab; i += IE_LANES) {
        ie_vf x = ie_loadf(logits + i) * inv_t;
        ie_storef(logits + i, x);
        best = ie_selectf(x > best, x, best);
        bad |= ie_nonfinite(x);
    }
    float top = -INFINITY;
    for (int l = 0; l < IE_LANES; l++) top = best[l] > top ? best[l] : top;
    for (; i < vocab; i++) {
        const float x = logits[i] * inv_t;
        logits[i] = x;
        if (x != x || x == INFINITY) return IE_ERR_NONFINITE;
        top = x > top ? x : top;
    }
    if (ie_any(bad)) return IE_ERR_NONFINITE;
    if (top == -INFINITY) return IE_ERR_NO_CANDIDATE;
    *x_max = top;
    return IE_OK;
}

static inline void push_if_above(ie_cand *c, int64_t *n, float x, float threshold, int64_t id) {
    if (x > threshold) c[(*n)++] = (ie_cand){.x = x, .id = (int32_t)id, .w = 0};
}

static float kth_logit(const ie_cand *c, int64_t k) {
    float t = c[0].x;
    for (int64_t j = 1; j < k; j++) t = c[j].x < t ? c[j].x : t;
    return t;
}

/* The k largest scaled logits (lowest id on ties) into c[0, *n). A block is skipped unless some
 * x beats the current k-th largest: later equal values have higher ids, so they lose the tie.
 * Buffering k + slack candidates between re-selections keeps the work linear. */
static ie_status select_top_k(const float *logits, int64_t vocab, float inv_t, int64_t k,
                              ie_cand *c, int64_t *n_out) {
    const int64_t limit = k + (k > IE_TOP_K_SLACK ? k : IE_TOP_K_SLACK);
    float threshold = -INFINITY;
    ie_vi bad = ie_splati(0);
    int64_t n = 0, i = 0;
    for (; i + 4 * IE_LANES <= vocab; i += 4 * IE_LANES) {
        const float *p = logits + i;
        ie_vf x0 = ie_loadf(p) * inv_t, x1 = ie_loadf(p + 8) * inv_t;
        ie_vf x2 = ie_loadf(p + 16) * inv_t, x3 = ie_loadf(p + 24) * inv_t;
        bad |= ie_nonfinite(x0) | ie_nonfinite(x1) | ie_nonfinite(x2) | ie_nonfinite(x3);
        const ie_vf t = ie_splatf(threshold);
        if (!ie_any((x0 > t) | (x1 > t) | (x2 > t) | (x3 > t))) continue;
        for (int j = 0; j < 4 * IE_LANES; j++) push_if_above(c, &n, p[j] * inv_t, threshold, i + j);
        if (n >= limit) {
            ie_nth_by_logit(c, n, k);
            n = k;
            threshold = kth_logit(c, k);
        }
    }
    for (; i < vocab; i++) {
        const float x = logits[i] * inv_t;
        if (x != x || x == INFINITY) return IE_ERR_NONFINITE;
        push_if_above(c, &n, x, threshold, i);
    }
    if (ie_any(bad)) return IE_ERR_NONFINITE;
    if (n > k) {
        ie_nth_by_logit(c, n, k);
        n = k;
    }
    *n_out = n;
    return n > 0 ? IE_OK : IE_ERR_NO_CANDIDATE;
}

static ie_status sample_top_k(float *logits, int64_t vocab, const ie_params *p, float inv_t,
                              double uniform, int32_t *w, ie_cand *c, int32_t *token) {
    int64_t n = 0;
    ie_status status = select_top_k(logits, vocab, inv_t, p->top_k, c, &n);
    if (status != IE_OK) return status;
    for (int64_t i = 0; i < vocab; i++) logits[i] = -INFINITY;
    float x_max = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        logits[c[j].id] = c[j].x;
        x_max = c[j].x > x_max ? c[j].x : x_max;
    }
    if (n <= IE_SMALL_CANDIDATES) return ie_sample_candidates(logits, c, n, p->top_p, uniform, token);
    return ie_sample_row(logits, vocab, x_max, p->top_p, uniform, w, c, token);
}

ie_status ie_sample(float *logits, int64_t vocab, const ie_params *p, const ie_history *h,
                    const int32_t *mask_ids, int64_t n_mask, double uniform, void *workspace,
                    size_t workspace_bytes, int32_t *token) {
    const size_t need = ie_workspace_bytes(vocab);
    if (need == 0 || workspace_bytes < need || ((uintptr_t)workspace % sizeof(int64_t)) != 0) {
        return IE_ERR_BAD_ARG;
    }
    ie_status status = p->mask_active ? apply_mask(logits, vocab, mask_ids, n_mask) : IE_OK;
    if (status == IE_OK) status = apply_penalties(logits, vocab, p, h);
    if (status != IE_OK) return status;
    if (p->greedy) return argmax(logits, vocab, token);

    const float inv_t = (float)(1.0 / p->temperature);
    int32_t *w = (int32_t *)workspace;
    ie_cand *c = (ie_cand *)(w + (vocab + IE_LANES - 1) / IE_LANES * IE_LANES);
    if (p->top_k > 0 && p->top_k < vocab) {
        return sample_top_k(logits, vocab, p, inv_t, uniform, w, c, token);
    }
    float x_max = 0.0f;
    status = scale_and_max(logits, vocab, inv_t, &x_max);
    if (status != IE_OK) return status;
    return ie_sample_row(logits, vocab, x_max, p->top_p, uniform, w, c, token);
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
