// Every CPU-feature check of csrc/ lives here.  Extensions are compiled for
// baseline x86-64 (no -march=native), so a wheel runs on any CPU of its
// platform; each vector kernel is compiled with a target attribute
// (FAULTKIT_TARGET_*) and chosen at run time by the predicates below, which
// ask the CPU once (__builtin_cpu_supports: cpuid, and xgetbv for the OS's
// saving of the vector registers) and cache the answer.  No Python.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
// The x86-64 kernels (AVX2, AVX-512) are compiled in.
#define FAULTKIT_X86_KERNELS 1
#define FAULTKIT_TARGET_AVX2 __attribute__((target("avx2")))
#define FAULTKIT_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))
#define FAULTKIT_TARGET_AVX512_F_DQ __attribute__((target("avx512f,avx512dq")))
#define FAULTKIT_TARGET_AVX512_F_BW __attribute__((target("avx512f,avx512bw")))
#define FAULTKIT_TARGET_AVX512_F_DQ_VL __attribute__((target("avx512f,avx512dq,avx512vl")))
#endif

namespace faultkit {
namespace cpu {

// What this CPU runs, read once.  All false off x86-64.
struct Features {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
    bool avx512dq = false;
    bool avx512bw = false;
    bool avx512vl = false;
};

inline const Features& features() noexcept {
    static const Features f = [] {
        Features r;
#ifdef FAULTKIT_X86_KERNELS
        __builtin_cpu_init();
        r.avx2 = __builtin_cpu_supports("avx2");
        r.fma = __builtin_cpu_supports("fma");
        r.avx512f = __builtin_cpu_supports("avx512f");
        r.avx512dq = __builtin_cpu_supports("avx512dq");
        r.avx512bw = __builtin_cpu_supports("avx512bw");
        r.avx512vl = __builtin_cpu_supports("avx512vl");
#endif
        return r;
    }();
    return f;
}

// One predicate per target attribute above.
inline bool avx2() noexcept { return features().avx2; }
inline bool avx2_fma() noexcept { return features().avx2 && features().fma; }
inline bool avx512_f_dq() noexcept { return features().avx512f && features().avx512dq; }
inline bool avx512_f_bw() noexcept { return features().avx512f && features().avx512bw; }
inline bool avx512_f_dq_vl() noexcept {
    return features().avx512f && features().avx512dq && features().avx512vl;
}

}  // namespace cpu
}  // namespace faultkit
