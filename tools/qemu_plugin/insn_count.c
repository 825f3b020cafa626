/*
 * insn_count: a QEMU TCG plugin that counts the guest instructions a user-mode aarch64 program executes, in
 * total and by class, and writes "class whole region" lines to a file when it exits (plugin argument
 * out=PATH; without it, to stderr): "whole" counts the process, "region" only what runs between two markers.
 *
 * Markers: the guest calls lseek(-1, 0x45564954, SEEK_SET) to start the region and lseek(-1, 0x45564955,
 * SEEK_SET) to end it (fd -1: the kernel answers EBADF and nothing else happens). A counting script puts them
 * around N inferences, so start-up work, which varies by a few million instructions from run to run (memory
 * layout, lazily loaded libraries), stays out of the per-inference count.
 *
 * Classes (decoded from the A64 encodings in the Arm ARM, section C4 "A64 instruction set encoding"):
 *   fmla          FMLA vector and by-element, single/double precision (the float GEMM work)
 *   fmadd         scalar FMADD (a float multiply-add one value at a time)
 *   dot           SDOT/UDOT vector and by-element (int8 dot product, Armv8.2 dotprod)
 *   int_mac       SMLAL/UMLAL, SMULL/UMULL, SADALP/UADALP, MLA vector (int8/int16 multiply-accumulate without dot)
 *   load_q        128-bit SIMD&FP loads: LDR/LDUR/LDP q, LD1-LD4 (multiple structures) of full vectors
 *   load_d        64-bit SIMD&FP loads: LDR/LDUR/LDP d, LD1-LD4 of half vectors
 *   load_s        8/16/32-bit SIMD&FP loads: LDR/LDUR/LDP s, h, b (one float at a time)
 *   load_lane     LD1-LD4 (single structure) into one lane
 *   load_dup      LD1R-LD4R (load one element, replicate to all lanes)
 *   total         every executed instruction
 *
 * Each translation block gets one inline add per class present in it, computed when the block is translated,
 * so counting costs a few adds per block. The adds are not atomic: counts are exact for single-threaded guests
 * (edgevit counts with TVM_NUM_THREADS=1). A block left early by an exception counts in full (rare in
 * user mode: signals).
 *
 * The few declarations below are the C ABI of QEMU's plugin API version 1 (QEMU 7.2, Debian 12's qemu-user),
 * written for this file from the API's documentation: edgevit ships no QEMU header. QEMU refuses a plugin
 * whose qemu_plugin_version it does not support, so a mismatch fails loudly rather than miscounting.
 *
 * With the argument blocks=PATH it also writes, per translated block executed in the region, its guest
 * address, instruction count, times executed in the region and its class counts: a profile that
 * tools/count_instructions.py maps to the symbols of the loaded libraries (which kernel executes what).
 *
 * Licence: Apache-2.0, as the rest of edgevit. Build: tools/count_instructions.py builds it with the host cc.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
typedef void (*syscall_cb)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                           uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb cb);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

enum klass { TOTAL, FMLA, FMADD, DOT, INT_MAC, LOAD_Q, LOAD_D, LOAD_S, LOAD_LANE, LOAD_DUP, OTHER, N_CLASSES };
static const char *const class_names[N_CLASSES] = {"total", "fmla", "fmadd", "dot", "int_mac", "load_q", "load_d",
                                                   "load_s", "load_lane", "load_dup", "other"};

static uint64_t executed[N_CLASSES];
static uint64_t region_start[N_CLASSES], region[N_CLASSES];
static int in_region;

#define SYS_LSEEK_AARCH64 62
#define MARK_START 0x45564954u
#define MARK_END 0x45564955u
static char out_path[4096];
static char blocks_path[4096];

/* The per-block profile: blocks are allocated once each (their exec counter is the target of an inline add,
 * so it must not move) and found through an open-addressing table of pointers keyed by guest address (a block
 * translated again reuses its entry). The region's share is exec at the end marker minus exec at the start. */
struct block {
    uint64_t vaddr;
    uint64_t exec, at_start, in_region;
    uint32_t classes[N_CLASSES];
};
static struct block **table;
static size_t n_slots, n_used;

static struct block **slot_for(struct block **t, size_t slots, uint64_t vaddr)
{
    size_t i = (size_t)((vaddr >> 2) * 0x9E3779B97F4A7C15ull) & (slots - 1);
    while (t[i] != NULL && t[i]->vaddr != vaddr) {
        i = (i + 1) & (slots - 1);
    }
    return &t[i];
}

static struct block *block_for(uint64_t vaddr)
{
    if (2 * (n_used + 1) > n_slots) {
        size_t slots = n_slots ? 2 * n_slots : 1 << 16;
        struct block **grown = calloc(slots, sizeof(*grown));
        if (grown == NULL) {
            fprintf(stderr, "insn_count: out of memory for the block profile\n");
            abort();
        }
        for (size_t i = 0; i < n_slots; i++) {
            if (table[i] != NULL) {
                *slot_for(grown, slots, table[i]->vaddr) = table[i];
            }
        }
        free(table);
        table = grown;
        n_slots = slots;
    }
    struct block **slot = slot_for(table, n_slots, vaddr);
    if (*slot == NULL) {
        *slot = calloc(1, sizeof(**slot));
        if (*slot == NULL) {
            fprintf(stderr, "insn_count: out of memory for the block profile\n");
            abort();
        }
        (*slot)->vaddr = vaddr;
        n_used++;
    }
    return *slot;
}

#define MATCHES(insn, mask, value) (((insn) & (mask)) == (value))
#define BIT(insn, n) (((insn) >> (n)) & 1u)

/* The width in bits of a SIMD&FP register load or pair load. */
static enum klass load_width_class(unsigned bits)
{
    return bits == 128 ? LOAD_Q : bits == 64 ? LOAD_D : LOAD_S;
}

static enum klass classify(uint32_t insn)
{
    /* FMLA (vector), FMLA (by element), single and double precision. */
    if (MATCHES(insn, 0xBFA0FC00u, 0x0E20CC00u) || MATCHES(insn, 0xBF80F400u, 0x0F801000u)) {
        return FMLA;
    }
    if (MATCHES(insn, 0xFF208000u, 0x1F000000u)) {
        return FMADD;
    }
    /* SDOT/UDOT (vector), (by element). */
    if (MATCHES(insn, 0x9FE0FC00u, 0x0E809400u) || MATCHES(insn, 0x9FC0F400u, 0x0F80E000u)) {
        return DOT;
    }
    /* SMLAL/UMLAL (vector, by element), SMULL/UMULL (vector), SADALP/UADALP, MLA (vector). */
    if (MATCHES(insn, 0x9F20FC00u, 0x0E208000u) || MATCHES(insn, 0x9F00F400u, 0x0F002000u)
        || MATCHES(insn, 0x9F20FC00u, 0x0E20C000u) || MATCHES(insn, 0x9F3FFC00u, 0x0E206800u)
        || MATCHES(insn, 0xBF20FC00u, 0x0E209400u)) {
        return INT_MAC;
    }
    /* Load/store register, SIMD&FP (immediate, unscaled, pre/post-index, register offset): xx111 1 0x. */
    if (MATCHES(insn, 0x3E000000u, 0x3C000000u)) {
        if (!BIT(insn, 22)) {
            return OTHER; /* a store */
        }
        return BIT(insn, 23) ? LOAD_Q : load_width_class(8u << (insn >> 30));
    }
    /* Load/store register pair, SIMD&FP: opc 101 1 0 mode L. */
    if (MATCHES(insn, 0x3E000000u, 0x2C000000u)) {
        return BIT(insn, 22) ? load_width_class(32u << (insn >> 30)) : OTHER;
    }
    /* Load register (literal), SIMD&FP. */
    if (MATCHES(insn, 0x3F000000u, 0x1C000000u)) {
        return load_width_class(32u << (insn >> 30));
    }
    /* Advanced SIMD load/store multiple structures (LD1-LD4), with or without post-index. */
    if (MATCHES(insn, 0xBF000000u, 0x0C000000u)) {
        return BIT(insn, 22) ? (BIT(insn, 30) ? LOAD_Q : LOAD_D) : OTHER;
    }
    /* Advanced SIMD load/store single structure: opcode 11x is the replicating form (LD1R...). */
    if (MATCHES(insn, 0xBF000000u, 0x0D000000u)) {
        if (!BIT(insn, 22)) {
            return OTHER;
        }
        return ((insn >> 14) & 3u) == 3u ? LOAD_DUP : LOAD_LANE;
    }
    return OTHER;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    uint64_t in_block[N_CLASSES] = {0};
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;
        if (qemu_plugin_insn_size(insn) == sizeof(word)) {
            memcpy(&word, qemu_plugin_insn_data(insn), sizeof(word)); /* A64 is little-endian here */
            in_block[classify(word)]++;
        } else {
            in_block[OTHER]++;
        }
    }
    in_block[TOTAL] = n;
    if (blocks_path[0]) {
        /* Retranslation may move the table (rehash): entries are looked up again by address, never cached. */
        struct block *b = block_for(qemu_plugin_tb_vaddr(tb));
        for (int k = 0; k < N_CLASSES; k++) {
            b->classes[k] = (uint32_t)in_block[k];
        }
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->exec, 1);
    }
    for (int k = 0; k < N_CLASSES; k++) {
        if (in_block[k]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed[k], in_block[k]);
        }
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id, (void)vcpu_index, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num != SYS_LSEEK_AARCH64 || (uint32_t)a1 != 0xFFFFFFFFu) {
        return;
    }
    if (a2 == MARK_START && !in_region) {
        memcpy(region_start, executed, sizeof(executed));
        for (size_t i = 0; i < n_slots; i++) {
            if (table[i] != NULL) {
                table[i]->at_start = table[i]->exec;
            }
        }
        in_region = 1;
    } else if (a2 == MARK_END && in_region) {
        for (int k = 0; k < N_CLASSES; k++) {
            region[k] += executed[k] - region_start[k];
        }
        for (size_t i = 0; i < n_slots; i++) {
            if (table[i] != NULL) {
                table[i]->in_region += table[i]->exec - table[i]->at_start;
                table[i]->at_start = table[i]->exec;
            }
        }
        in_region = 0;
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = out_path[0] ? fopen(out_path, "w") : stderr;
    if (f == NULL) {
        fprintf(stderr, "insn_count: cannot write %s\n", out_path);
        return;
    }
    for (int k = 0; k < N_CLASSES; k++) {
        fprintf(f, "%s %" PRIu64 " %" PRIu64 "\n", class_names[k], executed[k], region[k]);
    }
    if (f != stderr) {
        fclose(f);
    }
    if (!blocks_path[0]) {
        return;
    }
    FILE *b = fopen(blocks_path, "w");
    if (b == NULL) {
        fprintf(stderr, "insn_count: cannot write %s\n", blocks_path);
        return;
    }
    for (size_t i = 0; i < n_slots; i++) {
        const struct block *blk = table[i];
        if (blk == NULL || blk->in_region == 0) {
            continue;
        }
        fprintf(b, "%" PRIx64 " %" PRIu64, blk->vaddr, blk->in_region);
        for (int k = 0; k < N_CLASSES; k++) {
            fprintf(b, " %" PRIu32, blk->classes[k]);
        }
        fputc('\n', b);
    }
    fclose(b);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
                                                               char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        char *dest = strncmp(argv[i], "out=", 4) == 0 ? out_path : strncmp(argv[i], "blocks=", 7) == 0 ? blocks_path
                                                                                                 : NULL;
        const char *value = dest == out_path ? argv[i] + 4 : argv[i] + 7;
        if (dest == NULL || strlen(value) >= sizeof(out_path)) {
            fprintf(stderr, "insn_count: unknown or too long argument '%s' (takes out=PATH, blocks=PATH)\n",
                    argv[i]);
            return -1;
        }
        strcpy(dest, value);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
