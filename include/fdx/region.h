/* SPDX-License-Identifier: MIT */
/**
 * @file region.h
 * The shared region: one sealed memfd per NetworkBufferPool, hugetlb-backed
 * when hugepages can be had, cut into equal segments named by their offset.
 *
 * Layout: the first segment-sized slot holds a small header (magic, layout
 * version, geometry); segment i lives at offset (i + 1) * seg_size, so every
 * segment offset is a multiple of the segment size and offset 0 is never a
 * segment. The region is sized, pre-faulted and sealed against shrink, grow
 * and further sealing before anyone else can see it.
 *
 * An owner creates a region with fdx_region_create() and maps it read-write.
 * A co-located peer receives its fd (see fdx_region_send()/fdx_region_recv())
 * or calls fdx_region_attach(), which checks the seals, the size and the
 * header before mapping the region read-only.
 *
 * Threads: every function here is thread-safe, except that
 * fdx_region_destroy() must not race with any other use of the region.
 */
#ifndef FDX_FDX_REGION_H
#define FDX_FDX_REGION_H

#include <stdint.h>

#include <fdx/common.h>
#include <fdx/log.h>

FDX_BEGIN_DECLS

struct fdx_region;

/** Whether the region is backed by hugetlb pages. */
enum fdx_hugepage_policy {
	/** Default: hugetlb when it can be had, else a plain memfd (logged as a warning). */
	FDX_HUGEPAGE_PREFER = 0,
	/** Hugetlb or fail with FDX_ENOHUGEPAGES. */
	FDX_HUGEPAGE_REQUIRE = 1,
	/** Always a plain memfd (MADV_HUGEPAGE is still advised). */
	FDX_HUGEPAGE_NEVER = 2,
};

/** Smallest and largest segment sizes; sizes must be powers of two. */
#define FDX_SEG_SIZE_MIN (4u * 1024)
#define FDX_SEG_SIZE_MAX (1024u * 1024)
/** Default segment size. */
#define FDX_SEG_SIZE_DEFAULT (32u * 1024)
/** Largest number of segments in one region. */
#define FDX_SEG_COUNT_MAX (1u << 24)

/**
 * Options of fdx_region_create(). Zero-initialise, set size = sizeof(struct
 * fdx_region_opts), then the fields you need; a zero field means its default.
 */
struct fdx_region_opts {
	uint32_t size; /**< sizeof(struct fdx_region_opts) */
	uint32_t seg_size; /**< segment size in bytes (default 32 KiB) */
	uint32_t seg_count; /**< number of segments (required, >= 1) */
	uint32_t hugepages; /**< one of enum fdx_hugepage_policy */
	fdx_log_fn log_fn; /**< log sink, or NULL to drop messages */
	void *log_ud; /**< passed to log_fn */
	uint32_t log_level; /**< one of enum fdx_log_level; 0 = FDX_LOG_WARN */
	uint32_t reserved; /**< must be 0 */
};

/**
 * The smallest size of struct fdx_region_opts accepted (fdx 0.1's). A later
 * version takes an older caller's smaller struct (missing fields: defaults)
 * and a newer caller's larger one whose extra fields are zero.
 */
#define FDX_REGION_OPTS_SIZE_V1 40u

/**
 * Create a region: a memfd (MFD_HUGETLB per the policy), sized to hold the
 * header slot and seg_count segments (rounded up to the page size), allocated,
 * mapped read-write, pre-faulted, given its header and sealed with
 * F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL (Linux 5.1+),
 * so no peer can resize it, map it writable or punch holes in it. Logs the page size
 * obtained at FDX_LOG_INFO, and the fallback to small pages at FDX_LOG_WARN.
 *
 * @param o options (borrowed; the log sink must stay callable until the
 *   region is destroyed).
 * @param out receives the region, owned by the caller until
 *   fdx_region_destroy(); set to NULL first, assigned only on success.
 * @return 0 on success;
 *   -EINVAL if o or out is NULL, o->size is below
 *     FDX_REGION_OPTS_SIZE_V1 or sets a field this version does not know, seg_size is not a
 *     power of two in [FDX_SEG_SIZE_MIN, FDX_SEG_SIZE_MAX], seg_count is 0 or above
 *     FDX_SEG_COUNT_MAX, the policy is unknown or reserved is not 0;
 *   FDX_ENOHUGEPAGES if the policy is FDX_HUGEPAGE_REQUIRE and the system has
 *     no hugepages or not enough of them free (any failure of the hugetlb
 *     memfd is reported so);
 *   -ENOMEM if the memory cannot be allocated (also a plain memfd's -ENOSPC);
 *   another -errno from memfd_create, ftruncate, fallocate, mmap,
 *     madvise(MADV_POPULATE_WRITE) or fcntl (-EINVAL from fcntl on a kernel
 *     without F_SEAL_FUTURE_WRITE).
 * Thread-safe.
 */
FDX_API int fdx_region_create(const struct fdx_region_opts *o, struct fdx_region **out);

/**
 * Map a region that another process created, read-only. Before mapping,
 * checks that fd is a memfd, that it carries F_SEAL_SHRINK, F_SEAL_GROW,
 * F_SEAL_SEAL and F_SEAL_FUTURE_WRITE (or F_SEAL_WRITE), and then that its
 * size equals expected_size; after mapping, checks
 * the header's magic, layout version and geometry. The region keeps its own
 * duplicate of fd; the caller keeps ownership of fd.
 *
 * @param fd the memfd (borrowed).
 * @param expected_size the size the owner announced, in bytes.
 * @param log_fn log sink for the reasons of a refusal (errors and warnings
 *   only), or NULL; it must stay callable until the region is destroyed.
 * @param log_ud passed to log_fn.
 * @param out receives the region, owned by the caller until
 *   fdx_region_destroy(); set to NULL first, assigned only on success.
 * @return 0 on success;
 *   -EINVAL if fd < 0, expected_size is 0 or out is NULL;
 *   FDX_ENOTMEMFD if fd is not a sealable memfd (a pipe, a regular file, ...;
 *     without /proc mounted a tmpfs file is reported as FDX_EUNSEALED);
 *   FDX_EUNSEALED if a required seal is missing;
 *   FDX_ESIZE if the memfd is not exactly expected_size bytes long, or that
 *     size is not a multiple of its page size;
 *   FDX_EBADREGION if the header's magic, version or geometry is wrong;
 *   -ENOMEM, or another -errno from fstat, fcntl, dup or mmap.
 * Thread-safe.
 */
FDX_API int fdx_region_attach(int fd, uint64_t expected_size, fdx_log_fn log_fn, void *log_ud,
			      struct fdx_region **out);

/**
 * Unmap the region and close its fd; every pointer derived from it becomes
 * invalid. For a created region, nothing may use its segments any more
 * (destroy the NetworkBufferPool first if there is one; never destroy the
 * region fdx_nbp_region() returns). Peers that attached keep their own
 * mapping. NULL is a no-op.
 */
FDX_API void fdx_region_destroy(struct fdx_region *r);

/**
 * The region's memfd, or -1 if r is NULL. Owned by the region: do not close
 * it; valid until fdx_region_destroy().
 */
FDX_API int fdx_region_fd(const struct fdx_region *r);

/** The region's total size in bytes (header slot included), or 0 if r is NULL. */
FDX_API uint64_t fdx_region_size(const struct fdx_region *r);

/** The page size actually backing the region (e.g. 2 MiB or 4 KiB), or 0 if r is NULL. */
FDX_API uint64_t fdx_region_page_size(const struct fdx_region *r);

/** 1 if the region is hugetlb-backed, 0 if not or r is NULL. */
FDX_API int fdx_region_is_hugetlb(const struct fdx_region *r);

/** 1 if this process maps the region read-only (attached), 0 if not or r is NULL. */
FDX_API int fdx_region_is_readonly(const struct fdx_region *r);

/** The segment size in bytes, or 0 if r is NULL. */
FDX_API uint32_t fdx_region_seg_size(const struct fdx_region *r);

/** The number of segments, or 0 if r is NULL. */
FDX_API uint32_t fdx_region_seg_count(const struct fdx_region *r);

/**
 * A pointer to [offset, offset + len) of the region, derived from this
 * process's base address, valid until fdx_region_destroy(). The memory is
 * writable only for the region's creator, and only by the segment's owner.
 *
 * @return the pointer, or NULL if r is NULL, len is 0 or the range is not
 *   entirely inside a segment of the region (the header slot included).
 */
FDX_API void *fdx_region_ptr(const struct fdx_region *r, uint64_t offset, uint64_t len);

/**
 * Hand the region to a co-located process: send one message with the region's
 * size and geometry and, with SCM_RIGHTS, a read-only descriptor of its memfd
 * over a connected Unix socket. Blocks as the socket does. The region keeps
 * its own descriptor; the receiver gets a new one.
 *
 * @param r the region, created or attached (borrowed).
 * @param sock a connected AF_UNIX stream socket (borrowed).
 * @return 0 on success; -EINVAL if r is NULL or sock < 0; -EPIPE if the peer
 *   is gone; another -errno from sendmsg (-EAGAIN on a non-blocking socket
 *   that is full, -ENOTSOCK, ...). Thread-safe.
 */
FDX_API int fdx_region_send(const struct fdx_region *r, int sock);

/**
 * Receive a region sent with fdx_region_send() and attach it read-only (see
 * fdx_region_attach() for the checks). Blocks as the socket does (use
 * SO_RCVTIMEO for a bound). The received descriptor is closed in every case;
 * the region keeps its own.
 *
 * @param sock a connected AF_UNIX stream socket (borrowed).
 * @param log_fn log sink for the reasons of a refusal, or NULL; it must stay
 *   callable until the region is destroyed.
 * @param log_ud passed to log_fn.
 * @param out receives the region, owned by the caller until
 *   fdx_region_destroy(); set to NULL first, assigned only on success.
 * @return 0 on success; -EINVAL if sock < 0 or out is NULL;
 *   FDX_EPROTO if the message is not a region announcement, is cut short or
 *     truncated, or carries no descriptor, more than one, or foreign control
 *     data;
 *   -ECONNRESET if the peer closed the socket;
 *   -EAGAIN if a receive timeout or non-blocking socket had nothing;
 *   every error of fdx_region_attach(), and FDX_EBADREGION also if the
 *     geometry differs from the announced one; another -errno from recvmsg.
 * Thread-safe.
 */
FDX_API int fdx_region_recv(int sock, fdx_log_fn log_fn, void *log_ud, struct fdx_region **out);

FDX_END_DECLS

#endif /* FDX_FDX_REGION_H */
