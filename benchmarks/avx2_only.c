/* An AVX2-only x86-64 CPU, seen from inside one process tree (benchmarks/hidden_isa.py).

   LD_PRELOAD=avx2_only.so CMD: CMD's CPUID reports no AVX-512, VNNI (AVX-512 or AVX) or AMX, and
   its /proc/cpuinfo lists no such flags, so ONNX Runtime, PyTorch and anomalycli pick the kernels an
   AVX2-only line PC runs, and run them natively, at this core's speed. CPUID faulting (Linux's
   arch_prctl ARCH_SET_CPUID, where /proc/cpuinfo lists cpuid_fault) makes each CPUID trap to the
   handler below, which runs it and clears those bits. The setting is kept across threads and fork,
   and an exec starts again here through LD_PRELOAD. QEMU (emulated_cpu.py) gives such kernels'
   results; this gives their speed. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))
/* CPUID leaf 7, subleaf 0. EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL. ECX: VBMI, VBMI2, VNNI,
   BITALG, VPOPCNTDQ. EDX: VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8. */
static const unsigned HIDDEN_7_0[3] = {
    BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31),
    BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14),
    BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25),
};
/* Leaf 7, subleaf 1, EAX: AVX-VNNI, AVX512-BF16. */
static const unsigned HIDDEN_7_1_EAX = BIT(4) | BIT(5);

static long set_cpuid(unsigned long on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)sig, (void)info;
    greg_t *r = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* not a CPUID: a real fault, which kills as it would have */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        b &= ~HIDDEN_7_0[0], c &= ~HIDDEN_7_0[1], d &= ~HIDDEN_7_0[2];
    } else if (leaf == 7 && sub == 1) {
        a &= ~HIDDEN_7_1_EAX;
    }
    r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d;
    r[REG_RIP] += 2; /* past the CPUID */
}

__attribute__((constructor)) static void start(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, 0);
    if (set_cpuid(0) != 0) /* a kernel or sandbox without it: say so to the process, which then hides nothing */
        setenv("AVX2_ONLY_REFUSED", strerror(errno), 1);
}

/* /proc/cpuinfo without those flags, for what reads it instead of CPUID (anomalycli's labels). */
static int hidden(const char *flag, size_t n) {
    return (n >= 6 && !strncmp(flag, "avx512", 6)) || (n >= 3 && !strncmp(flag, "amx", 3)) || (n >= 8 && !strncmp(flag, "avx_vnni", 8)) ||
           (n == 8 && !strncmp(flag, "avx_ifma", 8));
}

static int cpuinfo_copy(void) {
    int real = (int)syscall(SYS_openat, AT_FDCWD, "/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
    if (real < 0) return real;
    size_t size = 0, room = 1 << 16;
    char *text = malloc(room);
    for (ssize_t got; (got = read(real, text + size, room - size)) > 0;) {
        size += (size_t)got;
        if (size == room) text = realloc(text, room *= 2);
    }
    close(real);
    int copy = memfd_create("cpuinfo", MFD_CLOEXEC);
    for (size_t at = 0; at < size;) {
        char *end = memchr(text + at, '\n', size - at);
        size_t line = end ? (size_t)(end - (text + at)) + 1 : size - at;
        char *colon = memchr(text + at, ':', line);
        if (line > 5 && !strncmp(text + at, "flags", 5) && colon) {
            size_t head = (size_t)(colon - (text + at)) + 1;
            write(copy, text + at, head);
            for (size_t i = at + head; i < at + line;) {
                while (i < at + line && (text[i] == ' ' || text[i] == '\n')) i++;
                size_t first = i;
                while (i < at + line && text[i] != ' ' && text[i] != '\n') i++;
                if (i > first && !hidden(text + first, i - first)) {
                    write(copy, " ", 1);
                    write(copy, text + first, i - first);
                }
            }
            write(copy, "\n", 1);
        } else {
            write(copy, text + at, line);
        }
        at += line;
    }
    free(text);
    lseek(copy, 0, SEEK_SET);
    return copy;
}

static int is_cpuinfo(const char *path) { return path != NULL && strcmp(path, "/proc/cpuinfo") == 0; }

/* The mode an open's caller passed after its flags. Read always, as glibc's own wrappers do not: without
   O_CREAT or O_TMPFILE the caller passed none, and the value read (a register's leftover on x86-64) is ignored. */
#define MODE_AFTER(flags) ({ va_list rest; va_start(rest, flags); int mode = va_arg(rest, int); va_end(rest); mode; })

#define OPEN_AS(name)                                                          \
    int name(const char *path, int flags, ...) {                               \
        static int (*next)(const char *, int, ...);                            \
        if (is_cpuinfo(path)) return cpuinfo_copy();                           \
        if (!next) next = dlsym(RTLD_NEXT, #name);                             \
        return next(path, flags, MODE_AFTER(flags));                           \
    }
OPEN_AS(open)
OPEN_AS(open64)

#define OPENAT_AS(name)                                                        \
    int name(int folder, const char *path, int flags, ...) {                   \
        static int (*next)(int, const char *, int, ...);                       \
        if (is_cpuinfo(path)) return cpuinfo_copy();                           \
        if (!next) next = dlsym(RTLD_NEXT, #name);                             \
        return next(folder, path, flags, MODE_AFTER(flags));                   \
    }
OPENAT_AS(openat)
OPENAT_AS(openat64)

#define FOPEN_AS(name)                                                         \
    FILE *name(const char *path, const char *how) {                            \
        static FILE *(*next)(const char *, const char *);                      \
        if (is_cpuinfo(path)) return fdopen(cpuinfo_copy(), "r");              \
        if (!next) next = dlsym(RTLD_NEXT, #name);                             \
        return next(path, how);                                                \
    }
FOPEN_AS(fopen)
FOPEN_AS(fopen64)
