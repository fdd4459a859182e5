/*
 * ie_select.c - ordering candidates: partial selection for top-k and sorts for top-p and the draw.
 *
 * Every order is total (ties on the key fall back to the token id, which is unique), so the
 * result never depends on the algorithm: quickselect and quicksort here give exactly the order of
 * the reference's stable argsort.
 */
#include "ie_internal.h"

#define IE_INSERTION_MAX 16

#define IE_BEFORE_LOGIT(a, b) ((a).x > (b).x || ((a).x == (b).x && (a).id < (b).id))
#define IE_BEFORE_WEIGHT(a, b) ((a).w > (b).w || ((a).w == (b).w && (a).id < (b).id))
#define IE_BEFORE_ID(a, b) ((a).id < (b).id)

static inline void ie_swap(ie_cand *a, ie_cand *b) {
    ie_cand t = *a;
    *a = *b;
    *b = t;
}

/* Defines insertion sort, median-of-three Lomuto partition and introsort-free quicksort for one
 * order. Keys are unique, so partitions never degenerate on duplicates; recursion goes into the
 * smaller side, bounding the stack at O(log n). */
#define IE_DEFINE_ORDER(name, BEFORE)                                                          \
    static void insertion_##name(ie_cand *c, int64_t n) {                                      \
        for (int64_t i = 1; i < n; i++) {                                                      \
            ie_cand t = c[i];                                                                  \
            int64_t j = i;                                                                     \
            while (j > 0 && BEFORE(t, c[j - 1])) {                                             \
                c[j] = c[j - 1];                                                               \
                j--;                                                                           \
            }                                                                                  \
            c[j] = t;                                                                          \
        }                                                                                      \
    }                                                                                          \
    static int64_t partition_##name(ie_cand *c, int64_t n) {                                   \
        int64_t mid = n / 2, last = n - 1;                                                     \
        if (BEFORE(c[mid], c[0])) ie_swap(&c[mid], &c[0]);                                     \
        if (BEFORE(c[last], c[0])) ie_swap(&c[last], &c[0]);                                   \
        if (BEFORE(c[mid], c[last])) ie_swap(&c[mid], &c[last]);                               \
        const ie_cand pivot = c[last];                                                         \
        int64_t store = 0;                                                                     \
        for (int64_t i = 0; i < last; i++) {                                                   \
            if (BEFORE(c[i], pivot)) ie_swap(&c[i], &c[store++]);                              \
        }                                                                                      \
        ie_swap(&c[store], &c[last]);                                                          \
        return store;                                                                          \
    }                                                                                          \
    __attribute__((unused)) static void quicksort_##name(ie_cand *c, int64_t n) {                                      \
        while (n > IE_INSERTION_MAX) {                                                         \
            int64_t p = partition_##name(c, n);                                                \
            if (p < n - 1 - p) {                                                               \
                quicksort_##name(c, p);                                                        \
                c += p + 1;                                                                    \
                n -= p + 1;                                                                    \
            } else {                                                                           \
                quicksort_##name(c + p + 1, n - p - 1);                                        \
                n = p;                                                                         \
            }                                                                                  \
        }                                                                                      \
        insertion_##name(c, n);                                                                \
    }

IE_DEFINE_ORDER(logit, IE_BEFORE_LOGIT)
IE_DEFINE_ORDER(weight, IE_BEFORE_WEIGHT)
IE_DEFINE_ORDER(id, IE_BEFORE_ID)

void ie_nth_by_logit(ie_cand *c, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n;
    while (hi - lo > IE_INSERTION_MAX) {
        int64_t p = lo + partition_logit(c + lo, hi - lo);
        if (p == k || p == k - 1) return; /* [0, k) are exactly the top k */
        if (p > k) {
            hi = p;
        } else {
            lo = p + 1;
        }
    }
    insertion_logit(c + lo, hi - lo);
}

void ie_sort_by_weight(ie_cand *c, int64_t n) { quicksort_weight(c, n); }

void ie_sort_by_id(ie_cand *c, int64_t n) { quicksort_id(c, n); }
