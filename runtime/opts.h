/* SPDX-License-Identifier: MIT */
/*
 * Options structs across versions. Every fdx_*_opts starts with its size, set
 * by the caller to the sizeof it was built with. A create takes a smaller
 * struct from an older caller (the fields it lacks are zero: their defaults)
 * and a larger one from a newer caller only if the fields it does not know
 * are zero; it refuses a size below the first version's.
 */
#ifndef FDX_RUNTIME_OPTS_H
#define FDX_RUNTIME_OPTS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * Copy the caller's options src into dst (ours, dst_size bytes): 0, or
 * -EINVAL if src is NULL, its size is below min (the first version's), or a
 * field beyond ours is set.
 */
static inline int fdx__opts_in(void *dst, size_t dst_size, const void *src, size_t min)
{
	uint32_t size;

	if (!src)
		return -EINVAL;
	memcpy(&size, src, sizeof(size));
	if (size < min)
		return -EINVAL;
	for (size_t i = dst_size; i < size; i++)
		if (((const uint8_t *)src)[i])
			return -EINVAL; /* a newer caller's field we cannot honour */
	memset(dst, 0, dst_size);
	memcpy(dst, src, size < dst_size ? size : dst_size);
	return 0;
}

#endif /* FDX_RUNTIME_OPTS_H */
