/*
 * ie_weights.c - fixed-point probabilities, top-p and the draw.
 *
 * Probabilities are integer weights w = trunc(exp(x - max) * 2**30), so every sum is exact and
 * independent of summation order: vectorized partial sums here equal the reference's cumsum.
 *
 * Two shapes of the same computation:
 *  - candidates: after top-k, only a short list of (id, x) survives; sort it (cheap) and walk it;
 *  - whole row: no sort of the vocabulary. Top-p finds its cut by radix selection over the
 *    weights (a 256-bucket log-scale histogram of mass, then linear refinement of the one
 *    boundary bucket), then one pass writes -inf to the dropped tokens.
 */
#include "ie_internal.h"

#define IE_BUCKETS 256
#define IE_REFINE_MAX 64 /* a boundary bucket this small is simply sorted */

/* The top-p cut: tokens with w > w_star, or w == w_star and id <= id_cut, are kept. */
typedef struct ie_cut {
    int32_t w_star;
    int32_t id_cut;
    int64_t mass; /* total weight kept */
} ie_cut;

static int64_t draw_position(int64_t total, double uniform) {
    int64_t r = (int64_t)(uniform * (double)total);
    return r >= total ? total - 1 : r; /* u * W may round up to W when W > 2**52 */
}

static int64_t candidate_weights(ie_cand *c, int64_t n) {
    float x_max = -INFINITY;
    for (int64_t j = 0; j < n; j++) x_max = c[j].x > x_max ? c[j].x : x_max;
    int64_t total = 0;
    for (int64_t j = 0; j < n; j += IE_LANES) {
        float xs[IE_LANES];
        int32_t ws[IE_LANES];
        for (int l = 0; l < IE_LANES; l++) xs[l] = j + l < n ? c[j + l].x : -INFINITY;
        ie_storei(ws, ie_weights8(ie_loadf(xs), x_max));
        for (int l = 0; l < IE_LANES && j + l < n; l++) {
            c[j + l].w = ws[l];
            total += ws[l];
        }
    }
    return total;
}

ie_status ie_sample_candidates(float *logits, ie_cand *c, int64_t n, double top_p, double uniform,
                               int32_t *token) {
    int64_t total = candidate_weights(c, n);
    if (top_p < 1.0) {
        ie_sort_by_weight(c, n);
        const double target = top_p * (double)total;
        int64_t mass = 0, keep = n;
        for (int64_t j = 0; j < n; j++) {
            mass += c[j].w;
            if ((double)mass >= target) {
                keep = j + 1;
                break;
            }
        }
        for (int64_t j = keep; j < n; j++) logits[c[j].id] = -INFINITY;
        n = keep;
        total = mass;
    }
    ie_sort_by_id(c, n);
    const int64_t r = draw_position(total, uniform);
    int64_t cumulative = 0;
    for (int64_t j = 0; j < n; j++) {
        cumulative += c[j].w;
        if (cumulative > r) {
            *token = c[j].id;
            return IE_OK;
        }
    }
    return IE_ERR_NO_CANDIDATE; /* unreachable: the top token weighs 2**30 */
}

/* Weights of the whole row into w[0, vpad), zero-padded to a multiple of IE_LANES. */
static int64_t row_weights(const float *x, int64_t vocab, float x_max, int32_t *w) {
    ie_vl acc = {0};
    int64_t i = 0;
    for (; i + IE_LANES <= vocab; i += IE_LANES) {
        ie_vi wi = ie_weights8(ie_loadf(x + i), x_max);
        ie_storei(w + i, wi);
        acc += __builtin_convertvector(wi, ie_vl);
    }
    int64_t total = ie_sum_lanes(acc);
    if (i < vocab) {
        float xs[IE_LANES];
        for (int l = 0; l < IE_LANES; l++) xs[l] = i + l < vocab ? x[i + l] : -INFINITY;
        ie_vi wi = ie_weights8(ie_loadf(xs), x_max); /* padding lanes weigh 0 */
        ie_storei(w + i, wi);
        for (int l = 0; l < IE_LANES; l++) total += wi[l];
    }
    return total;
}

/* Log-scale bucket of a weight, monotone in w: float exponent and 3 mantissa bits; 0 for w = 0. */
static inline ie_vi bucket8(ie_vi w) {
    ie_vi b = ((ie_vi)__builtin_convertvector(w, ie_vf) >> 20) - 1015;
    return b & ~(b >> 31);
}

/* Level 1: the boundary bucket of the whole row; gathers its tokens into c in id order. */
static int64_t gather_boundary(const int32_t *w, int64_t vpad, double target, int64_t *above,
                               ie_cand *c) {
    uint64_t mass[2][IE_BUCKETS] = {{0}}; /* two copies halve store-to-load chains on hot bins */
    for (int64_t i = 0; i < vpad; i += IE_LANES) {
        ie_vi wv = ie_loadi(w + i), b = bucket8(wv);
        for (int l = 0; l < IE_LANES; l++) mass[l & 1][b[l]] += (uint64_t)wv[l];
    }
    int64_t acc = 0;
    int bucket = IE_BUCKETS - 1;
    for (; bucket > 1; bucket--) {
        int64_t m = (int64_t)(mass[0][bucket] + mass[1][bucket]);
        if ((double)(acc + m) >= target) break;
        acc += m;
    }
    *above = acc;
    int64_t n = 0;
    const ie_vi want = ie_splati(bucket);
    for (int64_t i = 0; i < vpad; i += IE_LANES) {
        ie_vi wv = ie_loadi(w + i), b = bucket8(wv);
        if (!ie_any(b == want)) continue;
        for (int l = 0; l < IE_LANES; l++) {
            if (b[l] == bucket) c[n++] = (ie_cand){.x = 0.0f, .id = (int32_t)(i + l), .w = wv[l]};
        }
    }
    return n;
}

/* Narrows the boundary candidates by linear sub-buckets of their weight range until few remain
 * or all weigh the same; keeps id order. */
static int64_t refine_boundary(ie_cand *c, int64_t n, double target, int64_t *above) {
    while (n > IE_REFINE_MAX) {
        int32_t lo = c[0].w, hi = c[0].w;
        for (int64_t j = 1; j < n; j++) {
            lo = c[j].w < lo ? c[j].w : lo;
            hi = c[j].w > hi ? c[j].w : hi;
        }
        if (lo == hi) break;
        const int32_t width = (hi - lo) / IE_BUCKETS + 1; /* sub-bucket 0 holds the heaviest */
        uint64_t mass[IE_BUCKETS] = {0};
        for (int64_t j = 0; j < n; j++) mass[(hi - c[j].w) / width] += (uint64_t)c[j].w;
        int s = 0;
        for (; s < IE_BUCKETS - 1; s++) {
            if ((double)(*above + (int64_t)mass[s]) >= target) break;
            *above += (int64_t)mass[s];
        }
        int64_t m = 0;
        for (int64_t j = 0; j < n; j++) {
            if ((hi - c[j].w) / width == s) c[m++] = c[j];
        }
        n = m;
    }
    return n;
}

static ie_cut top_p_cut(const int32_t *w, int64_t vpad, int64_t total, double top_p, ie_cand *c) {
    const double target = top_p * (double)total;
    int64_t above = 0;
    int64_t n = gather_boundary(w, vpad, target, &above, c);
    n = refine_boundary(c, n, target, &above);
    if (n <= IE_REFINE_MAX) ie_sort_by_weight(c, n); /* else all weigh the same, already id order */
    int64_t mass = above;
    for (int64_t j = 0; j < n; j++) {
        mass += c[j].w;
        if ((double)mass >= target) return (ie_cut){c[j].w, c[j].id, mass};
    }
    return (ie_cut){c[n - 1].w, c[n - 1].id, mass}; /* unreachable: the walk reaches the target */
}

static void apply_cut(float *logits, int32_t *w, int64_t vocab, ie_cut cut) {
    const ie_vi w_star = ie_splati(cut.w_star), id_cut = ie_splati(cut.id_cut);
    const ie_vf neg_inf = ie_splatf(-INFINITY);
    ie_vi ids = {0, 1, 2, 3, 4, 5, 6, 7};
    int64_t i = 0;
    for (; i + IE_LANES <= vocab; i += IE_LANES, ids += IE_LANES) {
        ie_vi wv = ie_loadi(w + i);
        ie_vi keep = (wv > w_star) | ((wv == w_star) & (ids <= id_cut));
        ie_storei(w + i, wv & keep);
        ie_storef(logits + i, ie_selectf(keep, ie_loadf(logits + i), neg_inf));
    }
    for (; i < vocab; i++) {
        if (w[i] < cut.w_star || (w[i] == cut.w_star && i > cut.id_cut)) {
            w[i] = 0;
            logits[i] = -INFINITY;
        }
    }
}

static int32_t draw_row(const int32_t *w, int64_t vpad, int64_t total, double uniform) {
    const int64_t r = draw_position(total, uniform);
    int64_t cumulative = 0, i = 0;
    for (; i + 4 * IE_LANES <= vpad; i += 4 * IE_LANES) {
        ie_vl s = __builtin_convertvector(ie_loadi(w + i), ie_vl) +
                  __builtin_convertvector(ie_loadi(w + i + 8), ie_vl) +
                  __builtin_convertvector(ie_loadi(w + i + 16), ie_vl) +
                  __builtin_convertvector(ie_loadi(w + i + 24), ie_vl);
        int64_t block = ie_sum_lanes(s);
        if (cumulative + block > r) break;
        cumulative += block;
    }
    for (; i < vpad; i++) {
        cumulative += w[i];
        if (cumulative > r) return (int32_t)i;
    }
    return -1; /* unreachable: the weights sum to total > r */
}

ie_status ie_sample_row(float *logits, int64_t vocab, float x_max, double top_p, double uniform,
                        int32_t *w, ie_cand *scratch, int32_t *token) {
    const int64_t vpad = (vocab + IE_LANES - 1) / IE_LANES * IE_LANES;
    int64_t total = row_weights(logits, vocab, x_max, w);
    if (top_p < 1.0) {
        ie_cut cut = top_p_cut(w, vpad, total, top_p, scratch);
        apply_cut(logits, w, vocab, cut);
        total = cut.mass;
    }
    int32_t id = draw_row(w, vpad, total, uniform);
    if (id < 0) return IE_ERR_NO_CANDIDATE;
    *token = id;
    return IE_OK;
}
