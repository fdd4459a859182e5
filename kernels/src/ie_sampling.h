/*
 * ie_sampling.h - the native sampling chain over contiguous buffers (no Python here).
 *
 * Implements exactly the specification in kernels/_reference.py (read that first): the same
 * stage order, the same float32 operations in the same order, and integer probability weights,
 * so that for the same inputs and uniform draw both return the same token id and leave
 * bit-identical logits.
 *
 * Stage order: allowed-token mask -> stop-id mask -> repetition penalty -> presence/frequency
 * penalties -> temperature (greedy argmax when `greedy`) -> top-k -> top-p -> draw.
 *
 * Nothing here allocates: the caller passes a workspace of ie_workspace_bytes(vocab) bytes, which
 * must not be shared between concurrent calls. Callers validate arguments (ids in range, uniform
 * in [0, 1), vocab <= IE_MAX_VOCAB); the C code re-checks only what would corrupt memory.
 */
#ifndef IE_SAMPLING_H
#define IE_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#define IE_WEIGHT_BITS 30
#define IE_MAX_VOCAB (INT64_C(1) << 23)

typedef struct ie_params {
    double temperature;        /* > 0 unless greedy; logits are multiplied by float(1/t) */
    double top_p;              /* (0, 1]; 1 = off */
    double repetition_penalty; /* > 0; 1 = off */
    double presence_penalty;   /* 0 = off */
    double frequency_penalty;  /* 0 = off */
    int64_t top_k;             /* <= 0 or >= vocab = off */
    int greedy;                /* nonzero: argmax after the penalties, later stages skipped */
    int mask_active;           /* nonzero: the mask ids are set to -inf first (min_tokens) */
    /* NULL: every token is allowed. Else a bitmask of (vocab + 31) / 32 words in llguidance's
     * layout: bit i % 32 of word i / 32 allows token i (bits at or past vocab are ignored);
     * every disallowed logit is set to -inf before any other stage. */
    const uint32_t *allowed;
} ie_params;

/* A sequence's history: distinct ids for the repetition penalty, and distinct generated ids with
 * their counts for presence/frequency. Only these tokens are touched by the penalty stages. */
typedef struct ie_history {
    const int32_t *rep_ids;
    int64_t n_rep;
    const int32_t *gen_ids;
    const int32_t *gen_counts;
    int64_t n_gen;
} ie_history;

typedef enum ie_status {
    IE_OK = 0,
    IE_ERR_NO_CANDIDATE = 1, /* every logit is -inf after the mask and penalties */
    IE_ERR_NONFINITE = 2,    /* a logit is NaN or +inf after penalties and temperature */
    IE_ERR_BAD_ID = 3,       /* a history or mask id outside [0, vocab) */
    IE_ERR_BAD_ARG = 4,      /* vocab or workspace out of range */
    IE_ERR_EMPTY_MASK = 5    /* the allowed-token mask allows no token of the vocabulary */
} ie_status;

/* The instruction set the chain runs with: "avx2", "sse2", "neon" or "generic". */
const char *ie_isa(void);

/* Selects the instruction set by name (NULL: the best available); 0 on success, -1 when this
 * build or CPU lacks it. Results never depend on it. Not thread-safe: call before sampling. */
int ie_select_isa(const char *name);

/* Bytes of workspace one call needs for this vocabulary size (rows of a batch reuse it). */
size_t ie_workspace_bytes(int64_t vocab);

/* Samples one token from logits[vocab] (modified in place, see docs/sampling.md). */
ie_status ie_sample(float *logits, int64_t vocab, const ie_params *params,
                    const ie_history *history, const int32_t *mask_ids, int64_t n_mask,
                    double uniform, void *workspace, size_t workspace_bytes, int32_t *token);

/* The first stages of ie_sample only: allowed-token mask, stop-id mask, penalties and, unless
 * greedy, temperature, in place; no top-k, top-p or draw (the logits a log-probability is taken
 * from, docs/sampling.md). Needs no workspace. */
ie_status ie_process(float *logits, int64_t vocab, const ie_params *params,
                     const ie_history *history, const int32_t *mask_ids, int64_t n_mask);

/* Samples each row of logits[batch][vocab] with its own params, history and uniform. On error,
 * *failed_row names the row and the returned status says why; earlier rows are done. */
ie_status ie_sample_batch(float *logits, int64_t batch, int64_t vocab, const ie_params *params,
                          const ie_history *histories, const int32_t *mask_ids, int64_t n_mask,
                          const double *uniforms, void *workspace, size_t workspace_bytes,
                          int32_t *tokens, int64_t *failed_row);

#endif /* IE_SAMPLING_H */
