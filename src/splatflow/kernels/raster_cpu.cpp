// splatflow's compiled CPU rasterizer: per-splat projection and SH colour, a stable depth sort, tile binning,
// front-to-back compositing, the backward passes of all of them, and the separable filter of the SSIM loss.
//
// It follows splatflow/render.py's torch backend (gsplat's "classic" mode) step for step; that backend stays the
// reference the tests compare with. Conventions:
//   sigma = 0.5 * (a dx^2 + c dy^2) + b dx dy with (a, b, c) the conic and (dx, dy) = mean - pixel centre,
//   alpha = min(ALPHA_MAX, opacity * exp(-sigma)), skipped below ALPHA_MIN, a pixel stops before the splat that
//   would bring its transmittance to T_MIN or below, pixel centres at +0.5.
//
// Plain C ABI (loaded with ctypes), float32, row-major contiguous arrays. Work is split over tiles (or splats)
// with std::thread; within a tile a row of pixels is one GCC vector. The backward pass walks each pixel's splats
// in reverse, rebuilding transmittance by division (gsplat's way), and accumulates per-splat gradients in one
// buffer per thread, summed at the end (deterministic for a fixed thread count).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.999f;
constexpr float T_MIN = 1e-4f;

// Run fn(tile) for every tile on up to `threads` threads (dynamic scheduling: tiles differ a lot in work).
template <class Fn>
void for_tiles(int n_tiles, int threads, Fn fn) {
    threads = std::max(1, std::min(threads, n_tiles));
    std::atomic<int> next{0};
    auto work = [&](int thread) {
        for (int t = next.fetch_add(1); t < n_tiles; t = next.fetch_add(1)) fn(t, thread);
    };
    if (threads == 1) {
        work(0);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int i = 1; i < threads; ++i) pool.emplace_back(work, i);
    work(0);
    for (auto& th : pool) th.join();
}

struct TileRect {
    int x0, x1, y0, y1;
};

// The tiles a splat's screen box covers, as render.py's torch backend computes them.
inline TileRect tile_rect(const float* means2d, const float* radii, int i, int tile, int tiles_x, int tiles_y) {
    const float mx = means2d[2 * i], my = means2d[2 * i + 1], rx = radii[2 * i], ry = radii[2 * i + 1];
    auto clampi = [](float v, int hi) { return static_cast<int>(std::min(std::max(v, 0.0f), float(hi))); };
    TileRect r;
    r.x0 = clampi(std::floor((mx - rx) / tile), tiles_x);
    r.x1 = clampi(std::ceil((mx + rx) / tile), tiles_x);
    r.y0 = clampi(std::floor((my - ry) / tile), tiles_y);
    r.y1 = clampi(std::ceil((my + ry) / tile), tiles_y);
    return r;
}

// The rows [lo, hi] of a tile (local indices) whose pixel centres lie within the splat's screen box; outside
// it alpha < ALPHA_MIN (the box is opacity-aware), so those pixels are never evaluated. hi < lo: none.
inline void row_range(float my, float ry, int y0, int tile, int& lo, int& hi) {
    lo = std::max(0, static_cast<int>(std::ceil(my - ry - 0.5f)) - y0);
    hi = std::min(tile - 1, static_cast<int>(std::floor(my + ry - 0.5f)) - y0);
}



// ------------------------------------------------------------------------------------------ per-splat part
// EWA projection, the opacity-aware screen box and SH colour of N splats for one camera (render.py's
// `_visible_splats`, step for step), and its backward pass.

constexpr float MIN_DEPTH = 1e-3f;
constexpr float SH_C0 = 0.28209479177387814f;
constexpr float SH_C1 = 0.4886025119029199f;
constexpr float SH_C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f, -1.0925484305920792f,
                            0.5462742152960396f};
constexpr float SH_C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f, 0.3731763325901154f,
                            -0.4570457994644658f, 1.445305721320277f, -0.5900435899266435f};

struct Camera {
    float R[3][3], t[3], fx, fy, cx, cy, lim_xp, lim_xn, lim_yp, lim_yn, centre[3];
    int width, height;
    Camera(const float* viewmat, const float* intr, int w, int h) : width(w), height(h) {
        for (int r = 0; r < 3; ++r) {
            for (int c = 0; c < 3; ++c) R[r][c] = viewmat[4 * r + c];
            t[r] = viewmat[4 * r + 3];
        }
        fx = intr[0];
        fy = intr[1];
        cx = intr[2];
        cy = intr[3];
        const float tan_x = 0.5f * w / fx, tan_y = 0.5f * h / fy;
        lim_xp = (w - cx) / fx + 0.3f * tan_x;
        lim_xn = cx / fx + 0.3f * tan_x;
        lim_yp = (h - cy) / fy + 0.3f * tan_y;
        lim_yn = cy / fy + 0.3f * tan_y;
        for (int c = 0; c < 3; ++c) centre[c] = -(R[0][c] * t[0] + R[1][c] * t[1] + R[2][c] * t[2]);
    }
};

// Unit quaternion (w, x, y, z) of q (identity for a zero one) and its norm.
inline float unit_quat(const float* q, float* u) {
    const float n = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    if (n > 0.0f) {
        const float d = std::max(n, 1e-12f);
        for (int k = 0; k < 4; ++k) u[k] = q[k] / d;
    } else {
        u[0] = 1.0f;
        u[1] = u[2] = u[3] = 0.0f;
    }
    return n;
}

inline void rotmat(const float* u, float Rq[3][3]) {
    const float w = u[0], x = u[1], y = u[2], z = u[3];
    Rq[0][0] = 1 - 2 * (y * y + z * z); Rq[0][1] = 2 * (x * y - w * z); Rq[0][2] = 2 * (x * z + w * y);
    Rq[1][0] = 2 * (x * y + w * z); Rq[1][1] = 1 - 2 * (x * x + z * z); Rq[1][2] = 2 * (y * z - w * x);
    Rq[2][0] = 2 * (x * z - w * y); Rq[2][1] = 2 * (y * z + w * x); Rq[2][2] = 1 - 2 * (x * x + y * y);
}

// Camera-space covariance cc = Rv (M M^T) Rv^T with M = Rq diag(s).
inline void camera_cov(const Camera& cam, const float Rq[3][3], const float* s, float M[3][3], float cc[3][3]) {
    float cov[3][3], tmp[3][3];
    for (int j = 0; j < 3; ++j)
        for (int i = 0; i < 3; ++i) M[j][i] = Rq[j][i] * s[i];
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) cov[a][b] = M[a][0] * M[b][0] + M[a][1] * M[b][1] + M[a][2] * M[b][2];
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b)
            tmp[a][b] = cam.R[a][0] * cov[0][b] + cam.R[a][1] * cov[1][b] + cam.R[a][2] * cov[2][b];
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b)
            cc[a][b] = tmp[a][0] * cam.R[b][0] + tmp[a][1] * cam.R[b][1] + tmp[a][2] * cam.R[b][2];
}

// The real SH basis up to `degree` at the unit direction d (16 values at most).
inline void sh_basis(int degree, const float* d, float* b) {
    const float x = d[0], y = d[1], z = d[2];
    b[0] = SH_C0;
    if (degree < 1) return;
    b[1] = -SH_C1 * y; b[2] = SH_C1 * z; b[3] = -SH_C1 * x;
    if (degree < 2) return;
    const float xx = x * x, yy = y * y, zz = z * z;
    b[4] = SH_C2[0] * x * y; b[5] = SH_C2[1] * y * z; b[6] = SH_C2[2] * (2 * zz - xx - yy);
    b[7] = SH_C2[3] * x * z; b[8] = SH_C2[4] * (xx - yy);
    if (degree < 3) return;
    b[9] = SH_C3[0] * y * (3 * xx - yy); b[10] = SH_C3[1] * x * y * z; b[11] = SH_C3[2] * y * (4 * zz - xx - yy);
    b[12] = SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy); b[13] = SH_C3[4] * x * (4 * zz - xx - yy);
    b[14] = SH_C3[5] * z * (xx - yy); b[15] = SH_C3[6] * x * (xx - 3 * yy);
}

// d basis_k / d (x, y, z) at the unit direction d, k = 1 .. (degree+1)^2 - 1, into db[k][3].
inline void sh_basis_grad(int degree, const float* d, float db[16][3]) {
    const float x = d[0], y = d[1], z = d[2];
    for (int k = 0; k < 16; ++k) db[k][0] = db[k][1] = db[k][2] = 0.0f;
    if (degree < 1) return;
    db[1][1] = -SH_C1; db[2][2] = SH_C1; db[3][0] = -SH_C1;
    if (degree < 2) return;
    const float xx = x * x, yy = y * y, zz = z * z;
    db[4][0] = SH_C2[0] * y; db[4][1] = SH_C2[0] * x;
    db[5][1] = SH_C2[1] * z; db[5][2] = SH_C2[1] * y;
    db[6][0] = -2 * SH_C2[2] * x; db[6][1] = -2 * SH_C2[2] * y; db[6][2] = 4 * SH_C2[2] * z;
    db[7][0] = SH_C2[3] * z; db[7][2] = SH_C2[3] * x;
    db[8][0] = 2 * SH_C2[4] * x; db[8][1] = -2 * SH_C2[4] * y;
    if (degree < 3) return;
    db[9][0] = SH_C3[0] * 6 * x * y; db[9][1] = SH_C3[0] * (3 * xx - 3 * yy);
    db[10][0] = SH_C3[1] * y * z; db[10][1] = SH_C3[1] * x * z; db[10][2] = SH_C3[1] * x * y;
    db[11][0] = SH_C3[2] * -2 * x * y; db[11][1] = SH_C3[2] * (4 * zz - xx - 3 * yy); db[11][2] = SH_C3[2] * 8 * y * z;
    db[12][0] = SH_C3[3] * -6 * x * z; db[12][1] = SH_C3[3] * -6 * y * z;
    db[12][2] = SH_C3[3] * (6 * zz - 3 * xx - 3 * yy);
    db[13][0] = SH_C3[4] * (4 * zz - 3 * xx - yy); db[13][1] = SH_C3[4] * -2 * x * y; db[13][2] = SH_C3[4] * 8 * x * z;
    db[14][0] = SH_C3[5] * 2 * x * z; db[14][1] = SH_C3[5] * -2 * y * z; db[14][2] = SH_C3[5] * (xx - yy);
    db[15][0] = SH_C3[6] * (3 * xx - 3 * yy); db[15][1] = SH_C3[6] * -6 * x * y;
}

// Viewing direction of splat m from the camera centre, normalised; returns its length before (clamped).
inline float view_dir(const Camera& cam, const float* m, float* d) {
    for (int c = 0; c < 3; ++c) d[c] = m[c] - cam.centre[c];
    const float n = std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), 1e-12f);
    for (int c = 0; c < 3; ++c) d[c] /= n;
    return n;
}

// Run fn(lo, hi) over [0, n) split in `threads` contiguous parts.
template <class Fn>
void for_ranges(int n, int threads, Fn fn) {
    threads = std::max(1, std::min(threads, n / 1024 + 1));
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i)
        pool.emplace_back(fn, int(int64_t(n) * i / threads), int(int64_t(n) * (i + 1) / threads));
    fn(0, int(int64_t(n) / threads));
    for (auto& th : pool) th.join();
}

// ------------------------------------------------------------------------------------------ compositing
// A tile row of TS pixels is one GCC vector (TS floats: one AVX-512 register for 16, or two AVX2 ones; the
// compiler lowers the same code to whatever -march offers), so the per-pixel work is explicit SIMD rather
// than left to the auto-vectoriser. Per splat and row, sigma is a quadratic in dx whose dy terms are hoisted.

typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
template <int TS> struct Vec;
template <> struct Vec<16> { using F = vf16; using I = vi16; };
template <> struct Vec<8> { using F = vf8; using I = vi8; };

// exp(x) for x <= 0 lane-wise, no libm call: x = n ln2 + r with |r| <= ln2 / 2 (n rounded by the 1.5 * 2^23
// trick), a degree-6 polynomial for e^r, 2^n built in the exponent bits. Relative error about 2e-7; below -87
// it flushes to 0 (never a denormal).
template <class F, class I>
inline F vexp_nonpos(F x) {
    const I tiny = x < -87.0f;
    x = tiny ? F{} - 87.0f : x;
    const float magic = 12582912.0f;
    const F t = x * 1.4426950408889634f + magic;
    const F n = t - magic;
    const F r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    F p = F{} + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const I bits = (__builtin_convertvector(n, I) + 127) << 23;
    return tiny ? F{} : p * (F)bits;  // a vector cast reinterprets the bits
}

template <class F>
inline float hsum(F v) {
    float s = 0.0f;
    for (size_t k = 0; k < sizeof(F) / sizeof(float); ++k) s += v[k];
    return s;
}

template <int TS>
void forward_tiles(const float* means2d, const float* radii, const float* conics, const float* opac,
                   const float* colors, const int32_t* isect, const int64_t* tile_offsets, int width, int height,
                   int tiles_x, int tiles_y, const float* background, float* out_rgb, float* out_t,
                   int32_t* out_used, int threads) {
    using F = typename Vec<TS>::F;
    using I = typename Vec<TS>::I;
    for_tiles(tiles_x * tiles_y, threads, [&](int t, int) {
        const int x0 = (t % tiles_x) * TS, y0 = (t / tiles_x) * TS;
        F T[TS], r[TS], g[TS], b[TS], px;
        I used[TS], done[TS];  // done: -1 for a pixel that stopped (or lies outside the image), else 0
        for (int c = 0; c < TS; ++c) px[c] = float(x0 + c) + 0.5f;
        for (int y = 0; y < TS; ++y) {
            T[y] = F{} + 1.0f;
            r[y] = g[y] = b[y] = F{};
            used[y] = I{};
            for (int c = 0; c < TS; ++c) done[y][c] = (x0 + c < width && y0 + y < height) ? 0 : -1;
        }
        const int64_t start = tile_offsets[t], end = tile_offsets[t + 1];
        for (int64_t k = start; k < end; ++k) {
            if (((k - start) & 15) == 0) {  // every 16 splats: stop when every pixel has
                I all = done[0];
                for (int y = 1; y < TS; ++y) all &= done[y];
                bool finished = true;
                for (int c = 0; c < TS; ++c) finished = finished && all[c] != 0;
                if (finished) break;
            }
            const int id = isect[k];
            const float mx = means2d[2 * id], my = means2d[2 * id + 1];
            const float ha = 0.5f * conics[3 * id], cb = conics[3 * id + 1], hc = 0.5f * conics[3 * id + 2];
            const float o = opac[id];
            const float cr = colors[3 * id], cg = colors[3 * id + 1], cbl = colors[3 * id + 2];
            const int32_t pos = static_cast<int32_t>(k - start + 1);
            int lo, hi;
            row_range(my, radii[2 * id + 1], y0, TS, lo, hi);
            const F dx = mx - px;
            const F qx = dx * (ha * dx);
            for (int y = lo; y <= hi; ++y) {
                const float dy = my - (float(y0 + y) + 0.5f);
                F sigma = qx + dx * (cb * dy) + hc * dy * dy;
                sigma = sigma > 0.0f ? sigma : F{};
                F a = o * vexp_nonpos<F, I>(-sigma);
                a = a < ALPHA_MAX ? a : F{} + ALPHA_MAX;
                const I valid = (a >= ALPHA_MIN) & ~done[y];
                const F nt = T[y] * (1.0f - a);
                const I stop = valid & (nt <= T_MIN);
                const I inc = valid & ~stop;
                const F w = inc ? a * T[y] : F{};
                r[y] += w * cr;
                g[y] += w * cg;
                b[y] += w * cbl;
                T[y] = inc ? nt : T[y];
                used[y] = inc ? I{} + pos : used[y];
                done[y] |= stop;
            }
        }
        const float bgr = background ? background[0] : 0.0f, bgg = background ? background[1] : 0.0f,
                    bgb = background ? background[2] : 0.0f;
        for (int y = 0; y < TS && y0 + y < height; ++y)
            for (int c = 0; c < TS && x0 + c < width; ++c) {
                const size_t pix = size_t(y0 + y) * width + (x0 + c);
                out_rgb[3 * pix] = r[y][c] + T[y][c] * bgr;
                out_rgb[3 * pix + 1] = g[y][c] + T[y][c] * bgg;
                out_rgb[3 * pix + 2] = b[y][c] + T[y][c] * bgb;
                out_t[pix] = T[y][c];
                out_used[pix] = used[y][c];
            }
    });
}

template <int TS>
void backward_tiles(int m, const float* means2d, const float* radii, const float* conics, const float* opac,
                    const float* colors, const int32_t* isect, const int64_t* tile_offsets, int width, int height,
                    int tiles_x, int tiles_y, const float* background, const float* final_t, const int32_t* n_used,
                    const float* grad_rgb, const float* grad_alpha, float* g_means2d, float* g_conics,
                    float* g_opac, float* g_colors, int threads) {
    using F = typename Vec<TS>::F;
    using I = typename Vec<TS>::I;
    constexpr int G = 9;  // per-splat gradient: means2d 2, conic 3, opacity 1, colour 3
    const int n_tiles = tiles_x * tiles_y;
    threads = std::max(1, std::min(threads, n_tiles));
    std::vector<std::vector<float>> acc(threads, std::vector<float>(size_t(m) * G, 0.0f));
    for_tiles(n_tiles, threads, [&](int t, int thread) {
        float* gacc = acc[thread].data();
        const int x0 = (t % tiles_x) * TS, y0 = (t / tiles_x) * TS;
        // per pixel: transmittance (rebuilt backwards), the final one, the colour behind the current splat, the
        // output gradients, and d loss / d T_final folded into vt
        F T[TS], tf[TS], br[TS], bgc[TS], bb[TS], vr[TS], vg[TS], vb[TS], vt[TS], px;
        I used[TS];
        int32_t max_used = 0;
        for (int c = 0; c < TS; ++c) px[c] = float(x0 + c) + 0.5f;
        for (int y = 0; y < TS; ++y) {
            T[y] = tf[y] = F{} + 1.0f;
            br[y] = bgc[y] = bb[y] = vr[y] = vg[y] = vb[y] = vt[y] = F{};
            used[y] = I{};
            for (int c = 0; c < TS; ++c) {
                if (x0 + c >= width || y0 + y >= height) continue;
                const size_t pix = size_t(y0 + y) * width + (x0 + c);
                T[y][c] = tf[y][c] = final_t[pix];
                used[y][c] = n_used[pix];
                vr[y][c] = grad_rgb[3 * pix];
                vg[y][c] = grad_rgb[3 * pix + 1];
                vb[y][c] = grad_rgb[3 * pix + 2];
                // d rgb / d T_final = background and d alpha / d T_final = -1, both as T_final * ra * vt below
                float v = grad_alpha ? grad_alpha[pix] : 0.0f;
                if (background) v -= background[0] * vr[y][c] + background[1] * vg[y][c] + background[2] * vb[y][c];
                vt[y][c] = v;
                max_used = std::max(max_used, n_used[pix]);
            }
        }
        const int64_t start = tile_offsets[t];
        for (int32_t pos = max_used; pos >= 1; --pos) {
            const int id = isect[start + pos - 1];
            const float mx = means2d[2 * id], my = means2d[2 * id + 1];
            const float ca = conics[3 * id], cb = conics[3 * id + 1], cc = conics[3 * id + 2];
            const float o = opac[id];
            const float cr = colors[3 * id], cg = colors[3 * id + 1], cbl = colors[3 * id + 2];
            int lo, hi;
            row_range(my, radii[2 * id + 1], y0, TS, lo, hi);
            const F dx = mx - px;
            const F qx = dx * (0.5f * ca * dx);
            F s_vsdx = {}, s_vsdx2 = {}, s_vsdy = {}, s_vsdxdy = {}, s_vsdy2 = {}, s_o = {}, s_r = {},
              s_g = {}, s_b = {};
            for (int y = lo; y <= hi; ++y) {
                const float dy = my - (float(y0 + y) + 0.5f);
                F sigma = qx + dx * (cb * dy) + 0.5f * cc * dy * dy;
                sigma = sigma > 0.0f ? sigma : F{};
                const F e = vexp_nonpos<F, I>(-sigma);
                const F ao = o * e;
                const I free = ao < ALPHA_MAX;
                const F a = free ? ao : F{} + ALPHA_MAX;
                const I valid = (pos <= used[y]) & (a >= ALPHA_MIN);
                const F ra = 1.0f / (1.0f - a);
                const F Ti = T[y] * ra;  // transmittance in front of this splat
                F v_alpha = (cr * Ti - br[y] * ra) * vr[y] + (cg * Ti - bgc[y] * ra) * vg[y] +
                            (cbl * Ti - bb[y] * ra) * vb[y] + tf[y] * ra * vt[y];
                v_alpha = valid ? v_alpha : F{};
                const F v_sigma = free ? -ao * v_alpha : F{};
                s_o += free ? e * v_alpha : F{};
                // sums of v_sigma times 1, dx, dx^2 (and per row dy, dx dy, dy^2) give the conic and mean gradients
                const F vsdx = v_sigma * dx;
                s_vsdx += vsdx;
                s_vsdx2 += vsdx * dx;
                s_vsdy += v_sigma * dy;
                s_vsdxdy += vsdx * dy;
                s_vsdy2 += v_sigma * (dy * dy);
                const F f = valid ? a * Ti : F{};
                s_r += f * vr[y];
                s_g += f * vg[y];
                s_b += f * vb[y];
                br[y] += f * cr;
                bgc[y] += f * cg;
                bb[y] += f * cbl;
                T[y] = valid ? Ti : T[y];
            }
            if (hi < lo) continue;
            const float vsdx = hsum(s_vsdx), vsdy = hsum(s_vsdy);
            float* gs = gacc + size_t(id) * G;
            gs[0] += ca * vsdx + cb * vsdy;                 // d sigma / d mean x = a dx + b dy
            gs[1] += cb * vsdx + cc * vsdy;                 // d sigma / d mean y = b dx + c dy
            gs[2] += 0.5f * hsum(s_vsdx2);
            gs[3] += hsum(s_vsdxdy);
            gs[4] += 0.5f * hsum(s_vsdy2);
            gs[5] += hsum(s_o);
            gs[6] += hsum(s_r);
            gs[7] += hsum(s_g);
            gs[8] += hsum(s_b);
        }
    });
    // sum the per-thread buffers, the splats split over the threads
    for_ranges(m, threads, [&](int lo, int hi) {
        for (int i = lo; i < hi; ++i) {
            float s[G] = {0};
            for (int th = 0; th < threads; ++th)
                for (int j = 0; j < G; ++j) s[j] += acc[th][size_t(i) * G + j];
            g_means2d[2 * i] = s[0];
            g_means2d[2 * i + 1] = s[1];
            g_conics[3 * i] = s[2];
            g_conics[3 * i + 1] = s[3];
            g_conics[3 * i + 2] = s[4];
            g_opac[i] = s[5];
            g_colors[3 * i] = s[6];
            g_colors[3 * i + 1] = s[7];
            g_colors[3 * i + 2] = s[8];
        }
    });
}

}  // namespace

extern "C" {

int sf_version() { return 7; }

// The visible splats (visible[i] != 0) front to back: their ids into order (N capacity), sorted by depth with
// ties in id order (an LSD radix sort on the float bits, stable); returns their count M.
int sf_depth_order(int n, const float* depths, const uint8_t* visible, int64_t* order) {
    std::vector<uint32_t> keys;
    std::vector<int64_t> ids;
    keys.reserve(n);
    ids.reserve(n);
    for (int i = 0; i < n; ++i) {
        if (!visible[i]) continue;
        uint32_t b;
        std::memcpy(&b, depths + i, sizeof(b));
        keys.push_back((b & 0x80000000u) ? ~b : (b | 0x80000000u));  // monotonic in the float value
        ids.push_back(i);
    }
    const size_t m = keys.size();
    std::vector<uint32_t> k2(m);
    std::vector<int64_t> i2(m);
    for (int shift = 0; shift < 32; shift += 8) {
        size_t count[257] = {0};
        for (size_t j = 0; j < m; ++j) ++count[((keys[j] >> shift) & 255u) + 1];
        for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
        for (size_t j = 0; j < m; ++j) {
            const size_t at = count[(keys[j] >> shift) & 255u]++;
            k2[at] = keys[j];
            i2[at] = ids[j];
        }
        keys.swap(k2);
        ids.swap(i2);
    }
    std::memcpy(order, ids.data(), m * sizeof(int64_t));
    return static_cast<int>(m);
}

// Count the tiles covered by the splats `order` (M ids, the visible ones) into tile_counts (tiles_x * tiles_y);
// returns the total.
int64_t sf_bin_count(int m, const int64_t* order, const float* means2d, const float* radii, int tile, int tiles_x,
                     int tiles_y, int64_t* tile_counts) {
    std::memset(tile_counts, 0, sizeof(int64_t) * size_t(tiles_x) * tiles_y);
    int64_t total = 0;
    for (int k = 0; k < m; ++k) {
        const TileRect r = tile_rect(means2d, radii, static_cast<int>(order[k]), tile, tiles_x, tiles_y);
        for (int ty = r.y0; ty < r.y1; ++ty)
            for (int tx = r.x0; tx < r.x1; ++tx) {
                ++tile_counts[size_t(ty) * tiles_x + tx];
                ++total;
            }
    }
    return total;
}

// Fill isect with splat ids per tile, tile t's in [tile_offsets[t], tile_offsets[t + 1]). Splats are visited in
// `order` (front to back, stable), so each tile's list comes out depth-sorted: a counting sort by tile.
void sf_bin_fill(int m, const int64_t* order, const float* means2d, const float* radii, int tile, int tiles_x,
                 int tiles_y, const int64_t* tile_offsets, int32_t* isect) {
    std::vector<int64_t> cursor(tile_offsets, tile_offsets + size_t(tiles_x) * tiles_y);
    for (int k = 0; k < m; ++k) {
        const int i = static_cast<int>(order[k]);
        const TileRect r = tile_rect(means2d, radii, i, tile, tiles_x, tiles_y);
        for (int ty = r.y0; ty < r.y1; ++ty)
            for (int tx = r.x0; tx < r.x1; ++tx) isect[cursor[size_t(ty) * tiles_x + tx]++] = i;
    }
}

// Front-to-back compositing. Inputs per splat (L): means2d (L, 2), radii (L, 2), conics (L, 3), opacities (L,),
// colors (L, 3); the tile lists of sf_bin_fill; background (3,) or null. Outputs: rgb (H, W, 3) with the
// background added, transmittance (H, W), and n_used (H, W): 1 + the position in its tile's list of the last
// splat a pixel composited (0: none). tile: 8 or 16.
int sf_forward(const float* means2d, const float* radii, const float* conics, const float* opac,
               const float* colors, const int32_t* isect, const int64_t* tile_offsets, int width, int height,
               int tile, int tiles_x, int tiles_y, const float* background, float* out_rgb, float* out_t,
               int32_t* out_used, int threads) {
    if (tile == 16)
        forward_tiles<16>(means2d, radii, conics, opac, colors, isect, tile_offsets, width, height, tiles_x, tiles_y,
                          background, out_rgb, out_t, out_used, threads);
    else if (tile == 8)
        forward_tiles<8>(means2d, radii, conics, opac, colors, isect, tile_offsets, width, height, tiles_x, tiles_y,
                         background, out_rgb, out_t, out_used, threads);
    else
        return -1;
    return 0;
}

// Backward of sf_forward. grad_rgb (H, W, 3) and grad_alpha (H, W) (or null) are the loss gradients of the
// outputs rgb and alpha = 1 - transmittance. Writes (overwrites) the gradients of means2d (L, 2), conics (L, 3),
// opacities (L,) and colors (L, 3); per-splat sums are kept per thread and added at the end, so the result is
// deterministic for a given thread count.
int sf_backward(int m, const float* means2d, const float* radii, const float* conics, const float* opac,
                const float* colors, const int32_t* isect, const int64_t* tile_offsets, int width, int height,
                int tile, int tiles_x, int tiles_y, const float* background, const float* final_t,
                const int32_t* n_used, const float* grad_rgb, const float* grad_alpha, float* g_means2d,
                float* g_conics, float* g_opac, float* g_colors, int threads) {
    if (tile == 16)
        backward_tiles<16>(m, means2d, radii, conics, opac, colors, isect, tile_offsets, width, height, tiles_x,
                           tiles_y, background, final_t, n_used, grad_rgb, grad_alpha, g_means2d, g_conics, g_opac,
                           g_colors, threads);
    else if (tile == 8)
        backward_tiles<8>(m, means2d, radii, conics, opac, colors, isect, tile_offsets, width, height, tiles_x,
                          tiles_y, background, final_t, n_used, grad_rgb, grad_alpha, g_means2d, g_conics, g_opac,
                          g_colors, threads);
    else
        return -1;
    return 0;
}

// Per-splat forward. means (N, 3), quats (N, 4), scales (N, 3) linear, opac (N,), sh (N, n_coeffs, 3) with
// degree >= 0 (degree < 0: no SH, colors are not written), viewmat (4, 4) world-to-camera, intr (fx, fy, cx, cy).
// Writes means2d (N, 2), conics (N, 3), depths (N,), radii (N, 2) (0 for culled splats), colors (N, 3) and
// visible (N,) (0/1).
void sf_project_forward(int n, const float* means, const float* quats, const float* scales, const float* opac,
                        const float* sh, int n_coeffs, int degree, const float* viewmat, const float* intr,
                        int width, int height, float near_plane, float far_plane, float eps2d, float* means2d,
                        float* conics, float* depths, float* radii, float* colors, uint8_t* visible, int threads) {
    const Camera cam(viewmat, intr, width, height);
    for_ranges(n, threads, [&](int lo, int hi) {
        for (int i = lo; i < hi; ++i) {
            const float* m = means + 3 * i;
            float mc[3];
            for (int r = 0; r < 3; ++r)
                mc[r] = cam.R[r][0] * m[0] + cam.R[r][1] * m[1] + cam.R[r][2] * m[2] + cam.t[r];
            float u[4], Rq[3][3], M[3][3], cc[3][3];
            unit_quat(quats + 4 * i, u);
            rotmat(u, Rq);
            camera_cov(cam, Rq, scales + 3 * i, M, cc);
            const float tz = mc[2], tzs = std::max(tz, MIN_DEPTH);
            const float ux = std::min(std::max(mc[0] / tzs, -cam.lim_xn), cam.lim_xp);
            const float uy = std::min(std::max(mc[1] / tzs, -cam.lim_yn), cam.lim_yp);
            const float J00 = cam.fx / tzs, J02 = -cam.fx * ux / tzs, J11 = cam.fy / tzs, J12 = -cam.fy * uy / tzs;
            const float c00 = J00 * J00 * cc[0][0] + 2 * J00 * J02 * cc[0][2] + J02 * J02 * cc[2][2] + eps2d;
            const float c01 = J00 * J11 * cc[0][1] + J00 * J12 * cc[0][2] + J02 * J11 * cc[1][2] + J02 * J12 * cc[2][2];
            const float c11 = J11 * J11 * cc[1][1] + 2 * J11 * J12 * cc[1][2] + J12 * J12 * cc[2][2] + eps2d;
            const float det = c00 * c11 - c01 * c01;
            const bool ok = std::isfinite(det) && det > 1e-10f;
            conics[3 * i] = ok ? c11 / det : 0.0f;
            conics[3 * i + 1] = ok ? -c01 / det : 0.0f;
            conics[3 * i + 2] = ok ? c00 / det : 0.0f;
            const float mx = cam.fx * mc[0] / tzs + cam.cx, my = cam.fy * mc[1] / tzs + cam.cy;
            means2d[2 * i] = mx;
            means2d[2 * i + 1] = my;
            depths[i] = tz;
            const float o = opac[i];
            const float extend = std::min(std::sqrt(2.0f * std::log(std::max(o, ALPHA_MIN) / ALPHA_MIN)), 3.33f);
            const float rx = std::ceil(extend * std::sqrt(std::max(c00, 0.0f)));
            const float ry = std::ceil(extend * std::sqrt(std::max(c11, 0.0f)));
            const bool vis = tz > near_plane && tz < far_plane && det > 0.0f && o >= ALPHA_MIN && mx + rx > 0.0f &&
                             mx - rx < width && my + ry > 0.0f && my - ry < height && std::isfinite(mx) &&
                             std::isfinite(my) && std::isfinite(rx) && std::isfinite(ry);
            visible[i] = vis ? 1 : 0;
            radii[2 * i] = vis ? rx : 0.0f;
            radii[2 * i + 1] = vis ? ry : 0.0f;
            if (degree < 0) continue;
            float rgb[3] = {0.0f, 0.0f, 0.0f};
            if (vis) {
                float d[3], b[16];
                view_dir(cam, m, d);
                sh_basis(degree, d, b);
                const float* c = sh + size_t(i) * n_coeffs * 3;
                const int nb = (degree + 1) * (degree + 1);
                for (int ch = 0; ch < 3; ++ch) {
                    float v = 0.0f;
                    for (int k = 0; k < nb; ++k) v += b[k] * c[3 * k + ch];
                    rgb[ch] = std::max(v + 0.5f, 0.0f);
                }
            }
            for (int ch = 0; ch < 3; ++ch) colors[3 * i + ch] = rgb[ch];
        }
    });
}

// Backward of sf_project_forward for the visible splats, from the gradients of means2d (N, 2), conics (N, 3) and
// colors (N, 3) (null when degree < 0). Writes (overwrites) the gradients of means (N, 3), quats (N, 4),
// scales (N, 3) and sh (N, n_coeffs, 3) (null when degree < 0); culled splats get zeros.
void sf_project_backward(int n, const float* means, const float* quats, const float* scales, const float* sh,
                         int n_coeffs, int degree, const float* viewmat, const float* intr, int width, int height,
                         float eps2d, const uint8_t* visible, const float* v_means2d, const float* v_conics,
                         const float* v_colors, float* g_means, float* g_quats, float* g_scales, float* g_sh,
                         int threads) {
    const Camera cam(viewmat, intr, width, height);
    for_ranges(n, threads, [&](int lo, int hi) {
        for (int i = lo; i < hi; ++i) {
            float* gm = g_means + 3 * i;
            float* gq = g_quats + 4 * i;
            float* gs = g_scales + 3 * i;
            gm[0] = gm[1] = gm[2] = gs[0] = gs[1] = gs[2] = 0.0f;
            gq[0] = gq[1] = gq[2] = gq[3] = 0.0f;
            if (degree >= 0) std::memset(g_sh + size_t(i) * n_coeffs * 3, 0, sizeof(float) * n_coeffs * 3);
            if (!visible[i]) continue;
            const float* m = means + 3 * i;
            // ---- colour: rgb = max(sum_k b_k c_k + 0.5, 0), b_k from the unit direction camera -> splat
            if (degree >= 0) {
                float d[3], b[16];
                const float len = view_dir(cam, m, d);
                sh_basis(degree, d, b);
                const float* c = sh + size_t(i) * n_coeffs * 3;
                float* gc = g_sh + size_t(i) * n_coeffs * 3;
                const int nb = (degree + 1) * (degree + 1);
                float g[3];
                for (int ch = 0; ch < 3; ++ch) {
                    float v = 0.0f;
                    for (int k = 0; k < nb; ++k) v += b[k] * c[3 * k + ch];
                    g[ch] = v + 0.5f >= 0.0f ? v_colors[3 * i + ch] : 0.0f;
                }
                for (int k = 0; k < nb; ++k)
                    for (int ch = 0; ch < 3; ++ch) gc[3 * k + ch] = b[k] * g[ch];
                if (degree >= 1) {
                    float db[16][3], vd[3] = {0.0f, 0.0f, 0.0f};
                    sh_basis_grad(degree, d, db);
                    for (int k = 1; k < nb; ++k) {
                        const float w = c[3 * k] * g[0] + c[3 * k + 1] * g[1] + c[3 * k + 2] * g[2];
                        for (int a = 0; a < 3; ++a) vd[a] += w * db[k][a];
                    }
                    const float dot = vd[0] * d[0] + vd[1] * d[1] + vd[2] * d[2];
                    for (int a = 0; a < 3; ++a) gm[a] += (vd[a] - d[a] * dot) / len;
                }
            }
            // ---- recompute the projection
            float mc[3];
            for (int r = 0; r < 3; ++r)
                mc[r] = cam.R[r][0] * m[0] + cam.R[r][1] * m[1] + cam.R[r][2] * m[2] + cam.t[r];
            float u[4], Rq[3][3], M[3][3], cc[3][3];
            const float qn = unit_quat(quats + 4 * i, u);
            rotmat(u, Rq);
            const float* s = scales + 3 * i;
            camera_cov(cam, Rq, s, M, cc);
            const float tz = mc[2], tzs = std::max(tz, MIN_DEPTH);
            const float rx = mc[0] / tzs, ry = mc[1] / tzs;
            const bool free_x = rx >= -cam.lim_xn && rx <= cam.lim_xp, free_y = ry >= -cam.lim_yn && ry <= cam.lim_yp;
            const float ux = std::min(std::max(rx, -cam.lim_xn), cam.lim_xp);
            const float uy = std::min(std::max(ry, -cam.lim_yn), cam.lim_yp);
            const float J[2][3] = {{cam.fx / tzs, 0.0f, -cam.fx * ux / tzs}, {0.0f, cam.fy / tzs, -cam.fy * uy / tzs}};
            const float c00 = J[0][0] * J[0][0] * cc[0][0] + 2 * J[0][0] * J[0][2] * cc[0][2] + J[0][2] * J[0][2] * cc[2][2] + eps2d;
            const float c01 = J[0][0] * J[1][1] * cc[0][1] + J[0][0] * J[1][2] * cc[0][2] + J[0][2] * J[1][1] * cc[1][2] +
                              J[0][2] * J[1][2] * cc[2][2];
            const float c11 = J[1][1] * J[1][1] * cc[1][1] + 2 * J[1][1] * J[1][2] * cc[1][2] + J[1][2] * J[1][2] * cc[2][2] + eps2d;
            const float det = c00 * c11 - c01 * c01;
            // ---- conic = inverse(cov2d): dL/dcov2d = -Ci V Ci, V the symmetric conic gradient
            float G[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
            if (std::isfinite(det) && det > 1e-10f) {
                const float Ci[2][2] = {{c11 / det, -c01 / det}, {-c01 / det, c00 / det}};
                const float* vc = v_conics + 3 * i;
                const float V[2][2] = {{vc[0], 0.5f * vc[1]}, {0.5f * vc[1], vc[2]}};
                float T[2][2];
                for (int a = 0; a < 2; ++a)
                    for (int b2 = 0; b2 < 2; ++b2) T[a][b2] = Ci[a][0] * V[0][b2] + Ci[a][1] * V[1][b2];
                for (int a = 0; a < 2; ++a)
                    for (int b2 = 0; b2 < 2; ++b2) G[a][b2] = -(T[a][0] * Ci[0][b2] + T[a][1] * Ci[1][b2]);
            }
            // ---- cov2d = J cc J^T + eps I: dL/dcc = J^T G J, dL/dJ = 2 G J cc
            float Gc[3][3], GJ[2][3], vJ[2][3];
            for (int a = 0; a < 2; ++a)
                for (int b2 = 0; b2 < 3; ++b2) GJ[a][b2] = G[a][0] * J[0][b2] + G[a][1] * J[1][b2];
            for (int a = 0; a < 3; ++a)
                for (int b2 = 0; b2 < 3; ++b2) Gc[a][b2] = J[0][a] * GJ[0][b2] + J[1][a] * GJ[1][b2];
            for (int a = 0; a < 2; ++a)
                for (int b2 = 0; b2 < 3; ++b2)
                    vJ[a][b2] = 2.0f * (GJ[a][0] * cc[0][b2] + GJ[a][1] * cc[1][b2] + GJ[a][2] * cc[2][b2]);
            // ---- J and means2d as functions of the camera-space position
            const float fx = cam.fx, fy = cam.fy, t2 = tzs * tzs, t3 = t2 * tzs;
            const float* vm2 = v_means2d + 2 * i;
            float vtx = vm2[0] * fx / tzs + (free_x ? vJ[0][2] * -fx / t2 : 0.0f);
            float vty = vm2[1] * fy / tzs + (free_y ? vJ[1][2] * -fy / t2 : 0.0f);
            float vtz = -vm2[0] * fx * mc[0] / t2 - vm2[1] * fy * mc[1] / t2 - vJ[0][0] * fx / t2 - vJ[1][1] * fy / t2 +
                        vJ[0][2] * (free_x ? 2.0f * fx * mc[0] / t3 : fx * ux / t2) +
                        vJ[1][2] * (free_y ? 2.0f * fy * mc[1] / t3 : fy * uy / t2);
            vtz = tz >= MIN_DEPTH ? vtz : 0.0f;
            const float vmc[3] = {vtx, vty, vtz};
            for (int a = 0; a < 3; ++a) gm[a] += cam.R[0][a] * vmc[0] + cam.R[1][a] * vmc[1] + cam.R[2][a] * vmc[2];
            // ---- cc = Rv cov Rv^T: dL/dcov = Rv^T Gc Rv; cov = M M^T: dL/dM = 2 dL/dcov M
            float tmp[3][3], Gw[3][3], vM[3][3];
            for (int a = 0; a < 3; ++a)
                for (int b2 = 0; b2 < 3; ++b2)
                    tmp[a][b2] = cam.R[0][a] * Gc[0][b2] + cam.R[1][a] * Gc[1][b2] + cam.R[2][a] * Gc[2][b2];
            for (int a = 0; a < 3; ++a)
                for (int b2 = 0; b2 < 3; ++b2)
                    Gw[a][b2] = tmp[a][0] * cam.R[0][b2] + tmp[a][1] * cam.R[1][b2] + tmp[a][2] * cam.R[2][b2];
            for (int a = 0; a < 3; ++a)
                for (int b2 = 0; b2 < 3; ++b2)
                    vM[a][b2] = (Gw[a][0] + Gw[0][a]) * M[0][b2] + (Gw[a][1] + Gw[1][a]) * M[1][b2] +
                                (Gw[a][2] + Gw[2][a]) * M[2][b2];
            // ---- M = Rq diag(s)
            float vR[3][3];
            for (int j = 0; j < 3; ++j)
                for (int k = 0; k < 3; ++k) vR[j][k] = vM[j][k] * s[k];
            for (int k = 0; k < 3; ++k) gs[k] = vM[0][k] * Rq[0][k] + vM[1][k] * Rq[1][k] + vM[2][k] * Rq[2][k];
            // ---- rotation matrix of the unit quaternion, then the normalisation
            if (qn > 0.0f) {
                const float w = u[0], x = u[1], y = u[2], z = u[3];
                float vu[4];
                vu[0] = 2 * (-z * vR[0][1] + y * vR[0][2] + z * vR[1][0] - x * vR[1][2] - y * vR[2][0] + x * vR[2][1]);
                vu[1] = 2 * (y * vR[0][1] + z * vR[0][2] + y * vR[1][0] - 2 * x * vR[1][1] - w * vR[1][2] + z * vR[2][0] +
                             w * vR[2][1] - 2 * x * vR[2][2]);
                vu[2] = 2 * (-2 * y * vR[0][0] + x * vR[0][1] + w * vR[0][2] + x * vR[1][0] + z * vR[1][2] - w * vR[2][0] +
                             z * vR[2][1] - 2 * y * vR[2][2]);
                vu[3] = 2 * (-2 * z * vR[0][0] - w * vR[0][1] + x * vR[0][2] + w * vR[1][0] - 2 * z * vR[1][1] +
                             y * vR[1][2] + x * vR[2][0] + y * vR[2][1]);
                const float dot = vu[0] * u[0] + vu[1] * u[1] + vu[2] * u[2] + vu[3] * u[3];
                const float d = std::max(qn, 1e-12f);
                for (int k = 0; k < 4; ++k) gq[k] = (vu[k] - u[k] * dot) / d;
            }
        }
    });
}

// ------------------------------------------------------------------------------------------ image filter
// Separable "valid" filtering of n maps (n, h, w) by a K-tap kernel k along both axes (no padding):
// out (n, h - K + 1, w - K + 1). The SSIM loss of training blurs five maps per channel with an 11-tap Gaussian;
// torch's depthwise convolution is an order of magnitude slower at this on CPU.
void sf_blur_valid(int n, int h, int w, const float* k, int K, const float* in, float* out, int threads) {
    const int ho = h - K + 1, wo = w - K + 1;
    for_tiles(n, threads, [&](int i, int) {
        std::vector<float> tmp(size_t(h) * wo);
        const float* src = in + size_t(i) * h * w;
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < wo; ++x) {
                float v = 0.0f;
                for (int j = 0; j < K; ++j) v += k[j] * src[size_t(y) * w + x + j];
                tmp[size_t(y) * wo + x] = v;
            }
        float* dst = out + size_t(i) * ho * wo;
        for (int y = 0; y < ho; ++y) {
            float* row = dst + size_t(y) * wo;
            for (int x = 0; x < wo; ++x) row[x] = 0.0f;
            for (int j = 0; j < K; ++j) {
                const float kj = k[j];
                const float* t = tmp.data() + size_t(y + j) * wo;
                for (int x = 0; x < wo; ++x) row[x] += kj * t[x];
            }
        }
    });
}

// Backward of sf_blur_valid: grad_in (n, h, w) from grad_out (n, h - K + 1, w - K + 1) (the transposed filter).
void sf_blur_valid_backward(int n, int h, int w, const float* k, int K, const float* grad_out, float* grad_in,
                            int threads) {
    const int ho = h - K + 1, wo = w - K + 1;
    for_tiles(n, threads, [&](int i, int) {
        std::vector<float> tmp(size_t(h) * wo, 0.0f);
        const float* g = grad_out + size_t(i) * ho * wo;
        for (int y = 0; y < ho; ++y)
            for (int j = 0; j < K; ++j) {
                const float kj = k[j];
                float* t = tmp.data() + size_t(y + j) * wo;
                const float* gr = g + size_t(y) * wo;
                for (int x = 0; x < wo; ++x) t[x] += kj * gr[x];
            }
        float* dst = grad_in + size_t(i) * h * w;
        for (int y = 0; y < h; ++y) {
            float* row = dst + size_t(y) * w;
            for (int x = 0; x < w; ++x) row[x] = 0.0f;
            const float* t = tmp.data() + size_t(y) * wo;
            for (int j = 0; j < K; ++j) {
                const float kj = k[j];
                for (int x = 0; x < wo; ++x) row[x + j] += kj * t[x];
            }
        }
    });
}

}  // extern "C"
