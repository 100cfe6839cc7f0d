/* The per-row work of the chunked statistics kernel (interp/kernels/chunked.py, loaded by native.py), CPU only.
   Written with GCC/Clang vector extensions: 16 floats per vector, which the compiler maps to one
   AVX-512 register, two AVX2 ones or four NEON ones. */
#include <stdint.h>
#include <string.h>
#include <math.h>

#define W 16
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return (vf){0} + x; }
static inline vf select_f(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline float hsum(vf v) { float s = 0.0f; for (int l = 0; l < W; l++) s += v[l]; return s; }

/* exp(x) for x <= 0: Cephes' expf polynomial on r = x - n ln2 (|r| <= ln2 / 2), times 2^n built from
   its bits. exp(0) is exactly 1; x < -87 gives exactly 0 (exp is subnormal or 0 there). */
static inline vf exp_nonpositive(vf x) {
    vi tiny = x < splat(-87.0f);
    vf xc = select_f(tiny, splat(-87.0f), x);
    const vf magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    vf n = (xc * splat(1.44269504088896341f) + magic) - magic;
    vf r = xc - n * splat(0.693359375f) + n * splat(2.12194440e-4f);
    vf p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    p = p * r * r + r + splat(1.0f);
    vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
    return select_f(tiny, splat(0.0f), p * (vf)bits);
}

static inline float exp_nonpositive1(float x) {
    float lanes[W] = {x};
    vf v = exp_nonpositive(load(lanes));
    return v[0];
}

/* Where each statistic of one row goes: arrays [heads, n_query] (sink_mass: [heads, n_query, n_sink]);
   NULL for one not requested. */
typedef struct {
    float *lse, *entropy, *max_prob, *diag_mass, *prev_mass, *window_mass, *sink_mass, *learned_sink;
    int64_t *argmax;
    const float *sink_logits; /* [n_heads] learned sink logits (gpt_oss), or NULL */
} Outputs;

/* log(sigmoid(x)), accurate for large |x| of either sign. */
static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* One chunk of the chunked kernel after its score product: `rows` rows of `span` scores (row r at
   scores + r * span), c = rows_per_head consecutive queries per head (heads ordered as the outputs'),
   the first at query index `start`. Row r's query sits at key column diag0 + r % c (of the span, which
   starts at absolute key key_lo); keys after it are hidden here (causality), other hidden keys hold a
   huge negative score. Each row becomes its attention pattern in place (0 on hidden keys), and its
   statistics are written straight to their places; received [heads, n_key] (or NULL) gets the column sums. A row with nothing visible (its maximum below
   -1e37) gets lse -inf, argmax -1, the sink's whole mass if it has one, and 0 for everything else. */
void attention_rows(float *scores, int64_t rows, int64_t span, int64_t rows_per_head, int64_t diag0,
                    int64_t start, int64_t n_query, int64_t key_lo, int64_t n_key, int64_t n_heads,
                    int64_t window, int64_t n_sink, Outputs out, float *received) {
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int64_t r = 0; r < rows; r++) {
        float *s = scores + r * span;
        int64_t head = r / rows_per_head, i = r % rows_per_head;
        int64_t diag = diag0 + i, n = diag + 1, full = n - n % W;
        int64_t at_out = head * n_query + start + i;
        for (int64_t j = n; j < span; j++) s[j] = 0.0f;

        /* Pass 1: the maximum and its first index. */
        vf best = splat(-INFINITY);
        vi where = lane;
        for (int64_t j = 0; j < full; j += W) {
            vf v = load(s + j);
            vi gt = v > best;
            best = select_f(gt, v, best);
            where = (gt & (lane + (int32_t)j)) | (~gt & where);
        }
        float m = -INFINITY;
        int64_t at = 0;
        for (int l = 0; l < W; l++) { /* ties: the lowest index */
            if (best[l] > m || (best[l] == m && where[l] < at)) { m = best[l]; at = where[l]; }
        }
        for (int64_t j = full; j < n; j++) {
            if (s[j] > m) { m = s[j]; at = j; }
        }

        /* Pass 2: s -> exp(s - m); z = sum exp(s - m), t = sum exp(s - m) (s - m). */
        vf zv = splat(0.0f), tv = splat(0.0f), mv = splat(m);
        for (int64_t j = 0; j < full; j += W) {
            vf x = load(s + j) - mv;
            vf e = exp_nonpositive(x);
            store(s + j, e);
            zv += e;
            tv += e * x;
        }
        float z = hsum(zv), t = hsum(tv);
        for (int64_t j = full; j < n; j++) {
            float x = s[j] - m, e = exp_nonpositive1(x);
            s[j] = e;
            z += e;
            t += e * x;
        }

        /* Relative to m: lse = m + log z, A[argmax] = 1 / z, entropy = log z - t / z (both terms >= 0). */
        /* A NaN score (non-finite activations upstream) must show in the statistics, as in torch. */
        int visible = m > -1e37f || isnan(z);
        float log_norm = logf(z), peak = 1.0f / z, entropy = log_norm - t / z, factor = peak;
        if (out.sink_logits) {
            /* The learned sink joins the denominator: the keys keep the share sigmoid(gap) of the mass. */
            float sink_share;
            if (visible) {
                double gap = (double)log_norm - ((double)out.sink_logits[head % n_heads] - m);
                double log_kept = log_sigmoid(gap), log_sink = log_sigmoid(-gap);
                double kept = exp(log_kept);
                sink_share = (float)exp(log_sink);
                /* x log x -> 0 as x -> 0 (a sink logit of -inf or +inf gives a share of 0 and a log of -inf). */
                entropy = (float)(kept * entropy - (kept > 0 ? kept * log_kept : 0.0) - (sink_share > 0 ? sink_share * log_sink : 0.0));
                log_norm = (float)(log_norm - log_kept);
                peak = (float)(peak * kept);
                factor = (float)(factor * kept);
            } else {
                sink_share = 1.0f;
            }
            out.learned_sink[at_out] = sink_share;
        }
        if (!visible) factor = 0.0f;
        out.lse[at_out] = visible ? m + log_norm : -INFINITY;
        out.entropy[at_out] = visible ? entropy : 0.0f;
        out.max_prob[at_out] = visible ? peak : 0.0f;
        out.argmax[at_out] = visible ? key_lo + at : -1;

        /* Pass 3: normalize, and add the row to its head's column sums. */
        vf fv = splat(factor);
        float *c = received ? received + head * n_key + key_lo : NULL;
        for (int64_t j = 0; j < full; j += W) {
            vf p = load(s + j) * fv;
            store(s + j, p);
            if (c) store(c + j, load(c + j) + p);
        }
        for (int64_t j = full; j < n; j++) {
            s[j] *= factor;
            if (c) c[j] += s[j];
        }

        /* Masses on a few keys: the diagonal, the previous key, the recent window and the sinks. */
        out.diag_mass[at_out] = s[diag];
        out.prev_mass[at_out] = diag > 0 ? s[diag - 1] : 0.0f;
        if (out.window_mass) {
            float w = 0.0f;
            for (int64_t j = diag - window + 1 < 0 ? 0 : diag - window + 1; j <= diag; j++) w += s[j];
            out.window_mass[at_out] = w;
        }
        if (out.sink_mass) {
            for (int64_t k = 0; k < n_sink; k++) {
                int64_t j = k - key_lo;
                out.sink_mass[at_out * n_sink + k] = j >= 0 && j < n ? s[j] : 0.0f;
            }
        }
    }
}
