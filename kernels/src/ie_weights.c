/*
 * ie_weights.c - fixed-point probabilities, top-p and the draw.
 *
 * Probabilities are integer weights w = trunc(exp(x - max) * 2**30), so every sum is exact and
 * independent of summation order: vectorized partial sums here equal the reference's cumsum.
 *
 * Two shapes of the same computation:
 *  - candidates: after top-k, a short list of (id, x) survives; sort it (cheap) and walk it;
 *  - whole row: no sort of the vocabulary. One pass stores the weights and their exact total,
 *    skipping the polynomial where a whole vector weighs 0. For top-p, a branch-free scan lists
 *    the "heavy" tokens (at least 2**-14 as likely as the top one); when they carry the target
 *    mass the cut is found among them alone, otherwise (flat distributions) over the whole row.
 *    Either way the cut comes from a 256-bucket log-scale histogram of mass, then linear
 *    refinement of the one bucket where the cumulative mass crosses p * W.
 */
#include "ie_internal.h"

#define IE_BUCKETS 256
#define IE_REFINE_MAX 64            /* a boundary bucket this small is simply sorted */
#define IE_HEAVY (INT32_C(1) << 16) /* weight of a token listed in the first pass */
#define IE_CHUNK (INT64_C(1) << 14) /* vectors per exact int32 accumulation, see ie_acc */
/* Below this d = x - max every weight is exactly 0 (exp(-21.5) * 2**30 = 0.49 truncates to 0;
 * tests check exp32 across the range), so a vector entirely below it skips the polynomial. */
#define IE_ZERO_WEIGHT_D (-21.5f)

/* The top-p cut: tokens with w > w_star, or w == w_star and id <= id_cut, are kept. */
typedef struct ie_cut {
    int32_t w_star;
    int32_t id_cut;
    int64_t mass; /* total weight kept */
} ie_cut;

/* Exact sums of weights (each <= 2**30) in int32 lanes, low and high 16 bits apart: IE_CHUNK
 * additions cannot overflow either half. */
typedef struct ie_acc {
    ie_vi lo, hi;
} ie_acc;

static inline void acc_add(ie_acc *a, ie_vi w) {
    a->lo += w & 0xFFFF;
    a->hi += w >> 16;
}

static inline int64_t acc_take(ie_acc *a) {
    int64_t lo = 0, hi = 0;
    for (int l = 0; l < IE_LANES; l++) {
        lo += a->lo[l];
        hi += a->hi[l];
    }
    a->lo = a->hi = ie_splati(0);
    return lo + hi * 65536;
}

/* IE_LANES logits from p with -inf past the end (-inf weighs 0 and never wins a maximum). */
static inline ie_vf load_tail(const float *p, int64_t n) {
    ie_vf v = ie_splatf(-INFINITY);
    for (int64_t l = 0; l < n && l < IE_LANES; l++) v[l] = p[l];
    return v;
}

static inline int32_t bucket_of(int32_t w) { /* log scale, monotone in w; 0 for w = 0 */
    const float f = (float)w;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    const int32_t b = (int32_t)(bits >> 20) - 1015; /* exponent and 3 mantissa bits */
    return b < 0 ? 0 : b;
}

static int64_t draw_position(int64_t total, double uniform) {
    int64_t r = (int64_t)(uniform * (double)total);
    return r >= total ? total - 1 : r; /* u * W may round up to W when W > 2**52 */
}

/* Draws from a list in id order. */
static int32_t draw_list(const ie_cand *c, int64_t n, int64_t total, double uniform) {
    const int64_t r = draw_position(total, uniform);
    int64_t cumulative = 0;
    for (int64_t j = 0; j < n; j++) {
        cumulative += c[j].w;
        if (cumulative > r) return c[j].id;
    }
    return -1; /* unreachable: the list weighs total > r */
}

/* Sorts the (few or equal-weight) boundary candidates and walks them to the target. */
static ie_cut final_cut(ie_cand *c, int64_t n, double target, int64_t above) {
    if (n <= IE_REFINE_MAX) ie_sort_by_weight(c, n); /* else all weigh the same, in id order */
    int64_t mass = above;
    for (int64_t j = 0; j < n; j++) {
        mass += c[j].w;
        if ((double)mass >= target) return (ie_cut){c[j].w, c[j].id, mass};
    }
    return (ie_cut){c[n - 1].w, c[n - 1].id, mass}; /* unreachable: the walk reaches target */
}

/* Narrows boundary candidates by linear sub-buckets of their weight range until few remain or
 * all weigh the same, adding the mass of heavier sub-buckets to *above; keeps id order. */
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

/* The bucket where the cumulative mass, heaviest bucket first, reaches target. */
static int32_t boundary_bucket(const uint64_t mass[IE_BUCKETS], double target, int64_t *above) {
    int32_t b = IE_BUCKETS - 1;
    for (; b > 1; b--) {
        if ((double)(*above + (int64_t)mass[b]) >= target) break;
        *above += (int64_t)mass[b];
    }
    return b;
}

/* The cut among listed tokens (ids into w) that hold the target mass; tmp has room for n. */
static ie_cut cut_in_list(const int32_t *w, const int32_t *ids, int64_t n, double target,
                          ie_cand *tmp) {
    uint64_t mass[IE_BUCKETS] = {0};
    for (int64_t j = 0; j < n; j++) mass[bucket_of(w[ids[j]])] += (uint64_t)w[ids[j]];
    int64_t above = 0;
    const int32_t b = boundary_bucket(mass, target, &above);
    int64_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        const int32_t wj = w[ids[j]];
        if (bucket_of(wj) == b) tmp[m++] = (ie_cand){.id = ids[j], .w = wj};
    }
    m = refine_boundary(tmp, m, target, &above);
    return final_cut(tmp, m, target, above);
}

static inline int kept(int32_t w, int32_t id, ie_cut cut) {
    return w > cut.w_star || (w == cut.w_star && id <= cut.id_cut);
}

/* The maximum of x = logits * inv_t (read only); rejects NaN and +inf. Four independent
 * running maxima keep the compare-select chain off the critical path. */
static ie_status row_max(const float *logits, int64_t vocab, float inv_t, float *x_max) {
    ie_vf best[4];
    ie_vi nan = ie_splati(0);
    for (int k = 0; k < 4; k++) best[k] = ie_splatf(-INFINITY);
    int64_t i = 0;
    for (; i + 4 * IE_LANES <= vocab; i += 4 * IE_LANES) {
        for (int k = 0; k < 4; k++) {
            const ie_vf x = ie_loadf(logits + i + k * IE_LANES) * inv_t;
            best[k] = ie_maxf(x, best[k]);
            nan |= x != x;
        }
    }
    for (; i < vocab; i += IE_LANES) {
        const ie_vf x = load_tail(logits + i, vocab - i) * inv_t;
        best[0] = ie_maxf(x, best[0]);
        nan |= x != x;
    }
    float top = -INFINITY;
    for (int k = 0; k < 4; k++) {
        for (int l = 0; l < IE_LANES; l++) top = best[k][l] > top ? best[k][l] : top;
    }
    if (ie_any(nan) || top == INFINITY) return IE_ERR_NONFINITE; /* +inf would be the maximum */
    if (top == -INFINITY) return IE_ERR_NO_CANDIDATE;
    *x_max = top;
    return IE_OK;
}

/* Stores all weights in w[0, vpad) (zero past vocab) and returns W; scales logits in place when
 * `store` (top-p rewrites the row anyway, so it skips that store stream). */
static int64_t scale_and_weigh(float *logits, int64_t vocab, float inv_t, float x_max, int32_t *w,
                               int store) {
    const int64_t vpad = (vocab + IE_PAD - 1) / IE_PAD * IE_PAD;
    const int64_t body = vocab / IE_LANES * IE_LANES;
    const ie_vf zero_below = ie_splatf(IE_ZERO_WEIGHT_D);
    ie_acc acc = {ie_splati(0), ie_splati(0)};
    int64_t total = 0;
    for (int64_t start = 0; start < body; start += IE_CHUNK * IE_LANES) {
        const int64_t end = start + IE_CHUNK * IE_LANES < body ? start + IE_CHUNK * IE_LANES : body;
        for (int64_t i = start; i < end; i += IE_LANES) {
            const ie_vf x = ie_loadf(logits + i) * inv_t;
            if (store) ie_storef(logits + i, x);
            if (!ie_any(x - x_max >= zero_below)) { /* most of a real vocabulary */
                ie_storei(w + i, ie_splati(0));
                continue;
            }
            const ie_vi wi = ie_weights_v(x, x_max);
            ie_storei(w + i, wi);
            acc_add(&acc, wi);
        }
        total += acc_take(&acc);
    }
    for (int64_t i = body; i < vpad; i += IE_LANES) { /* tail and padding: -inf weighs 0 */
        const ie_vf x = load_tail(logits + i, vocab - i) * inv_t;
        for (int64_t l = 0; store && i + l < vocab; l++) logits[i + l] = x[l];
        const ie_vi wi = ie_weights_v(x, x_max);
        ie_storei(w + i, wi);
        acc_add(&acc, wi);
    }
    return total + acc_take(&acc);
}

/* Positions of the set bits of a 4-bit mask, and how many there are (left-packing table). */
static const int32_t set_lanes[16][4] = {
    {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0},
    {1, 2, 0, 0}, {0, 1, 2, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
    {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3},
};
static const int32_t set_count[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

/* Lists the ids of heavy tokens (id order) into ids, which needs 4 entries of slack past the
 * row; returns their total weight. Branch-free: a lane mask per vector indexes a left-packing
 * table, so the unpredictable placement of heavy tokens costs no mispredictions. */
static int64_t list_heavy(const int32_t *w, int64_t vocab, int32_t *ids, int64_t *n_out) {
    const int64_t vpad = (vocab + IE_PAD - 1) / IE_PAD * IE_PAD;
    const ie_vi heavy = ie_splati(IE_HEAVY - 1);
    ie_acc acc = {ie_splati(0), ie_splati(0)};
    int64_t listed = 0, n = 0;
    for (int64_t start = 0; start < vpad; start += IE_CHUNK * IE_LANES) {
        const int64_t end = start + IE_CHUNK * IE_LANES < vpad ? start + IE_CHUNK * IE_LANES : vpad;
        for (int64_t i = start; i < end; i += IE_LANES) { /* w is zero-padded past vocab */
            const ie_vi wv = ie_loadi(w + i), take = wv > heavy;
            acc_add(&acc, wv & take);
            const unsigned mask = ie_movemask(take);
            for (int h = 0; h < IE_LANES; h += 4) {
                const unsigned nibble = (mask >> h) & 15u;
                for (int q = 0; q < 4; q++) ids[n + q] = (int32_t)i + h + set_lanes[nibble][q];
                n += set_count[nibble];
            }
        }
        listed += acc_take(&acc);
    }
    *n_out = n;
    return listed;
}

/* Top-p among the listed heavy tokens: cut, write the row (-inf but the kept x), draw. The row
 * still holds unscaled logits. */
static int32_t sample_listed(float *logits, int64_t vocab, float inv_t, const int32_t *w,
                             const int32_t *ids, int64_t n, double target, double uniform,
                             ie_cand *c) {
    const ie_cut cut = cut_in_list(w, ids, n, target, c);
    int64_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        const int32_t id = ids[j];
        if (kept(w[id], id, cut)) c[m++] = (ie_cand){.x = logits[id] * inv_t, .id = id, .w = w[id]};
    }
    const ie_vf neg_inf = ie_splatf(-INFINITY);
    int64_t i = 0;
    for (; i + IE_LANES <= vocab; i += IE_LANES) ie_storef(logits + i, neg_inf);
    for (; i < vocab; i++) logits[i] = -INFINITY;
    for (int64_t j = 0; j < m; j++) logits[c[j].id] = c[j].x;
    return draw_list(c, m, cut.mass, uniform);
}

/* Level 1 of the whole-row cut: the boundary bucket's tokens into c, in id order. */
static int64_t gather_boundary(const int32_t *w, int64_t vpad, double target, int64_t *above,
                               ie_cand *c) {
    uint64_t mass[4][IE_BUCKETS] = {{0}}; /* four copies break store-to-load chains on hot bins */
    for (int64_t i = 0; i < vpad; i++) mass[i & 3][bucket_of(w[i])] += (uint64_t)w[i];
    for (int b = 0; b < IE_BUCKETS; b++) mass[0][b] += mass[1][b] + mass[2][b] + mass[3][b];
    const int32_t bucket = boundary_bucket(mass[0], target, above);
    int64_t n = 0;
    for (int64_t i = 0; i < vpad; i++) {
        if (w[i] > 0 && bucket_of(w[i]) == bucket) c[n++] = (ie_cand){.id = (int32_t)i, .w = w[i]};
    }
    return n;
}

/* Top-p over the whole row when the heavy tokens do not hold the target mass; scales the kept
 * logits (the row still holds unscaled ones) and writes -inf to the rest. */
static ie_cut cut_row(float *logits, int32_t *w, int64_t vocab, float inv_t, double target,
                      ie_cand *c) {
    const int64_t vpad = (vocab + IE_PAD - 1) / IE_PAD * IE_PAD;
    int64_t above = 0;
    int64_t n = gather_boundary(w, vpad, target, &above, c);
    n = refine_boundary(c, n, target, &above);
    const ie_cut cut = final_cut(c, n, target, above);
    for (int64_t i = 0; i < vocab; i++) {
        if (kept(w[i], (int32_t)i, cut)) {
            logits[i] *= inv_t;
        } else {
            w[i] = 0;
            logits[i] = -INFINITY;
        }
    }
    return cut;
}

static int32_t draw_row(const int32_t *w, int64_t vpad, int64_t total, double uniform) {
    const int64_t r = draw_position(total, uniform);
    ie_acc acc = {ie_splati(0), ie_splati(0)};
    int64_t cumulative = 0, i = 0;
    for (; i + 4 * IE_LANES <= vpad; i += 4 * IE_LANES) {
        for (int v = 0; v < 4; v++) acc_add(&acc, ie_loadi(w + i + v * IE_LANES));
        const int64_t block = acc_take(&acc);
        if (cumulative + block > r) break;
        cumulative += block;
    }
    for (; i < vpad; i++) {
        cumulative += w[i];
        if (cumulative > r) return (int32_t)i;
    }
    return -1; /* unreachable: the weights sum to total > r */
}

/* w: 2 * vpad + IE_PAD int32 (weights, then ids); c: vocab candidates. */
ie_status IE_ISA(ie_sample_row)(float *logits, int64_t vocab, float inv_t, double top_p,
                                double uniform, int32_t *w, ie_cand *c, int32_t *token) {
    float x_max = 0.0f;
    ie_status status = row_max(logits, vocab, inv_t, &x_max);
    if (status != IE_OK) return status;
    const int64_t vpad = (vocab + IE_PAD - 1) / IE_PAD * IE_PAD;
    const int64_t total = scale_and_weigh(logits, vocab, inv_t, x_max, w, top_p >= 1.0);
    int32_t id = -1;
    if (top_p >= 1.0) {
        id = draw_row(w, vpad, total, uniform);
    } else {
        const double target = top_p * (double)total;
        int64_t n = 0;
        int32_t *ids = w + vpad;
        const int64_t listed = list_heavy(w, vocab, ids, &n);
        if ((double)listed >= target) {
            id = sample_listed(logits, vocab, inv_t, w, ids, n, target, uniform, c);
        } else {
            id = draw_row(w, vpad, cut_row(logits, w, vocab, inv_t, target, c).mass, uniform);
        }
    }
    if (id < 0) return IE_ERR_NO_CANDIDATE;
    *token = id;
    return IE_OK;
}

static int64_t candidate_weights(ie_cand *c, int64_t n) {
    float x_max = -INFINITY;
    for (int64_t j = 0; j < n; j++) x_max = c[j].x > x_max ? c[j].x : x_max;
    int64_t total = 0;
    for (int64_t j = 0; j < n; j += IE_LANES) {
        ie_vf x = ie_splatf(-INFINITY);
        for (int l = 0; l < IE_LANES && j + l < n; l++) x[l] = c[j + l].x;
        const ie_vi wi = ie_weights_v(x, x_max);
        for (int l = 0; l < IE_LANES && j + l < n; l++) {
            c[j + l].w = wi[l];
            total += wi[l];
        }
    }
    return total;
}

ie_status IE_ISA(ie_sample_candidates)(float *logits, ie_cand *c, int64_t n, double top_p,
                                       double uniform, int32_t *token) {
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
    const int32_t id = draw_list(c, n, total, uniform);
    if (id < 0) return IE_ERR_NO_CANDIDATE;
    *token = id;
    return IE_OK;
}
