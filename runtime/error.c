/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <string.h>

#include <fdx/error.h>

FDX_API const char *fdx_strerror(int err)
{
	const char *s;

	switch (err) {
	case 0:
		return "success";
	case FDX_ENOTMEMFD:
		return "descriptor is not a sealable memfd";
	case FDX_EUNSEALED:
		return "memfd is not sealed against shrink, grow and sealing";
	case FDX_ESIZE:
		return "memfd size differs from the announced size";
	case FDX_EBADREGION:
		return "region header is invalid (magic, version or geometry)";
	case FDX_ENOHUGEPAGES:
		return "hugepages were required but are not available";
	case FDX_ENOSEGMENTS:
		return "not enough free segments in the NetworkBufferPool";
	case FDX_ENOTOWNED:
		return "buffer is not owned by this pool";
	case FDX_EALREADYFREE:
		return "buffer is already free (double recycle)";
	case FDX_ECLOSED:
		return "closed: the pool, partition or gate is being destroyed, or the subpartition ended";
	case FDX_EPROTO:
		return "malformed message from peer";
	case FDX_EVERSION:
		return "peer speaks another protocol version";
	case FDX_EREFUSED:
		return "refused by or refusing the peer";
	case FDX_EPEERGONE:
		return "peer went away";
	}
	if (err < 0 && err > -4096) {
		/* strerrordesc_np() returns a static string: thread-safe, unlike strerror(). */
		s = strerrordesc_np(-err);
		if (s)
			return s;
	}
	return "unknown error";
}
