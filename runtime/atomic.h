/* SPDX-License-Identifier: MIT */
/*
 * Named C11 atomic helpers: every ordering in fdx is spelled out at the call
 * site through one of these, never implied.
 */
#ifndef FDX_RUNTIME_ATOMIC_H
#define FDX_RUNTIME_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
	       "fdx needs lock-free 32- and 64-bit atomics");

#define FDX_CACHELINE 64

static inline uint32_t fdx_load_relaxed_u32(const _Atomic uint32_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static inline void fdx_store_relaxed_u32(_Atomic uint32_t *p, uint32_t v)
{
	atomic_store_explicit(p, v, memory_order_relaxed);
}

static inline uint32_t fdx_load_acquire_u32(const _Atomic uint32_t *p)
{
	return atomic_load_explicit(p, memory_order_acquire);
}

static inline void fdx_store_release_u32(_Atomic uint32_t *p, uint32_t v)
{
	atomic_store_explicit(p, v, memory_order_release);
}

static inline uint64_t fdx_load_relaxed_u64(const _Atomic uint64_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static inline void fdx_add_relaxed_u64(_Atomic uint64_t *p, uint64_t v)
{
	atomic_fetch_add_explicit(p, v, memory_order_relaxed);
}

static inline void fdx_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif /* FDX_RUNTIME_ATOMIC_H */
