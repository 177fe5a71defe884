/* SPDX-License-Identifier: MIT */
/**
 * @file error.h
 * Error codes. Every fdx function that can fail returns 0 (or a count >= 0) on
 * success and a negative code on failure: either a negated errno value
 * (-EINVAL, -ENOMEM, -EAGAIN, -ETIMEDOUT, ...) or one of the fdx-specific codes
 * below, which lie outside the errno range. fdx never sets errno.
 */
#ifndef FDX_FDX_ERROR_H
#define FDX_FDX_ERROR_H

#include <fdx/common.h>

FDX_BEGIN_DECLS

/** fdx-specific error codes (negative, below -4095 so they never meet an errno). */
enum fdx_error {
	/** The file descriptor is not a memfd that supports sealing. */
	FDX_ENOTMEMFD = -5001,
	/** The memfd is not sealed against shrink, grow and further sealing. */
	FDX_EUNSEALED = -5002,
	/** The memfd's size differs from the size that was announced. */
	FDX_ESIZE = -5003,
	/** The region's header (magic, layout version or geometry) is wrong. */
	FDX_EBADREGION = -5004,
	/** Hugepages were required but could not be had. */
	FDX_ENOHUGEPAGES = -5005,
	/** Not enough free segments in the NetworkBufferPool for a pool's minimum. */
	FDX_ENOSEGMENTS = -5006,
	/** The buffer does not belong to this LocalBufferPool (or is not a segment). */
	FDX_ENOTOWNED = -5007,
	/** The buffer is already free: a double recycle. */
	FDX_EALREADYFREE = -5008,
	/**
	 * The object is being destroyed (a pool while the caller waited on it, a
	 * partition or a gate), or the subpartition has ended.
	 */
	FDX_ECLOSED = -5009,
	/** A message received from a peer is malformed. */
	FDX_EPROTO = -5010,
	/** The peer speaks another protocol version. */
	FDX_EVERSION = -5011,
	/**
	 * The peer refused us with no errno to say why, or we refused it (a data
	 * socket with a token no control stream handed out). A Unix peer refused
	 * for its uid sees -ECONNREFUSED or FDX_EPEERGONE instead.
	 */
	FDX_EREFUSED = -5012,
	/** The peer went away (process died, socket closed, stream ended). */
	FDX_EPEERGONE = -5013,
};

/**
 * A human-readable name for an fdx return code.
 *
 * @param err a return code of any fdx function (0, -errno or an fdx_error).
 * @return a static string (the caller must not free it); never NULL, also
 *   for unknown codes. Thread-safe.
 */
FDX_API const char *fdx_strerror(int err);

FDX_END_DECLS

#endif /* FDX_FDX_ERROR_H */
