/* SPDX-License-Identifier: MIT */
/*
 * The record format inside a channel's byte stream, written by the result
 * partition and read by the input gate: a 4-byte little-endian length, then
 * the payload. A header never straddles two segments (a segment with fewer
 * than FDX__REC_HDR bytes left is finished early); the payload may continue
 * over any number of segments (a spanning record, reassembled by the reader).
 */
#ifndef FDX_RUNTIME_RECORD_H
#define FDX_RUNTIME_RECORD_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

#define FDX__REC_HDR 4u

static inline void fdx__rec_hdr_put(uint8_t *at, uint32_t len)
{
	uint32_t le = htole32(len);

	memcpy(at, &le, FDX__REC_HDR);
}

static inline uint32_t fdx__rec_hdr_get(const uint8_t *at)
{
	uint32_t le;

	memcpy(&le, at, FDX__REC_HDR);
	return le32toh(le);
}

#endif /* FDX_RUNTIME_RECORD_H */
