/*
 * insn_count: a QEMU TCG plugin that counts the guest instructions a user-mode program executes and writes
 * the total to a file when it exits (plugin argument out=PATH; without it, to stderr).
 *
 * Each translation block gets one inline add of its instruction count, so counting costs one add per block.
 * The add is not atomic: counts are exact for single-threaded guests (edgevit times with TVM_NUM_THREADS=1).
 *
 * The few declarations below are the C ABI of QEMU's plugin API version 1 (QEMU 7.2, Debian 12's qemu-user),
 * written for this file from the API's documentation: edgevit ships no QEMU header. QEMU refuses a plugin
 * whose qemu_plugin_version it does not support, so a mismatch fails loudly rather than miscounting.
 *
 * Licence: Apache-2.0, as the rest of edgevit. Build: tools/count_instructions.py builds it with the host cc.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed;
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = out_path[0] ? fopen(out_path, "w") : stderr;
    if (f == NULL) {
        fprintf(stderr, "insn_count: cannot write %s\n", out_path);
        return;
    }
    fprintf(f, "%" PRIu64 "\n", executed);
    if (f != stderr) {
        fclose(f);
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
                                                               char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) != 0 || strlen(argv[i] + 4) >= sizeof(out_path)) {
            fprintf(stderr, "insn_count: unknown or too long argument '%s' (takes out=PATH)\n", argv[i]);
            return -1;
        }
        strcpy(out_path, argv[i] + 4);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
