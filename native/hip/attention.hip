// attention.hip: the Qwen2 teacher's attention core (src/Arwkv.Core/Training/Layers/Attention.cs and
// Layers/Qwen2Attention.cs are the CPU references), on q, k, v already projected with their biases added.
//
// RoPE (Hugging Face's rotate_half): per head, with h = D/2 and the host's cos/sin tables [P, h] (built as
// Attention.RotaryTables / Qwen2Attention.RotaryTables build them: float32 angle position * inv_freq, theta from the
// config), element i pairs with i + h, not with its neighbour:
//     x'[i] = x[i] cos - x[i+h] sin,   x'[i+h] = x[i+h] cos + x[i] sin.
// Its backward is the transpose of the rotation: dx[i] += g[i] cos + g[i+h] sin, dx[i+h] += g[i+h] cos - g[i] sin.
//
// Attention, causal and grouped (query head h reads kv head h / (H/KV)), scale 1/sqrt(D):
//     S = scale q k^T,  P = softmax(S) over the visible keys s <= t,  O = P v,  lse_t = log sum_s exp(S_ts).
// FlashAttention-2's algorithm: a block owns 16 query rows of one head and walks the keys in tiles of 32 (16 at
// D = 128) with an online softmax (running max m and sum l per row; when m grows, l and the output accumulator are
// rescaled by exp(m_old - m_new)), so no T x T matrix exists anywhere. Tiles past the block's last row are never
// visited.
// Backward, with D_t = rowsum(dO_t * O_t) precomputed and P rebuilt exactly as exp(S - lse):
//     dV = P^T dO,  dP = dO V^T,  dS = P (dP - D),  dQ = scale dS K,  dK = scale dS^T Q.
// Two kernels instead of FA2's one with atomic dQ: one block per (key tile, kv head) accumulates dK and dV over
// every query head of its group and every query tile that sees it; one block per (query tile, head) accumulates dQ.
// P is computed twice, but no atomics: the gradients do not depend on the order blocks run in.
// Padding: mask [B,T] (as wkv7's) marks valid tokens. A masked key is never attended; a masked query writes O = 0,
// lse = -inf and receives no gradient. Every valid query sees at least itself, so its softmax is never empty.
// Decode: one query per sequence against a KV cache, one block per (sequence, head) walking the cache in tiles of
// 128 keys with the same online softmax.
#include "common.h"

constexpr int kAttnRows = 16;                              // query rows per block (Br)
constexpr int kAttnThreads = 128;                          // a multiple of 64: whole warps at either warp size
constexpr int kRowThreads = kAttnThreads / kAttnRows;      // threads sharing one query row's output columns
constexpr int kDecodeKeys = 128;                           // decode: keys per tile, one per thread
constexpr int kRopeBlock = 256;

// Keys per tile (Bc): 32, or 16 at D = 128 so that the backward's tiles stay under 48 KB of static shared memory
// (CUDA's limit without opting in; AMD allows 64 KB).
__host__ __device__ constexpr int attn_keys(int D) { return D == 128 ? 16 : 32; }

__device__ inline int imin(int a, int b) { return a < b ? a : b; }

__device__ inline bool token_valid(const int32_t* mask, int64_t index) { return mask == nullptr || mask[index] != 0; }

// ---- RoPE ----------------------------------------------------------------------------------------------------------

// One thread per rotated pair. Position of token t of sequence b: t + start[b] (start NULL = 0); a position outside
// the table writes zeros (the kernel refuses to read out of bounds; the host owns the positions).
__global__ void rope_forward_kernel(float* out, const float* x, const float* cos_table, const float* sin_table,
                                    const int32_t* start, int T, int heads, int half, int P, int64_t pairs) {
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < pairs;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const int64_t vec = idx / half;  // (b*T + t)*heads + head
        const int64_t token = vec / heads;
        const int64_t position = token % T + (start != nullptr ? start[token / T] : 0);
        const float* xv = x + vec * 2 * half;
        float* ov = out + vec * 2 * half;
        if (position < 0 || position >= P) {
            ov[i] = 0.0f;
            ov[i + half] = 0.0f;
            continue;
        }
        const float c = cos_table[position * half + i], s = sin_table[position * half + i];
        const float a = xv[i], b = xv[i + half];  // both read before either is written: out may alias x
        ov[i] = a * c - b * s;
        ov[i + half] = b * c + a * s;
    }
}

__global__ void rope_backward_kernel(float* dx, const float* dout, const float* cos_table, const float* sin_table,
                                     const int32_t* start, int T, int heads, int half, int P, int64_t pairs) {
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < pairs;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const int64_t vec = idx / half;
        const int64_t token = vec / heads;
        const int64_t position = token % T + (start != nullptr ? start[token / T] : 0);
        if (position < 0 || position >= P) continue;
        const float c = cos_table[position * half + i], s = sin_table[position * half + i];
        const float ga = dout[vec * 2 * half + i], gb = dout[vec * 2 * half + i + half];
        dx[vec * 2 * half + i] += ga * c + gb * s;
        dx[vec * 2 * half + i + half] += gb * c - ga * s;
    }
}

// ---- forward -------------------------------------------------------------------------------------------------------

// Grid (B*H, query tiles), the tiles launched last-first so the longest (latest rows) start early.
// Thread layout: scores are strided over the block; the output accumulator of row r is shared by kRowThreads
// threads, each owning columns lane, lane + kRowThreads, ... in registers.
template <int D>
__global__ void __launch_bounds__(kAttnThreads)
attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* mask,
                         int T, int H, int KV, float scale) {
    constexpr int kKeys = attn_keys(D);
    constexpr int kCols = D / kRowThreads;
    __shared__ float q_s[kAttnRows][D];
    __shared__ float k_s[kKeys][D + 1];  // +1: the score loop reads k_s down a column across lanes
    __shared__ float v_s[kKeys][D];
    __shared__ float p_s[kAttnRows][kKeys];
    __shared__ float m_s[kAttnRows], l_s[kAttnRows], alpha_s[kAttnRows];
    __shared__ int row_valid_s[kAttnRows], key_valid_s[kKeys];

    const int bh = blockIdx.x;
    const int b = bh / H, h = bh % H, g = h / (H / KV);
    const int row0 = (gridDim.y - 1 - blockIdx.y) * kAttnRows;
    const int tid = threadIdx.x;
    const int my_row = tid / kRowThreads, my_lane = tid % kRowThreads;

    for (int e = tid; e < kAttnRows * D; e += kAttnThreads) {
        const int r = e / D, d = e % D, t = row0 + r;
        q_s[r][d] = t < T ? q[(((int64_t)b * T + t) * H + h) * D + d] : 0.0f;
    }
    if (tid < kAttnRows) {
        const int t = row0 + tid;
        row_valid_s[tid] = t < T && token_valid(mask, (int64_t)b * T + t);
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }
    float acc[kCols];
#pragma unroll
    for (int j = 0; j < kCols; j++) acc[j] = 0.0f;

    const int last_row = imin(row0 + kAttnRows, T) - 1;  // causal: no key after it is visible to this block
    for (int key0 = 0; key0 <= last_row; key0 += kKeys) {
        __syncthreads();  // the previous tile is consumed (and, the first time, q_s and the row state are written)
        for (int e = tid; e < kKeys * D; e += kAttnThreads) {
            const int c = e / D, d = e % D, s = key0 + c;
            const int64_t idx = (((int64_t)b * T + s) * KV + g) * D + d;
            k_s[c][d] = s < T ? k[idx] : 0.0f;
            v_s[c][d] = s < T ? v[idx] : 0.0f;
        }
        if (tid < kKeys) key_valid_s[tid] = key0 + tid < T && token_valid(mask, (int64_t)b * T + key0 + tid);
        __syncthreads();
        for (int e = tid; e < kAttnRows * kKeys; e += kAttnThreads) {
            const int r = e / kKeys, c = e % kKeys;
            float score = -INFINITY;
            if (key0 + c <= row0 + r && row_valid_s[r] && key_valid_s[c]) {
                float dot = 0.0f;
#pragma unroll 8
                for (int d = 0; d < D; d++) dot += q_s[r][d] * k_s[c][d];
                score = dot * scale;
            }
            p_s[r][c] = score;
        }
        __syncthreads();
        if (tid < kAttnRows) {
            const float m_old = m_s[tid];
            float m_new = m_old;
            for (int c = 0; c < kKeys; c++) m_new = fmaxf(m_new, p_s[tid][c]);
            float alpha = 1.0f, sum = 0.0f;
            if (m_new == -INFINITY) {  // nothing visible yet (masked keys so far, or a masked row)
                for (int c = 0; c < kKeys; c++) p_s[tid][c] = 0.0f;
            } else {
                alpha = expf(m_old - m_new);  // 0 when m_old = -inf: the accumulator is still 0 anyway
                for (int c = 0; c < kKeys; c++) {
                    const float p = expf(p_s[tid][c] - m_new);
                    p_s[tid][c] = p;
                    sum += p;
                }
            }
            m_s[tid] = m_new;
            l_s[tid] = l_s[tid] * alpha + sum;
            alpha_s[tid] = alpha;
        }
        __syncthreads();
        const float alpha = alpha_s[my_row];
#pragma unroll
        for (int j = 0; j < kCols; j++) {
            const int d = my_lane + j * kRowThreads;
            float a = acc[j] * alpha;
            for (int c = 0; c < kKeys; c++) a += p_s[my_row][c] * v_s[c][d];
            acc[j] = a;
        }
    }

    // m_s and l_s were last written before the final barrier of the loop.
    const int t = row0 + my_row;
    if (t >= T) return;
    const bool valid = row_valid_s[my_row] && l_s[my_row] > 0.0f;
    const float inv = valid ? 1.0f / l_s[my_row] : 0.0f;
    float* orow = out + (((int64_t)b * T + t) * H + h) * D;
#pragma unroll
    for (int j = 0; j < kCols; j++) orow[my_lane + j * kRowThreads] = acc[j] * inv;
    if (lse != nullptr && my_lane == 0) lse[(int64_t)bh * T + t] = valid ? m_s[my_row] + logf(l_s[my_row]) : -INFINITY;
}

// ---- backward ------------------------------------------------------------------------------------------------------

// delta [B,H,T] = rowsum(dout * out); 0 for masked rows. One thread per (b, h, t).
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, const int32_t* mask, int T,
                                       int H, int D, int64_t rows) {
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < rows;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t bh = idx / T;
        const int t = (int)(idx % T);
        const int64_t b = bh / H, h = bh % H;
        float sum = 0.0f;
        if (token_valid(mask, b * T + t)) {
            const int64_t base = ((b * T + t) * H + h) * D;
            for (int d = 0; d < D; d++) sum += dout[base + d] * out[base + d];
        }
        delta[idx] = sum;
    }
}

// Loads a query tile of head h: q, dout (zeros for rows past T or masked), lse and delta. Caller synchronizes.
template <int D>
__device__ inline void load_query_tile(float (*q_s)[D], float (*do_s)[D], float* lse_s, float* delta_s, int* valid_s,
                                       const float* q, const float* dout, const float* lse, const float* delta,
                                       const int32_t* mask, int b, int h, int row0, int T, int H) {
    const int tid = threadIdx.x;
    for (int e = tid; e < kAttnRows * D; e += kAttnThreads) {
        const int r = e / D, d = e % D, t = row0 + r;
        const bool ok = t < T && token_valid(mask, (int64_t)b * T + t);
        const int64_t idx = (((int64_t)b * T + t) * H + h) * D + d;
        q_s[r][d] = ok ? q[idx] : 0.0f;
        do_s[r][d] = ok ? dout[idx] : 0.0f;
    }
    if (tid < kAttnRows) {
        const int t = row0 + tid;
        const bool ok = t < T && token_valid(mask, (int64_t)b * T + t);
        const int64_t row = ((int64_t)b * H + h) * T + t;
        valid_s[tid] = ok;
        lse_s[tid] = ok ? lse[row] : 0.0f;
        delta_s[tid] = ok ? delta[row] : 0.0f;
    }
}

// P and dS of a (query tile, key tile) pair into p_s and ds_s (zero where not visible). Caller synchronizes.
template <int D>
__device__ inline void tile_probabilities(float (*p_s)[attn_keys(D)], float (*ds_s)[attn_keys(D)],
                                          const float (*q_s)[D], const float (*do_s)[D], const float (*k_s)[D + 1],
                                          const float (*v_s)[D + 1], const float* lse_s, const float* delta_s,
                                          const int* row_valid_s, const int* key_valid_s, int row0, int key0,
                                          float scale) {
    constexpr int kKeys = attn_keys(D);
    for (int e = threadIdx.x; e < kAttnRows * kKeys; e += kAttnThreads) {
        const int r = e / kKeys, c = e % kKeys;
        float p = 0.0f, ds = 0.0f;
        if (key0 + c <= row0 + r && row_valid_s[r] && key_valid_s[c]) {
            float qk = 0.0f, dp = 0.0f;
#pragma unroll 8
            for (int d = 0; d < D; d++) {
                qk += q_s[r][d] * k_s[c][d];
                dp += do_s[r][d] * v_s[c][d];
            }
            p = expf(qk * scale - lse_s[r]);
            ds = p * (dp - delta_s[r]);
        }
        p_s[r][c] = p;
        ds_s[r][c] = ds;
    }
}

// Grid (B*KV, key tiles). dk, dv of the tile's keys accumulate in registers, kKeyThreads threads per key.
template <int D>
__global__ void __launch_bounds__(kAttnThreads)
attention_backward_dkdv_kernel(float* dk, float* dv, const float* dout, const float* lse, const float* delta,
                               const float* q, const float* k, const float* v, const int32_t* mask, int T, int H,
                               int KV, float scale) {
    constexpr int kKeys = attn_keys(D);
    constexpr int kKeyThreads = kAttnThreads / kKeys;  // threads sharing one key row's dK/dV columns
    constexpr int kCols = D / kKeyThreads;
    __shared__ float k_s[kKeys][D + 1];
    __shared__ float v_s[kKeys][D + 1];
    __shared__ float q_s[kAttnRows][D];
    __shared__ float do_s[kAttnRows][D];
    __shared__ float p_s[kAttnRows][kKeys];
    __shared__ float ds_s[kAttnRows][kKeys];
    __shared__ float lse_s[kAttnRows], delta_s[kAttnRows];
    __shared__ int row_valid_s[kAttnRows], key_valid_s[kKeys];

    const int bg = blockIdx.x;
    const int b = bg / KV, g = bg % KV, group = H / KV;
    const int key0 = blockIdx.y * kKeys;
    const int tid = threadIdx.x;
    const int my_key = tid / kKeyThreads, my_lane = tid % kKeyThreads;

    for (int e = tid; e < kKeys * D; e += kAttnThreads) {
        const int c = e / D, d = e % D, s = key0 + c;
        const int64_t idx = (((int64_t)b * T + s) * KV + g) * D + d;
        k_s[c][d] = s < T ? k[idx] : 0.0f;
        v_s[c][d] = s < T ? v[idx] : 0.0f;
    }
    if (tid < kKeys) key_valid_s[tid] = key0 + tid < T && token_valid(mask, (int64_t)b * T + key0 + tid);
    float dk_acc[kCols], dv_acc[kCols];
#pragma unroll
    for (int j = 0; j < kCols; j++) dk_acc[j] = dv_acc[j] = 0.0f;

    for (int h = g * group; h < (g + 1) * group; h++) {
        // Causal: only query rows t >= key0 see any key of this tile.
        for (int row0 = (key0 / kAttnRows) * kAttnRows; row0 < T; row0 += kAttnRows) {
            __syncthreads();  // the previous query tile is consumed (the first time: k_s, v_s are written)
            load_query_tile<D>(q_s, do_s, lse_s, delta_s, row_valid_s, q, dout, lse, delta, mask, b, h, row0, T, H);
            __syncthreads();
            tile_probabilities<D>(p_s, ds_s, q_s, do_s, k_s, v_s, lse_s, delta_s, row_valid_s,
                                                key_valid_s, row0, key0, scale);
            __syncthreads();
#pragma unroll
            for (int j = 0; j < kCols; j++) {
                const int d = my_lane + j * kKeyThreads;
                float a = dv_acc[j], bsum = dk_acc[j];
                for (int r = 0; r < kAttnRows; r++) {
                    a += p_s[r][my_key] * do_s[r][d];
                    bsum += ds_s[r][my_key] * q_s[r][d];
                }
                dv_acc[j] = a;
                dk_acc[j] = bsum;
            }
        }
    }

    const int s = key0 + my_key;
    if (s >= T) return;
    const int64_t base = (((int64_t)b * T + s) * KV + g) * D;
#pragma unroll
    for (int j = 0; j < kCols; j++) {
        const int d = my_lane + j * kKeyThreads;
        dk[base + d] += scale * dk_acc[j];
        dv[base + d] += dv_acc[j];
    }
}

// Grid (B*H, query tiles, last-first). dq of the tile's rows accumulates in registers, kRowThreads threads per row.
template <int D>
__global__ void __launch_bounds__(kAttnThreads)
attention_backward_dq_kernel(float* dq, const float* dout, const float* lse, const float* delta, const float* q,
                             const float* k, const float* v, const int32_t* mask, int T, int H, int KV, float scale) {
    constexpr int kKeys = attn_keys(D);
    constexpr int kCols = D / kRowThreads;
    __shared__ float q_s[kAttnRows][D];
    __shared__ float do_s[kAttnRows][D];
    __shared__ float k_s[kKeys][D + 1];
    __shared__ float v_s[kKeys][D + 1];
    __shared__ float p_s[kAttnRows][kKeys];
    __shared__ float ds_s[kAttnRows][kKeys];
    __shared__ float lse_s[kAttnRows], delta_s[kAttnRows];
    __shared__ int row_valid_s[kAttnRows], key_valid_s[kKeys];

    const int bh = blockIdx.x;
    const int b = bh / H, h = bh % H, g = h / (H / KV);
    const int row0 = (gridDim.y - 1 - blockIdx.y) * kAttnRows;
    const int tid = threadIdx.x;
    const int my_row = tid / kRowThreads, my_lane = tid % kRowThreads;

    load_query_tile<D>(q_s, do_s, lse_s, delta_s, row_valid_s, q, dout, lse, delta, mask, b, h, row0, T, H);
    float acc[kCols];
#pragma unroll
    for (int j = 0; j < kCols; j++) acc[j] = 0.0f;

    const int last_row = imin(row0 + kAttnRows, T) - 1;
    for (int key0 = 0; key0 <= last_row; key0 += kKeys) {
        __syncthreads();
        for (int e = tid; e < kKeys * D; e += kAttnThreads) {
            const int c = e / D, d = e % D, s = key0 + c;
            const int64_t idx = (((int64_t)b * T + s) * KV + g) * D + d;
            k_s[c][d] = s < T ? k[idx] : 0.0f;
            v_s[c][d] = s < T ? v[idx] : 0.0f;
        }
        if (tid < kKeys) key_valid_s[tid] = key0 + tid < T && token_valid(mask, (int64_t)b * T + key0 + tid);
        __syncthreads();
        tile_probabilities<D>(p_s, ds_s, q_s, do_s, k_s, v_s, lse_s, delta_s, row_valid_s, key_valid_s,
                                            row0, key0, scale);
        __syncthreads();
#pragma unroll
        for (int j = 0; j < kCols; j++) {
            const int d = my_lane + j * kRowThreads;
            float a = acc[j];
            for (int c = 0; c < kKeys; c++) a += ds_s[my_row][c] * k_s[c][d];
            acc[j] = a;
        }
    }

    const int t = row0 + my_row;
    if (t >= T || !row_valid_s[my_row]) return;
    float* row = dq + (((int64_t)b * T + t) * H + h) * D;
#pragma unroll
    for (int j = 0; j < kCols; j++) row[my_lane + j * kRowThreads] += scale * acc[j];
}

// ---- decode --------------------------------------------------------------------------------------------------------

// Grid (B*H), kDecodeKeys threads: each tile gives every thread one key's score; thread d < D owns output column d.
template <int D, typename TCache>
__global__ void __launch_bounds__(kDecodeKeys)
attention_decode_kernel(float* out, const float* q, const TCache* k_cache, const TCache* v_cache,
                        const int32_t* lengths, int H, int KV, int capacity, float scale) {
    __shared__ float q_s[D];
    __shared__ float p_s[kDecodeKeys];
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int bh = blockIdx.x;
    const int b = bh / H, h = bh % H, g = h / (H / KV);
    const int tid = threadIdx.x;
    int length = lengths != nullptr ? lengths[b] : capacity;
    length = length < 0 ? 0 : (length > capacity ? capacity : length);

    if (tid < D) q_s[tid] = q[(int64_t)bh * D + tid];
    __syncthreads();
    float m = -INFINITY, l = 0.0f, acc = 0.0f;
    for (int key0 = 0; key0 < length; key0 += kDecodeKeys) {
        const int s = key0 + tid;
        float score = -INFINITY;
        if (s < length) {
            const TCache* krow = k_cache + (((int64_t)b * capacity + s) * KV + g) * D;
            float dot = 0.0f;
#pragma unroll 8
            for (int d = 0; d < D; d++) dot += q_s[d] * load_as_float(krow, d);
            score = dot * scale;
        }
        const float m_new = fmaxf(m, block_reduce_max(score, scratch));  // finite: key0 < length
        const float p = s < length ? expf(score - m_new) : 0.0f;
        p_s[tid] = p;
        const float alpha = expf(m - m_new);
        l = l * alpha + block_reduce_sum(p, scratch);  // its barriers also publish p_s
        if (tid < D) {
            const int keys = imin(kDecodeKeys, length - key0);
            float a = acc * alpha;
            for (int c = 0; c < keys; c++)
                a += p_s[c] * load_as_float(v_cache, (((int64_t)b * capacity + key0 + c) * KV + g) * D + tid);
            acc = a;
        }
        m = m_new;
        __syncthreads();  // p_s is rewritten by the next tile
    }
    if (tid < D) out[(int64_t)bh * D + tid] = length > 0 ? acc / l : 0.0f;
}

// ---- host ----------------------------------------------------------------------------------------------------------

static bool supported_head_dim(int32_t D) { return D == 16 || D == 32 || D == 64 || D == 128; }

extern "C" int32_t arwkv_rope_forward(float* out, const float* x, const float* cos_table, const float* sin_table,
                                      const int32_t* start_positions, int32_t B, int32_t T, int32_t heads, int32_t D,
                                      int32_t P, void* stream) {
    ARWKV_REQUIRE(out != nullptr && x != nullptr && cos_table != nullptr && sin_table != nullptr);
    ARWKV_REQUIRE(B >= 0 && T >= 0 && heads > 0 && D > 0 && D % 2 == 0 && P > 0);
    const int64_t pairs = (int64_t)B * T * heads * (D / 2);
    if (pairs == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(rope_forward_kernel, dim3(elementwise_blocks(pairs, kRopeBlock)), dim3(kRopeBlock), 0,
                       as_stream(stream), out, x, cos_table, sin_table, start_positions, T, heads, D / 2, P, pairs);
    return arwkv_check_launch("rope_forward_kernel");
}

extern "C" int32_t arwkv_rope_backward(float* dx, const float* dout, const float* cos_table, const float* sin_table,
                                       const int32_t* start_positions, int32_t B, int32_t T, int32_t heads, int32_t D,
                                       int32_t P, void* stream) {
    ARWKV_REQUIRE(dx != nullptr && dout != nullptr && cos_table != nullptr && sin_table != nullptr);
    ARWKV_REQUIRE(dx != dout);
    ARWKV_REQUIRE(B >= 0 && T >= 0 && heads > 0 && D > 0 && D % 2 == 0 && P > 0);
    const int64_t pairs = (int64_t)B * T * heads * (D / 2);
    if (pairs == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(rope_backward_kernel, dim3(elementwise_blocks(pairs, kRopeBlock)), dim3(kRopeBlock), 0,
                       as_stream(stream), dx, dout, cos_table, sin_table, start_positions, T, heads, D / 2, P, pairs);
    return arwkv_check_launch("rope_backward_kernel");
}

// Sizes shared by the forward and the backward; the grid's second dimension (query or key tiles) is at most 65535.
#define ARWKV_REQUIRE_ATTENTION_SIZES()                                                   \
    do {                                                                                  \
        ARWKV_REQUIRE(B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0);                \
        ARWKV_REQUIRE(supported_head_dim(D));                                             \
        ARWKV_REQUIRE((T + kAttnRows - 1) / kAttnRows <= 65535);                          \
    } while (0)

template <int D>
static void launch_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                     const int32_t* mask, int B, int T, int H, int KV, hipStream_t stream) {
    const dim3 grid((unsigned)(B * H), (unsigned)((T + kAttnRows - 1) / kAttnRows));
    hipLaunchKernelGGL(attention_forward_kernel<D>, grid, dim3(kAttnThreads), 0, stream, out, lse, q, k, v, mask, T,
                       H, KV, 1.0f / sqrtf((float)D));
}

extern "C" int32_t arwkv_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                           const int32_t* mask, int32_t B, int32_t T, int32_t H, int32_t KV,
                                           int32_t D, void* stream) {
    ARWKV_REQUIRE(out != nullptr && q != nullptr && k != nullptr && v != nullptr);
    ARWKV_REQUIRE_ATTENTION_SIZES();
    if ((int64_t)B * T == 0) return ARWKV_HIP_OK;
    switch (D) {
        case 16: launch_attention_forward<16>(out, lse, q, k, v, mask, B, T, H, KV, as_stream(stream)); break;
        case 32: launch_attention_forward<32>(out, lse, q, k, v, mask, B, T, H, KV, as_stream(stream)); break;
        case 64: launch_attention_forward<64>(out, lse, q, k, v, mask, B, T, H, KV, as_stream(stream)); break;
        default: launch_attention_forward<128>(out, lse, q, k, v, mask, B, T, H, KV, as_stream(stream)); break;
    }
    return arwkv_check_launch("attention_forward_kernel");
}

template <int D>
static int32_t launch_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* lse,
                                         const float* delta, const float* q, const float* k, const float* v,
                                         const int32_t* mask, int B, int T, int H, int KV, hipStream_t stream) {
    const float scale = 1.0f / sqrtf((float)D);
    const dim3 kv_grid((unsigned)(B * KV), (unsigned)((T + attn_keys(D) - 1) / attn_keys(D)));
    hipLaunchKernelGGL(attention_backward_dkdv_kernel<D>, kv_grid, dim3(kAttnThreads), 0, stream, dk, dv, dout, lse,
                       delta, q, k, v, mask, T, H, KV, scale);
    int32_t status = arwkv_check_launch("attention_backward_dkdv_kernel");
    if (status != ARWKV_HIP_OK) return status;
    const dim3 q_grid((unsigned)(B * H), (unsigned)((T + kAttnRows - 1) / kAttnRows));
    hipLaunchKernelGGL(attention_backward_dq_kernel<D>, q_grid, dim3(kAttnThreads), 0, stream, dq, dout, lse, delta,
                       q, k, v, mask, T, H, KV, scale);
    return arwkv_check_launch("attention_backward_dq_kernel");
}

extern "C" int32_t arwkv_attention_backward(float* dq, float* dk, float* dv, float* delta, const float* dout,
                                            const float* out, const float* lse, const float* q, const float* k,
                                            const float* v, const int32_t* mask, int32_t B, int32_t T, int32_t H,
                                            int32_t KV, int32_t D, void* stream) {
    ARWKV_REQUIRE(dq != nullptr && dk != nullptr && dv != nullptr && delta != nullptr);
    ARWKV_REQUIRE(dout != nullptr && out != nullptr && lse != nullptr && q != nullptr && k != nullptr && v != nullptr);
    ARWKV_REQUIRE_ATTENTION_SIZES();
    if ((int64_t)B * T == 0) return ARWKV_HIP_OK;
    const int64_t rows = (int64_t)B * H * T;
    hipLaunchKernelGGL(attention_delta_kernel, dim3(elementwise_blocks(rows, kRopeBlock)), dim3(kRopeBlock), 0,
                       as_stream(stream), delta, dout, out, mask, T, H, D, rows);
    int32_t status = arwkv_check_launch("attention_delta_kernel");
    if (status != ARWKV_HIP_OK) return status;
    switch (D) {
        case 16: return launch_attention_backward<16>(dq, dk, dv, dout, lse, delta, q, k, v, mask, B, T, H, KV, as_stream(stream));
        case 32: return launch_attention_backward<32>(dq, dk, dv, dout, lse, delta, q, k, v, mask, B, T, H, KV, as_stream(stream));
        case 64: return launch_attention_backward<64>(dq, dk, dv, dout, lse, delta, q, k, v, mask, B, T, H, KV, as_stream(stream));
        default: return launch_attention_backward<128>(dq, dk, dv, dout, lse, delta, q, k, v, mask, B, T, H, KV, as_stream(stream));
    }
}

template <int D, typename TCache>
static void launch_attention_decode(float* out, const float* q, const void* k_cache, const void* v_cache,
                                    const int32_t* lengths, int B, int H, int KV, int capacity, hipStream_t stream) {
    hipLaunchKernelGGL((attention_decode_kernel<D, TCache>), dim3((unsigned)(B * H)), dim3(kDecodeKeys), 0, stream,
                       out, q, static_cast<const TCache*>(k_cache), static_cast<const TCache*>(v_cache), lengths, H,
                       KV, capacity, 1.0f / sqrtf((float)D));
}

template <typename TCache>
static void dispatch_attention_decode(float* out, const float* q, const void* k_cache, const void* v_cache,
                                      const int32_t* lengths, int B, int H, int KV, int D, int capacity,
                                      hipStream_t stream) {
    switch (D) {
        case 16: launch_attention_decode<16, TCache>(out, q, k_cache, v_cache, lengths, B, H, KV, capacity, stream); break;
        case 32: launch_attention_decode<32, TCache>(out, q, k_cache, v_cache, lengths, B, H, KV, capacity, stream); break;
        case 64: launch_attention_decode<64, TCache>(out, q, k_cache, v_cache, lengths, B, H, KV, capacity, stream); break;
        default: launch_attention_decode<128, TCache>(out, q, k_cache, v_cache, lengths, B, H, KV, capacity, stream); break;
    }
}

extern "C" int32_t arwkv_attention_decode(float* out, const float* q, const void* k_cache, const void* v_cache,
                                          const int32_t* lengths, int32_t cache_dtype, int32_t B, int32_t H,
                                          int32_t KV, int32_t D, int32_t capacity, void* stream) {
    ARWKV_REQUIRE(out != nullptr && q != nullptr && k_cache != nullptr && v_cache != nullptr);
    ARWKV_REQUIRE(is_dtype(cache_dtype));
    ARWKV_REQUIRE(B >= 0 && H > 0 && KV > 0 && H % KV == 0 && capacity > 0);
    ARWKV_REQUIRE(supported_head_dim(D));
    if (B == 0) return ARWKV_HIP_OK;
    if (cache_dtype == ARWKV_HIP_F32)
        dispatch_attention_decode<float>(out, q, k_cache, v_cache, lengths, B, H, KV, D, capacity, as_stream(stream));
    else
        dispatch_attention_decode<bf16>(out, q, k_cache, v_cache, lengths, B, H, KV, D, capacity, as_stream(stream));
    return arwkv_check_launch("attention_decode_kernel");
}
