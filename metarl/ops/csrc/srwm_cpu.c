/* SRWM step loop on the CPU: forward and reverting backward of the fused form (see metarl/ops/srwm.py).
 *
 * Per sequence-head n (independent, one thread: the work per step is tiny), with W = [Wy | Wq | Wk | wb], W: [D, Dtot],
 * Dtot = Dy + 2D + 4, and e_t the column-wise learning rate (b_t[i] on the columns of matrix i):
 *   z = x_t W;  y_t = z[:Dy];  q = softmax(z[Dy:Dy+D]);  k = softmax(z[Dy+D:Dy+2D]);  b = sigmoid(z[Dy+2D:])
 *   r = (q - k) W;  W += kᵀ ⊗ (e ⊙ r)
 * The backward pass reverts W_{t-1} = W_t - kᵀ ⊗ (e ⊙ r) from the stored q, k, b, r.
 *
 * Resets (reset: [N, T] bytes, or NULL): where reset[n, t] is set, W of row n becomes Wr[n] before step t.
 * The state it held then cannot be recovered by reverting, so the forward pass copies it into
 * saved[first[n] + j] (the j-th reset of row n: only the rows and steps that reset take memory), and the
 * backward pass, once back at step t, moves the gradient of W into dWr[n] (the state before the reset
 * gets none) and puts the saved state back.
 * Built twice, for float (suffix _f32) and double (suffix _f64).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_OF(j) ((j) < Dy ? 0 : (j) < Dy + D ? 1 : (j) < Dy + 2 * D ? 2 : 3)

#define DEFINE_SRWM(real, suffix, EXP)                                                                 \
static void softmax_##suffix(const real *z, real *out, long n) {                                       \
    real m = z[0];                                                                                     \
    for (long i = 1; i < n; i++) if (z[i] > m) m = z[i];                                               \
    real s = 0;                                                                                        \
    for (long i = 0; i < n; i++) { out[i] = EXP(z[i] - m); s += out[i]; }                              \
    for (long i = 0; i < n; i++) out[i] /= s;                                                          \
}                                                                                                      \
                                                                                                       \
void srwm_forward_##suffix(long N, long T, long D, long Dy,                                            \
                           const real *x, real *W, real *y, real *qs, real *ks, real *bs, real *rs,    \
                           const unsigned char *reset, const real *Wr, const int64_t *first,           \
                           real *saved) {                                                              \
    const long Dtot = Dy + 2 * D + 4, size = D * Dtot;                                                 \
    for (long n = 0; n < N; n++) {                                                                     \
        real *Wn = W + n * size;                                                                       \
        real *z = (real *)malloc(sizeof(real) * (2 * Dtot + D));                                       \
        real *P = z + Dtot, *diff = P + Dtot;                                                          \
        int64_t slot = reset ? first[n] : 0;                                                           \
        for (long t = 0; t < T; t++) {                                                                 \
            if (reset && reset[n * T + t]) {                 /* row n starts over before step t */     \
                memcpy(saved + slot * size, Wn, sizeof(real) * size);                                  \
                slot++;                                                                                \
                memcpy(Wn, Wr + n * size, sizeof(real) * size);                                        \
            }                                                                                          \
            const real *xt = x + (n * T + t) * D;                                                      \
            real *q = qs + (n * T + t) * D, *k = ks + (n * T + t) * D;                                 \
            real *b = bs + (n * T + t) * 4, *r = rs + (n * T + t) * Dtot;                              \
            for (long j = 0; j < Dtot; j++) z[j] = 0;                                                  \
            for (long d = 0; d < D; d++) {                                                             \
                const real xd = xt[d], *row = Wn + d * Dtot;                                           \
                for (long j = 0; j < Dtot; j++) z[j] += xd * row[j];                                   \
            }                                                                                          \
            memcpy(y + (n * T + t) * Dy, z, sizeof(real) * Dy);                                        \
            softmax_##suffix(z + Dy, q, D);                                                            \
            softmax_##suffix(z + Dy + D, k, D);                                                        \
            for (long i = 0; i < 4; i++) b[i] = 1 / (1 + EXP(-z[Dy + 2 * D + i]));                     \
            for (long d = 0; d < D; d++) diff[d] = q[d] - k[d];                                        \
            for (long j = 0; j < Dtot; j++) r[j] = 0;                                                  \
            for (long d = 0; d < D; d++) {                                                             \
                const real dd = diff[d], *row = Wn + d * Dtot;                                         \
                for (long j = 0; j < Dtot; j++) r[j] += dd * row[j];                                   \
            }                                                                                          \
            for (long j = 0; j < Dtot; j++) P[j] = b[BLOCK_OF(j)] * r[j];                              \
            for (long d = 0; d < D; d++) {                                                             \
                const real kd = k[d]; real *row = Wn + d * Dtot;                                       \
                for (long j = 0; j < Dtot; j++) row[j] += kd * P[j];                                   \
            }                                                                                          \
        }                                                                                              \
        free(z);                                                                                       \
    }                                                                                                  \
}                                                                                                      \
                                                                                                       \
void srwm_backward_##suffix(long N, long T, long D, long Dy,                                           \
                            const real *x, real *W, const real *qs, const real *ks, const real *bs,    \
                            const real *rs, const real *gy, real *G, real *dx,                         \
                            const unsigned char *reset, const int64_t *first, const real *saved,       \
                            real *dWr) {                                                               \
    const long Dtot = Dy + 2 * D + 4, size = D * Dtot;                                                 \
    for (long n = 0; n < N; n++) {                                                                     \
        real *Wn = W + n * size, *Gn = G + n * size;                                                   \
        int64_t slot = 0;                                      /*  the slot of the row's last reset */ \
        if (reset) {                                                                                   \
            slot = first[n] - 1;                                                                       \
            for (long t = 0; t < T; t++) slot += reset[n * T + t];                                     \
        }                                                                                              \
        real *buf = (real *)malloc(sizeof(real) * (4 * Dtot + 4 * D));                                 \
        real *P = buf, *dP = P + Dtot, *dr = dP + Dtot, *dz = dr + Dtot;                               \
        real *dk = dz + Dtot, *dd = dk + D, *diff = dd + D, *dq = diff + D;                            \
        for (long t = T - 1; t >= 0; t--) {                                                            \
            const real *xt = x + (n * T + t) * D;                                                      \
            const real *q = qs + (n * T + t) * D, *k = ks + (n * T + t) * D;                           \
            const real *b = bs + (n * T + t) * 4, *r = rs + (n * T + t) * Dtot;                        \
            real db[4] = {0, 0, 0, 0};                                                                 \
            for (long j = 0; j < Dtot; j++) { P[j] = b[BLOCK_OF(j)] * r[j]; dP[j] = 0; }               \
            for (long d = 0; d < D; d++) {                                                             \
                const real kd = k[d]; real *row = Wn + d * Dtot; const real *grow = Gn + d * Dtot;     \
                real acc = 0;                                                                          \
                for (long j = 0; j < Dtot; j++) {                                                      \
                    row[j] -= kd * P[j];           /* revert: W is now W_{t-1} */                      \
                    dP[j] += kd * grow[j];                                                             \
                    acc += grow[j] * P[j];                                                             \
                }                                                                                      \
                dk[d] = acc;                                                                           \
                diff[d] = q[d] - k[d];                                                                 \
            }                                                                                          \
            for (long j = 0; j < Dtot; j++) {                                                          \
                const long blk = BLOCK_OF(j);                                                          \
                dr[j] = dP[j] * b[blk];                                                                \
                db[blk] += dP[j] * r[j];                                                               \
            }                                                                                          \
            real sq = 0, sk = 0;                                                                       \
            for (long d = 0; d < D; d++) {                                                             \
                const real *row = Wn + d * Dtot; real acc = 0;                                         \
                for (long j = 0; j < Dtot; j++) acc += dr[j] * row[j];                                 \
                dd[d] = acc;                                                                           \
                dq[d] = acc;                                                                           \
                dk[d] -= acc;                                                                          \
                sq += dq[d] * q[d];                                                                    \
                sk += dk[d] * k[d];                                                                    \
            }                                                                                          \
            memcpy(dz, gy + (n * T + t) * Dy, sizeof(real) * Dy);                                      \
            for (long d = 0; d < D; d++) {                                                             \
                dz[Dy + d] = q[d] * (dq[d] - sq);                                                      \
                dz[Dy + D + d] = k[d] * (dk[d] - sk);                                                  \
            }                                                                                          \
            for (long i = 0; i < 4; i++) dz[Dy + 2 * D + i] = db[i] * b[i] * (1 - b[i]);               \
            real *dxt = dx + (n * T + t) * D;                                                          \
            for (long d = 0; d < D; d++) {                                                             \
                const real *row = Wn + d * Dtot; real *grow = Gn + d * Dtot; real acc = 0;             \
                const real dfd = diff[d], xd = xt[d];                                                  \
                for (long j = 0; j < Dtot; j++) {                                                      \
                    acc += dz[j] * row[j];                                                             \
                    grow[j] += dfd * dr[j] + xd * dz[j];                                               \
                }                                                                                      \
                dxt[d] = acc;                                                                          \
            }                                                                                          \
            if (reset && reset[n * T + t]) {     /* W_{t-1} was Wr[n]: its gradient goes there */      \
                real *dWrn = dWr + n * size;                                                           \
                for (long j = 0; j < size; j++) { dWrn[j] += Gn[j]; Gn[j] = 0; }                       \
                memcpy(Wn, saved + slot * size, sizeof(real) * size);                                  \
                slot--;                                                                                \
            }                                                                                          \
        }                                                                                              \
        free(buf);                                                                                     \
    }                                                                                                  \
}

DEFINE_SRWM(float, f32, expf)
DEFINE_SRWM(double, f64, exp)
