/* SPDX-License-Identifier: MIT */
/*
 * How much one control frame may carry: what a TaskManager packs stays below
 * FDX_CTL_FRAME_MAX (include/fdx/exchange.h), the most it accepts, even with
 * every field at its widest (tests/test_proto.c packs that frame).
 */
#ifndef FDX_TRANSPORT_CONTROL_LIMITS_H
#define FDX_TRANSPORT_CONTROL_LIMITS_H

/* Most returned offsets in one CreditUpdate (about 80 KiB on the wire). */
#define FDX__CREDIT_MSG_OFFSETS_MAX 8192u
/* And at most this many channels (Credit entries) in it. */
#define FDX__CREDIT_MSG_CHANNELS_MAX 4096u
/* Channels in one Backlog frame at most. */
#define FDX__BACKLOG_FRAME_CHANNELS_MAX 4096u

#endif /* FDX_TRANSPORT_CONTROL_LIMITS_H */
