// The shared linear unit: every linear layer (Q/K/V, projection, MLP), pointwise conv and im2col'd KxK conv. M, K, N,
// formats and epilogue come from the descriptor at run time; only the lanes are compile-time: each cycle LI input lanes
// times LO output lanes (LI * LO MACs, the unrolled body of the pipelined k loop). Tiles on chip: XTILES (1 or 2) input
// tiles of TM tokens (TM x KMAX words, XBANKS = max(LI, WPB) banks) and LO weight rows (LO x KMAX words, XBANKS banks
// per pair of rows), so all LI * LO operands of a cycle come from distinct memories or the two halves of one word, and
// the WPB words of a port beat from distinct banks (tiles load and results leave a beat per cycle, packed.h). Rows 2j
// and 2j+1 share each bank as the halves of a 32-bit word (w[t][j][k][2], dim 4 reshaped): the MAC step reads both at
// one address, and a BRAM18 of 512 x 36 holds the pair of 16-bit banks that would otherwise take two BRAM18 of 1K x 18
// a quarter or half full. A tile load writes one half (the BRAM's byte write enables). With WTILES = 2, two weight
// tiles (t: the one in use and the next, prefetched over the params port while the MAC steps read the other) share the
// banks at different addresses (2 KMAX / XBANKS words a bank; one read and one write port a cycle); with WTILES = 1 (a
// board whose BRAM buys more output lanes than a prefetch saves) the next weight tile loads between runs. The
// descriptor picks the loop order (d3): token tiles outer (each weight tile re-read once per token tile) or weight
// tiles outer (each input tile re-read once per weight tile), whichever moves fewer words. Result tiles, and with
// XTILES = 2 input tiles, are ping-pong pairs: one pipelined loop runs a tile's MAC steps while the next token tile
// loads and the previous results leave (linear_unit says when each of them can). The accumulator is exact (64 bits), so
// neither the tiling nor the order changes a result. Epilogue: bias, activation and requantisation (activation.h),
// optional residual.
#ifndef EDGEVIT_LINEAR_H
#define EDGEVIT_LINEAR_H

#include "activation.h"
#include "descriptor.h"
#include "packed.h"
#include "tripcount_product.h"

namespace edgevit {

#ifndef __SYNTHESIS__
// C-simulation only: parameter words (weights and biases) the unit has read from DDR, in total. The MoE unit
// takes differences of it to count each expert's reads.
inline long& linear_weight_words_read() { static long n = 0; return n; }
#endif

// Tokens [m0, m0 + tm) of x [M][K] into an input tile (their tm x K words are consecutive in DDR).
template <class CFG>
void linear_load_x(word_port<CFG>& arena, const layer_desc& d, int m0, int tm, word_t x[CFG::TM][CFG::KMAX]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens, typename CFG::linear_k> tile_words;
    load_rows<CFG, word_port<CFG>, tile_words>(arena, d.x + m0 * d.d1, tm, d.d1, x);
}

// Weight rows [n0, n0 + LO) of w [N][K] and their biases into the weight tile, each in one pipelined pass (the
// rows are consecutive in DDR, and so are their 64-bit biases, four little-endian words each). Lanes past N
// keep stale words: their sums are never written.
template <class CFG>
void linear_load_w(word_source<CFG>& params, const layer_desc& d, int n0, word_t w[(CFG::LO + 1) / 2][CFG::KMAX][2],
                   i64 bias[CFG::LO]) {
    typedef tripcount<CFG::linear_k::min, CFG::linear_k::max * CFG::LO, CFG::linear_k::avg * CFG::LO> tile_words;
    const int rows = d.d2 - n0 < CFG::LO ? d.d2 - n0 : CFG::LO;
    load_rows<CFG, word_source<CFG>, tile_words>(params, d.w + n0 * d.d1, rows, d.d1, w);
    load_biases<CFG, CFG::LO>(params, d.b >= 0 ? d.b + 4 * n0 : -1, rows, bias);
#ifndef __SYNTHESIS__
    linear_weight_words_read() += rows * (d.d1 + (d.b >= 0 ? 4 : 0));
#endif
}

// Whether a tile's write-back can run inside the next tile's MAC loop: every output row is whole beats (LO and N
// multiples of WPB, y on a beat), so no beat is read to be merged, and a residual sits at the output's lanes
// (x2 - y a multiple of WPB: one beat read per beat written). layer_table's 32-word alignment of tensors gives
// the last two; test layouts and odd lanes take the sequential path.
template <class CFG>
inline bool linear_overlaps(const layer_desc& d) {
    return CFG::LO % CFG::WPB == 0 && d.d2 % CFG::WPB == 0 && d.y % CFG::WPB == 0 &&
           (d.x2 < 0 || (d.x2 - d.y) % CFG::WPB == 0);
}

// One MAC step of a token tile: token m's inputs [k0, k0 + LI) times the LO weight rows (LI x LO MACs, unrolled),
// onto acc (the biases at k0 = 0); at the token's last step its sums go to res[m] and (m, k0) moves to the next
// token, else k0 to the next LI inputs. The accumulator is exact (64 bits). The float linear unit and the int8 one
// (qlinear.h) run the same steps.
template <class CFG>
inline void linear_mac_step(const word_t x[CFG::TM][CFG::KMAX], const word_t w[(CFG::LO + 1) / 2][CFG::KMAX][2],
                            const i64 bias[CFG::LO], i64 acc[CFG::LO], i64 res[CFG::TM][CFG::LO], int K, int& m,
                            int& k0) {
#pragma HLS INLINE
    const bool last = k0 + CFG::LI >= K;
    for (int lo = 0; lo < CFG::LO; ++lo) {
#pragma HLS UNROLL
        i64 sum = k0 == 0 ? bias[lo] : acc[lo];
        for (int li = 0; li < CFG::LI; ++li) {
#pragma HLS UNROLL
            if (k0 + li < K) sum += (i64)x[m][k0 + li] * (i64)w[lo >> 1][k0 + li][lo & 1];
        }
        acc[lo] = sum;
        if (last) res[m][lo] = sum;
    }
    if (last) {
        k0 = 0;
        ++m;
    } else {
        k0 += CFG::LI;
    }
}

// Iterations a pass must last past its last MAC step, and past its load's last beat, when the next pass of its run
// follows in the same pipelined loop (no loop exit drains the pipeline between them): the MAC pipeline's depth
// before the next pass's write-back reads the result tile, and the m_axi read latency Vitis schedules (64 cycles)
// plus the tile write before the next pass's MAC steps read the tile it loaded (estimator: DEPTH_MAC and
// AXI_LATENCY + DEPTH_IO).
static const int LINEAR_MAC_DRAIN = 8, LINEAR_LOAD_DRAIN = 67;

// One job's pass: its token tile (tm rows from token m0), its MAC steps, the next token tile's load (lrows rows from
// word lstart: beats lfirst.. lfirst + lbeats), the write-back of the previous job's tile (wtm rows from row wm0,
// column wn0, rbeats beats a row, from iteration wfirst) and its trip.
struct linear_job {
    int m0, tm, steps, lstart, lrows, lfirst, lbeats, wm0, wtm, wn0, rbeats, wfirst, trip;
};

// The pass of the job on tokens [m0, m0 + TM), loading the tile at token nm0 (load) and writing back wtm rows of
// the previous job's tile; drain: the run's next pass follows in the same loop. The trip is the longest of the
// three parts, not their sum, except that a write-back reading a residual starts after the load's beats (one arena
// read a cycle: the load's, then the residual's), so its part is the load's beats plus its own.
template <class CFG>
linear_job linear_job_at(const layer_desc& d, int m0, int nm0, bool load, int wm0, int wtm, int wn0, bool drain) {
#pragma HLS INLINE
    const int M = d.d0, K = d.d1, N = d.d2;
    linear_job j;
    j.m0 = m0;
    j.tm = M - m0 < CFG::TM ? M - m0 : CFG::TM;
    j.steps = j.tm * ((K + CFG::LI - 1) / CFG::LI);
    j.lstart = d.x + nm0 * K;
    j.lrows = load ? (M - nm0 < CFG::TM ? M - nm0 : CFG::TM) : 0;
    j.lfirst = j.lstart / CFG::WPB;
    j.lbeats = j.lrows ? (j.lstart + j.lrows * K - 1) / CFG::WPB - j.lfirst + 1 : 0;
    j.wm0 = wm0, j.wtm = wtm, j.wn0 = wn0;
    j.rbeats = (N - wn0 < CFG::LO ? N - wn0 : CFG::LO) / CFG::WPB;
    j.wfirst = d.x2 >= 0 ? j.lbeats : 0;
    int trip = j.steps > j.lbeats ? j.steps : j.lbeats;
    if (j.wfirst + wtm * j.rbeats > trip) trip = j.wfirst + wtm * j.rbeats;
    if (drain && j.steps + LINEAR_MAC_DRAIN > trip) trip = j.steps + LINEAR_MAC_DRAIN;
    if (drain && j.lbeats && j.lbeats + LINEAR_LOAD_DRAIN > trip) trip = j.lbeats + LINEAR_LOAD_DRAIN;
    j.trip = trip;
    return j;
}

// A run of jobs that share the weight tile (n0), token tiles m0, m0 + TM, .., as one pipelined loop: each job's
// tm x ceil(K / LI) MAC steps (x[cur] -> res[rj]; LI x LO MACs each, a token's sums to the result tile at its last
// step) and, in the same iterations, what the port can do meanwhile: the next token tile's rows into the other input
// tile (XTILES = 2; after the run's last job, the tile at token `after` when load_after), and the write-back of the
// previous job's tile from res[rj ^ 1], a whole beat of WPB epilogues a cycle (linear_overlaps; wtm = 0: none
// before the run's first job). Each iteration makes at most one arena read and one write. One loop for the run
// waits out the m_axi latency once, not once per job. cur, rj and the previous job (pm0, ptm, pn0) move on
// between the run's jobs; the caller moves them on after its last.
template <class CFG>
void linear_run(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d, int n0, int m0, int jobs,
                int after, bool load_after, int wtm, int& cur, int& rj, int& pm0, int& ptm, int& pn0, int wc, int wn,
                word_t x[CFG::XTILES][CFG::TM][CFG::KMAX], word_t w[CFG::WTILES][(CFG::LO + 1) / 2][CFG::KMAX][2],
                i64 bias[CFG::WTILES][CFG::LO], i64 res[2][CFG::TM][CFG::LO]) {
    typedef typename CFG::beat_t beat_t;
    typedef tripcount_product<typename CFG::linear_m_tiles, typename CFG::linear_pass> run_trip;
    const int K = d.d1, N = d.d2, FA = d.fx + d.fw;
    const bool resid = d.x2 >= 0;
    const int bx = resid ? (d.x2 - d.y) / CFG::WPB : 0;
    // The weight tile of rows [wn, wn + LO) (wn < 0: none; always none with WTILES = 1) and its biases into
    // w[wc ^ 1], bias[wc ^ 1]: a params beat an iteration from the run's first, in the iterations the jobs take
    // anyway; the run's last job lasts until the prefetch is done (the next run reads the tile after this loop).
    const int ws = CFG::WTILES == 2 ? wc ^ 1 : 0, wrows = wn < 0 ? 0 : (d.d2 - wn < CFG::LO ? d.d2 - wn : CFG::LO);
    const int wstart = d.w + (wn < 0 ? 0 : wn) * K, wfirst = wstart / CFG::WPB;
    const int wbeats = wrows ? (wstart + wrows * K - 1) / CFG::WPB - wfirst + 1 : 0;
    const int bstart = d.b + 4 * (wn < 0 ? 0 : wn), bfirst = bstart / CFG::WPB;
    const int pbeats = wbeats + (wrows && d.b >= 0 ? (bstart + 4 * wrows - 1) / CFG::WPB - bfirst + 1 : 0);
    for (int l = 0; l < CFG::LO; ++l) {
#pragma HLS UNROLL
        if (wrows) bias[ws][l] = 0;
    }
#ifndef __SYNTHESIS__
    if (wrows) linear_weight_words_read() += wrows * (K + (d.b >= 0 ? 4 : 0));
#endif
    int ps = 0, pm = 0, pk = -(wstart % CFG::WPB), pb = -(bstart % CFG::WPB);   // prefetch: beat, row, column, bias
    linear_job jb = linear_job_at<CFG>(d, m0, jobs > 1 ? m0 + CFG::TM : after, jobs > 1 || load_after, pm0, wtm,
                                       pn0, jobs > 1);
    if (jobs == 1 && pbeats > jb.trip) jb.trip = pbeats;
    i64 acc[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=acc complete
    int m = 0, k0 = 0;                                 // MAC steps: token, first input lane
    int lm = 0, lk = -(jb.lstart % CFG::WPB);          // load: row and column of the beat's lane 0
    int em = 0, oc = 0, row = (d.y + jb.wm0 * N + jb.wn0) / CFG::WPB;   // write-back: row, beat in the row, its beat
    int t = 0, i = 0;
#ifndef __SYNTHESIS__
    int trips = 0;
#endif
    while (t < jobs) {
        EDGEVIT_TRIPCOUNT(run_trip)
#pragma HLS PIPELINE II=1
        const int nb = CFG::XTILES == 2 ? cur ^ 1 : 0, pr = rj ^ 1;
        if (i < jb.steps) linear_mac_step<CFG>(x[cur], w[wc], bias[wc], acc, res[rj], K, m, k0);
        if (ps < pbeats) {   // the params port: the next weight tile's beats, then its biases'
            const beat_t v = params.beat(ps < wbeats ? wfirst + ps : bfirst + ps - wbeats);
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                if (ps < wbeats) {
                    if (pk >= 0 && pm < wrows) w[ws][pm >> 1][pk][pm & 1] = lane_of(v, l);
                    if (++pk == K) {
                        pk = 0;
                        ++pm;
                    }
                } else if (pb + l >= 0 && pb + l < 4 * wrows) {
                    bias[ws][(pb + l) >> 2] |= (i64)(unsigned short)lane_of(v, l).to_int() << (16 * ((pb + l) & 3));
                }
            }
            if (ps >= wbeats) pb += CFG::WPB;
            ++ps;
        }
        const bool ld = i < jb.lbeats, wb = i >= jb.wfirst && i < jb.wfirst + jb.wtm * jb.rbeats;
        beat_t r = 0;
        if (ld || (wb && resid)) r = arena.beat(ld ? jb.lfirst + i : row + oc + bx);
        if (ld) {
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                if (lk >= 0 && lm < jb.lrows) x[nb][lm][lk] = lane_of(r, l);
                if (++lk == K) {
                    lk = 0;
                    ++lm;
                }
            }
        }
        if (wb) {
            beat_t v = 0;
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                i64 y = epilogue(res[pr][em][oc * CFG::WPB + l], FA, d.act, d.fo, d.wo);
                if (resid) y = add_residual(y, d.fo, lane_of(r, l), d.fx2, d.fo, d.wo);
                set_lane(v, l, word_t(y));
            }
            arena.put_whole_beat(row + oc, v);
            if (++oc == jb.rbeats) {
                oc = 0;
                ++em;
                row += N / CFG::WPB;
            }
        }
#ifndef __SYNTHESIS__
        ++trips;
#endif
        if (++i == jb.trip && ++t < jobs) {   // the run's next job: the tile just loaded, the other result tile
            i = 0;
            cur = nb;
            rj = pr;
            pm0 = jb.m0, ptm = jb.tm, pn0 = n0;
            const int nm = jb.m0 + CFG::TM;
            jb = linear_job_at<CFG>(d, nm, t + 1 < jobs ? nm + CFG::TM : after, t + 1 < jobs || load_after, pm0,
                                    ptm, pn0, t + 1 < jobs);
            if (t + 1 == jobs && pbeats - ps > jb.trip) jb.trip = pbeats - ps;
            m = 0, k0 = 0;
            lm = 0, lk = -(jb.lstart % CFG::WPB);
            em = 0, oc = 0, row = (d.y + jb.wm0 * N + jb.wn0) / CFG::WPB;
        }
    }
#ifndef __SYNTHESIS__
    unit_loop_note(trips);
#endif
}

// Outputs [m0, m0 + tm) x [n0, n0 + LO) from a result tile, on their own (the last tile of an overlapped layer,
// every tile of the others): one pipelined loop over the beats of the tm output rows (min(LO, N - n0) words
// each), WPB outputs a cycle through WPB epilogues, the residual read a beat at a time. A beat the row covers
// only in part keeps its other words (read-modify-write).
template <class CFG>
void linear_write_back(word_port<CFG>& arena, const layer_desc& d, int m0, int tm, int n0, i64 res[CFG::TM][CFG::LO]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens,
                              tripcount_beats<tripcount_const<CFG::LO>, CFG::WPB> > out_beats;
    typedef typename CFG::beat_t beat_t;
    const int N = d.d2, FA = d.fx + d.fw;
    const int cols = N - n0 < CFG::LO ? N - n0 : CFG::LO;
    int beats = 0;
    for (int em = 0; em < tm; ++em) {
        EDGEVIT_TRIPCOUNT(CFG::linear_tile_tokens)
        const int s = d.y + (m0 + em) * N + n0;
        beats += (s + cols - 1) / CFG::WPB - s / CFG::WPB + 1;
    }
#ifndef __SYNTHESIS__
    unit_loop_note(beats);
#endif
    // The residual word of output word g is word g + dx of the arena: lanes sh.. of beat g / WPB + bx, then
    // of the next beat (sh = 0 when the two tensors start at the same offset within a beat, as layer_table
    // lays them out).
    const int dx = d.x2 - d.y, bx = (dx >= 0 ? dx : dx - CFG::WPB + 1) / CFG::WPB, sh = dx - bx * CFG::WPB;
    int em = 0, row = d.y + m0 * N + n0, b = row / CFG::WPB;
    for (int i = 0; i < beats; ++i) {
        EDGEVIT_TRIPCOUNT(out_beats)
#pragma HLS PIPELINE II=1
        beat_t v = 0, r0 = 0, r1 = 0;
        ap_uint<CFG::WPB> lanes = 0;
        if (d.x2 >= 0) {
            r0 = arena.beat(b + bx);
            if (sh) r1 = arena.beat(b + bx + 1);
        }
        for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
            const int lo = b * CFG::WPB + l - row;
            if (lo >= 0 && lo < cols) {
                i64 y = epilogue(res[em][lo], FA, d.act, d.fo, d.wo);
                if (d.x2 >= 0) {
                    const int rl = l + sh;
                    const word_t r = rl < CFG::WPB ? lane_of(r0, rl) : lane_of(r1, rl - CFG::WPB);
                    y = add_residual(y, d.fo, r, d.fx2, d.fo, d.wo);
                }
                set_lane(v, l, word_t(y));
                lanes[l] = 1;
            }
        }
        arena.put_beat(b, v, lanes);
        if ((b + 1) * CFG::WPB >= row + cols) {
            ++em;
            row += N;
            b = row / CFG::WPB;
        } else {
            ++b;
        }
    }
}

// x [M][K] at d.x, w [N][K] at d.w, bias [N] (64-bit) at d.b, residual [M][N] at d.x2, y [M][N] at d.y;
// M, K <= KMAX, N = d0, d1, d2; d3 = 1: weight tiles outer.
//
// The layer is a sequence of (token tile, weight tile) jobs in the descriptor's order. Result tiles, and with
// XTILES = 2 input tiles, are ping-pong pairs: while job j's MAC steps run, the next token tile loads into the other
// input tile and, when linear_overlaps, job j - 1's results leave from the other result tile. With weight tiles
// outer, two input tiles and an overlapped write-back, the jobs of one weight tile are one run (linear_run): one
// pipelined loop, which waits out the m_axi latency once per weight tile instead of once per job. A token tile is
// loaded only when the next job's tokens differ (weight tiles outer over one token tile keep it; so do token tiles
// outer over one weight tile for the weights). What does not overlap runs between runs: the first weight tile (one
// tile), the write-back of a layer that cannot overlap, the token tiles of a design with one input tile, and the
// last job's write-back. With WTILES = 2 every weight tile but the first is prefetched during the run before it
// (linear_run, over the params port, which nothing else uses meanwhile); with WTILES = 1 it loads after that run.
template <class CFG>
void linear_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static word_t x[CFG::XTILES][CFG::TM][CFG::KMAX], w[CFG::WTILES][(CFG::LO + 1) / 2][CFG::KMAX][2];
    static i64 bias[CFG::WTILES][CFG::LO], res[2][CFG::TM][CFG::LO];
#pragma HLS ARRAY_PARTITION variable=x complete dim=1
#pragma HLS ARRAY_PARTITION variable=x cyclic factor=CFG::XBANKS dim=3
#pragma HLS ARRAY_PARTITION variable=w complete dim=2
#pragma HLS ARRAY_PARTITION variable=w cyclic factor=CFG::XBANKS dim=3
#pragma HLS ARRAY_RESHAPE variable=w complete dim=4
#pragma HLS ARRAY_PARTITION variable=bias complete dim=0
#pragma HLS ARRAY_PARTITION variable=res complete dim=1
#pragma HLS ARRAY_PARTITION variable=res complete dim=3
#pragma HLS BIND_STORAGE variable=res type=ram_2p impl=lutram
#ifndef __SYNTHESIS__
    unit_loop_begin();
#endif
    const int M = d.d0, K = d.d1, N = d.d2;
    const int jobs = ((M + CFG::TM - 1) / CFG::TM) * ((N + CFG::LO - 1) / CFG::LO);
    const bool overlap = linear_overlaps<CFG>(d), fuse_load = CFG::XTILES == 2, runs = overlap && fuse_load && d.d3;
    int m0 = 0, n0 = 0, cur = 0, rj = 0, pm0 = 0, ptm = 0, pn0 = 0, wc = 0;
    linear_load_w<CFG>(params, d, 0, w[0], bias[0]);
    linear_load_x<CFG>(arena, d, 0, M < CFG::TM ? M : CFG::TM, x[0]);
    for (int j = 0; j < jobs;) {
        EDGEVIT_TRIPCOUNT(CFG::linear_jobs)
        const int rjobs = runs ? (M - m0 + CFG::TM - 1) / CFG::TM : 1, lm0 = m0 + (rjobs - 1) * CFG::TM;
        const int tm = M - lm0 < CFG::TM ? M - lm0 : CFG::TM;   // the run's last job: tokens [lm0, lm0 + tm)
        int nm0 = lm0, nn0 = n0;   // the job after the run
        if (d.d3) {
            nm0 += CFG::TM;
            if (nm0 >= M) nm0 = 0, nn0 += CFG::LO;
        } else {
            nn0 += CFG::LO;
            if (nn0 >= N) nn0 = 0, nm0 += CFG::TM;
        }
        j += rjobs;
        const bool more = j < jobs, new_x = more && nm0 != lm0, new_w = more && nn0 != n0;
        const int ntm = M - nm0 < CFG::TM ? M - nm0 : CFG::TM;
        const bool prefetch = new_w && CFG::WTILES == 2;
        linear_run<CFG>(params, arena, d, n0, m0, rjobs, nm0, new_x && fuse_load, overlap ? ptm : 0, cur, rj, pm0,
                        ptm, pn0, wc, prefetch ? nn0 : -1, x, w, bias, res);
        if (!overlap) linear_write_back<CFG>(arena, d, lm0, tm, n0, res[rj]);
        const int nxt = CFG::XTILES == 2 ? cur ^ 1 : 0;
        if (new_x && !fuse_load) linear_load_x<CFG>(arena, d, nm0, ntm, x[nxt]);
        if (prefetch) wc ^= 1;
        if (new_w && !prefetch) linear_load_w<CFG>(params, d, nn0, w[0], bias[0]);
        if (new_x) cur = nxt;
        rj ^= 1;
        pm0 = lm0, ptm = tm, pn0 = n0;
        m0 = nm0, n0 = nn0;
    }
    if (overlap) linear_write_back<CFG>(arena, d, pm0, ptm, pn0, res[rj ^ 1]);
#ifndef __SYNTHESIS__
    unit_loop_end();
#endif
}


}  // namespace edgevit

#endif
