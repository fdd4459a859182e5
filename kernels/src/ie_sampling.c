/*
 * ie_sampling.c - the chain: allowed-token mask, stop-id mask, penalties, greedy argmax, temperature, top-k, then hand-off to
 * ie_weights.c for top-p and the draw. Mirrors kernels/_reference.py stage by stage.
 *
 * Passes over the row: the allowed-token mask (when given) is one pass that decides 32 tokens per
 * word and skips words that allow all 32; the penalties touch only history tokens; greedy is one vectorized argmax
 * pass; with top-k, one read pass selects the candidates and one write pass fills -inf; without
 * it, ie_sample_row (ie_weights.c) takes the whole row.
 */
#include "ie_internal.h"

#define IE_TOP_K_SLACK 256         /* candidates buffered beyond k before re-selecting */
#define IE_SAMPLE 1024             /* strided sample that seeds the top-k threshold */
#define IE_SAMPLE_MIN_VOCAB 16384  /* below this the scan alone is cheap enough */
#define IE_SMALL_CANDIDATES 1024   /* up to this many top-k survivors go the sorted-list way */

/* -inf for every token the allowed bitmask leaves out (bit i % 32 of word i / 32 allows token
 * i). A word of all ones leaves its 32 logits untouched, a zero word is overwritten with -inf,
 * and any other word selects lane by lane between the logit and -inf. Only -inf is written, so the result equals the reference's bit for
 * bit. A mask that allows no token of [0, vocab) is an error. */
static ie_status apply_allowed(float *logits, int64_t vocab, const uint32_t *allowed) {
    const ie_vf neg_inf = ie_splatf(-INFINITY);
    ie_vu lane_bit;
    for (int l = 0; l < IE_LANES; l++) lane_bit[l] = UINT32_C(1) << l;
    const int64_t full = vocab / 32;
    uint32_t any = 0;
    for (int64_t w = 0; w < full; w++) {
        const uint32_t bits = allowed[w];
        any |= bits;
        if (bits == UINT32_MAX) continue;
        float *p = logits + 32 * w;
        if (bits == 0) { /* most words of a grammar's mask: store -inf without reading */
            for (int k = 0; k < 32; k += IE_LANES) ie_storef(p + k, neg_inf);
            continue;
        }
        for (int k = 0; k < 32; k += IE_LANES) {
            const ie_vi keep = (ie_vi)((ie_splatu(bits >> k) & lane_bit) != 0);
            ie_storef(p + k, ie_selectf(keep, ie_loadf(p + k), neg_inf));
        }
    }
    const int rest = (int)(vocab - 32 * full);
    if (rest > 0) {
        const uint32_t bits = allowed[full] & ((UINT32_C(1) << rest) - 1u);
        any |= bits;
        for (int j = 0; j < rest; j++) {
            if (((bits >> j) & 1u) == 0) logits[32 * full + j] = -INFINITY;
        }
    }
    return any != 0 ? IE_OK : IE_ERR_EMPTY_MASK;
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

/* First index of the maximum (lowest id wins ties), in one vectorized pass with two independent
 * running maxima; each lane keeps its first maximum (strict comparison). */
static ie_status argmax(const float *logits, int64_t vocab, int32_t *token) {
    ie_vf best[2] = {ie_splatf(-INFINITY), ie_splatf(-INFINITY)};
    ie_vi best_id[2] = {ie_splati(0), ie_splati(0)}, ids = ie_iota(), nan = ie_splati(0);
    const ie_vi step = ie_splati(IE_LANES);
    int64_t i = 0;
    for (; i + 2 * IE_LANES <= vocab; i += 2 * IE_LANES) {
        for (int k = 0; k < 2; k++, ids += step) {
            const ie_vf x = ie_loadf(logits + i + k * IE_LANES);
            const ie_vi gt = x > best[k];
            best[k] = ie_maxf(x, best[k]);
            best_id[k] = (gt & ids) | (~gt & best_id[k]);
            nan |= x != x;
        }
    }
    float top = -INFINITY;
    int32_t top_id = 0;
    for (int k = 0; k < 2; k++) {
        for (int l = 0; l < IE_LANES; l++) {
            const float v = best[k][l];
            if (v > top || (v == top && best_id[k][l] < top_id)) {
                top = v;
                top_id = best_id[k][l];
            }
        }
    }
    for (; i < vocab; i++) { /* tail ids exceed all lane ids: strict comparison keeps ties */
        const float x = logits[i];
        if (x != x) return IE_ERR_NONFINITE;
        if (x > top) {
            top = x;
            top_id = (int32_t)i;
        }
    }
    if (ie_any(nan) || top == INFINITY) return IE_ERR_NONFINITE; /* +inf would be the maximum */
    if (top == -INFINITY) return IE_ERR_NO_CANDIDATE;
    *token = top_id;
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

/* The largest float below x (x finite), so that `y > just_below(x)` means `y >= x`. */
static float just_below(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = x > 0.0f ? bits - 1 : x < 0.0f ? bits + 1 : 0x80000001u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* A safe starting threshold for the scan: a high order statistic of an evenly strided sample of
 * the row. It can only be too high (then fewer than k tokens pass, and the scan is redone from
 * -inf), never wrong; it spares the scan from buffering the first few thousand tokens, and keeps
 * sorted rows (every token a new maximum) from re-selecting all the way through. */
static float sampled_floor(const float *logits, int64_t vocab, float inv_t, int64_t k,
                           ie_cand *scratch) {
    if (vocab < IE_SAMPLE_MIN_VOCAB || k > vocab / 64) return -INFINITY;
    const int64_t stride = vocab / IE_SAMPLE;
    const int64_t rank = 2 * ((k * IE_SAMPLE + vocab - 1) / vocab) + 4; /* a margin over k */
    for (int64_t j = 0; j < IE_SAMPLE; j++) {
        scratch[j] = (ie_cand){.x = logits[j * stride] * inv_t, .id = (int32_t)(j * stride)};
    }
    ie_nth_by_logit(scratch, IE_SAMPLE, rank);
    const float floor_x = kth_logit(scratch, rank);
    if (!(floor_x > -INFINITY && floor_x < INFINITY)) return -INFINITY; /* NaN or infinite */
    return just_below(floor_x);
}

/* The k largest scaled logits above `floor_x` (lowest id on ties) into c[0, *n). A block is
 * skipped unless some x beats the current threshold: once k are buffered, later equal values have
 * higher ids and lose the tie. Buffering k + slack candidates between re-selections keeps the
 * work linear. */
static ie_status scan_top_k(const float *logits, int64_t vocab, float inv_t, int64_t k,
                            float floor_x, ie_cand *c, int64_t *n_out) {
    const int64_t limit = k + (k > IE_TOP_K_SLACK ? k : IE_TOP_K_SLACK);
    float threshold = floor_x;
    ie_vi bad = ie_splati(0);
    int64_t n = 0, i = 0;
    for (; i + 4 * IE_LANES <= vocab; i += 4 * IE_LANES) {
        const float *p = logits + i;
        ie_vf x0 = ie_loadf(p) * inv_t, x1 = ie_loadf(p + IE_LANES) * inv_t;
        ie_vf x2 = ie_loadf(p + 2 * IE_LANES) * inv_t, x3 = ie_loadf(p + 3 * IE_LANES) * inv_t;
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
    return IE_OK;
}

static ie_status select_top_k(const float *logits, int64_t vocab, float inv_t, int64_t k,
                              ie_cand *c, int64_t *n_out) {
    const float floor_x = sampled_floor(logits, vocab, inv_t, k, c);
    ie_status status = scan_top_k(logits, vocab, inv_t, k, floor_x, c, n_out);
    if (status == IE_OK && *n_out < k && floor_x > -INFINITY) { /* the sample guessed too high */
        status = scan_top_k(logits, vocab, inv_t, k, -INFINITY, c, n_out);
    }
    if (status == IE_OK && *n_out == 0) status = IE_ERR_NO_CANDIDATE;
    return status;
}

static ie_status sample_top_k(float *logits, int64_t vocab, const ie_params *p, float inv_t,
                              double uniform, int32_t *w, ie_cand *c, int32_t *token) {
    int64_t n = 0;
    ie_status status = select_top_k(logits, vocab, inv_t, p->top_k, c, &n);
    if (status != IE_OK) return status;
    for (int64_t i = 0; i < vocab; i++) logits[i] = -INFINITY;
    for (int64_t j = 0; j < n; j++) logits[c[j].id] = c[j].x;
    if (n <= IE_SMALL_CANDIDATES) {
        return IE_ISA(ie_sample_candidates)(logits, c, n, p->top_p, uniform, token);
    }
    /* Many survivors: the row already holds x or -inf, so continue as a whole row at scale 1. */
    return IE_ISA(ie_sample_row)(logits, vocab, 1.0f, p->top_p, uniform, w, c, token);
}

ie_status IE_ISA(ie_sample_one)(float *logits, int64_t vocab, const ie_params *p,
                                const ie_history *h, const int32_t *mask_ids, int64_t n_mask,
                                double uniform, void *workspace, int32_t *token) {
    ie_status status = p->allowed != NULL ? apply_allowed(logits, vocab, p->allowed) : IE_OK;
    if (status == IE_OK && p->mask_active) status = apply_mask(logits, vocab, mask_ids, n_mask);
    if (status == IE_OK) status = apply_penalties(logits, vocab, p, h);
    if (status != IE_OK) return status;
    if (p->greedy) return argmax(logits, vocab, token);

    const float inv_t = (float)(1.0 / p->temperature);
    int32_t *w = (int32_t *)workspace;
    ie_cand *c = (ie_cand *)(w + 2 * ((vocab + IE_PAD - 1) / IE_PAD * IE_PAD) + IE_PAD);
    if (p->top_k > 0 && p->top_k < vocab) {
        return sample_top_k(logits, vocab, p, inv_t, uniform, w, c, token);
    }
    return IE_ISA(ie_sample_row)(logits, vocab, inv_t, p->top_p, uniform, w, c, token);
}

/* Stages 1-5 only (allowed mask, stop-id mask, penalties, then temperature unless greedy): the
 * distribution the draw would start from before top-k and top-p. Temperature is one float32
 * multiply per logit, as the reference's `logits *= float32(1 / t)`. */
ie_status IE_ISA(ie_process_one)(float *logits, int64_t vocab, const ie_params *p,
                                 const ie_history *h, const int32_t *mask_ids, int64_t n_mask) {
    ie_status status = p->allowed != NULL ? apply_allowed(logits, vocab, p->allowed) : IE_OK;
    if (status == IE_OK && p->mask_active) status = apply_mask(logits, vocab, mask_ids, n_mask);
    if (status == IE_OK) status = apply_penalties(logits, vocab, p, h);
    if (status != IE_OK || p->greedy) return status;
    const float inv_t = (float)(1.0 / p->temperature);
    for (int64_t i = 0; i < vocab; i++) logits[i] *= inv_t;
    return IE_OK;
}
