/* SPDX-License-Identifier: MIT */
/* The region announcement, for the data socket's first message. */
#ifndef FDX_TRANSPORT_REGION_SHARE_H
#define FDX_TRANSPORT_REGION_SHARE_H

#include <stddef.h>

#include <fdx/region.h>

#include "../runtime/log.h"

#define FDX__REGION_MSG_LEN 24u

/* Write r's 24-byte little-endian announcement at msg. */
void fdx__region_announce(const struct fdx_region *r, void *msg);

/* Send n bytes of prefix then r's announcement, r's memfd attached (read-only reopen). */
int fdx__region_send_with(const struct fdx_region *r, int sock, const void *prefix, size_t n);

/*
 * Check an announcement and map the memfd fd it came with, read-only (see
 * fdx_region_attach()). fd stays the caller's. 0, FDX_EPROTO, FDX_EBADREGION
 * or an error of fdx_region_attach().
 */
int fdx__region_attach_announced(int fd, const void *msg, const struct fdx__log *lg,
				 struct fdx_region **out);

#endif /* FDX_TRANSPORT_REGION_SHARE_H */
