/* SPDX-License-Identifier: MIT */
/*
 * Size-versioned structs at the API (H2): a caller sets st->size to the
 * sizeof it was compiled with, which may be older and smaller than ours.
 */
#ifndef FDX_RUNTIME_ABI_H
#define FDX_RUNTIME_ABI_H

#include <stdint.h>
#include <string.h>

/*
 * Copy a filled-in stats struct src (of our size) to the caller's dst, only
 * as many bytes as the caller's size field says; dst keeps its size field.
 * Both start with uint32_t size; the caller checked dst's size is >= 8.
 */
static inline void fdx__stats_copy(void *dst, void *src, size_t src_size)
{
	uint32_t want;

	memcpy(&want, dst, sizeof(want));
	memcpy(src, &want, sizeof(want));
	memcpy(dst, src, want < src_size ? want : src_size);
}

#endif /* FDX_RUNTIME_ABI_H */
