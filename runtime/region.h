/* SPDX-License-Identifier: MIT */
/*
 * The region's private layout. The header sits at offset 0 of the shared
 * memory and is read by other processes, so it holds only fixed-width
 * integers (S1) and is pinned by static asserts (S3).
 *
 * Cross-process protocol: the creator writes every header field, then stores
 * layout_version with release (R1); an attacher loads layout_version with
 * acquire (A1) and only then reads the rest. The creator seals the memfd
 * before it can be sent, so the size never changes under an attacher.
 */
#ifndef FDX_RUNTIME_REGION_H
#define FDX_RUNTIME_REGION_H

#include <stddef.h>
#include <stdint.h>

#include <fdx/region.h>

#include "atomic.h"
#include "log.h"

#define FDX_REGION_MAGIC 0x004e474552584446ull /* "FDXREGN\0" little-endian */
#define FDX_REGION_LAYOUT_VERSION 1u

struct fdx__region_hdr {
	uint64_t magic; /* FDX_REGION_MAGIC */
	_Atomic uint32_t layout_version; /* FDX_REGION_LAYOUT_VERSION, stored last (R1) */
	uint32_t hdr_size; /* sizeof(struct fdx__region_hdr) */
	uint64_t region_size; /* bytes, equal to the memfd's size */
	uint64_t data_offset; /* offset of segment 0, equal to seg_size */
	uint64_t page_size; /* page size backing the region */
	uint32_t seg_size; /* power of two in [FDX_SEG_SIZE_MIN, MAX] */
	uint32_t seg_count; /* segments in the region */
	uint32_t creator_pid; /* for diagnostics only */
	uint32_t hugetlb; /* 1 if hugetlb-backed */
};

_Static_assert(sizeof(struct fdx__region_hdr) == 56, "region header size is ABI");
_Static_assert(offsetof(struct fdx__region_hdr, layout_version) == 8, "layout_version offset");
_Static_assert(offsetof(struct fdx__region_hdr, region_size) == 16, "region_size offset");
_Static_assert(offsetof(struct fdx__region_hdr, seg_size) == 40, "seg_size offset");
_Static_assert(offsetof(struct fdx__region_hdr, seg_count) == 44, "seg_count offset");

struct fdx_region {
	uint8_t *base;
	uint64_t size;
	uint64_t page_size;
	uint64_t data_offset;
	uint32_t seg_size;
	uint32_t seg_shift; /* log2(seg_size) */
	uint32_t seg_count;
	int fd;
	int hugetlb;
	int readonly;
	struct fdx__log log;
};

/*
 * The index of the segment at offset, or -1 if offset is not the start of a
 * segment of r. Never reads the region.
 */
static inline int64_t fdx__region_seg_index(const struct fdx_region *r, uint64_t offset)
{
	uint64_t rel;

	if (offset < r->data_offset || (offset & (r->seg_size - 1)) != 0)
		return -1;
	rel = (offset - r->data_offset) >> r->seg_shift;
	if (rel >= r->seg_count)
		return -1;
	return (int64_t)rel;
}

static inline uint64_t fdx__region_seg_offset(const struct fdx_region *r, uint32_t index)
{
	return r->data_offset + ((uint64_t)index << r->seg_shift);
}

/* Check the options of fdx_region_create(); 0 or -EINVAL. */
int fdx__region_check_geometry(uint32_t seg_size, uint64_t seg_count);

#endif /* FDX_RUNTIME_REGION_H */
