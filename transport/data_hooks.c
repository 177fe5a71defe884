/* SPDX-License-Identifier: MIT */
/*
 * What the control plane's hooks (exchange_internal.h) do in the data plane:
 * a gate's input channels opened, closed and failed by producers on their
 * control streams, and a producer channel's credit, loss and failure, into
 * its subpartition's ledger (runtime/). The protocol itself is runtime/'s
 * (fdx__ichan_*, fdx__sub_*); these only route to it.
 *
 * Locking: the hooks run with the exchange's lock held, on its
 * completion-queue thread (exchange_internal.h) or inside a call of the
 * data plane into the exchange; they must not block and take no lock of the
 * data plane (dp->lock comes before the exchange's).
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>

#include <fdx/gate.h>
#include <fdx/partition.h>

#include "dataplane_private.h"

/* ---- gate hooks: the cq thread, with the exchange's lock held ------------ */

static int gate_opened(void *ud, uint32_t ch, uint64_t sess, const char *peer, uint64_t *opening)
{
	(void)peer;
	return fdx__ichan_open(ud, ch, sess, 0, NULL, NULL, opening);
}

/*
 * The producer's close on the control stream may overtake its last frames on
 * the data socket: then (data_close) the channel ends with the CLOSE frame
 * there, in order, or with the session. A producer that never had a data
 * socket closes it here.
 */
static void gate_closed(void *ud, uint32_t ch, uint64_t sess, int data_close)
{
	if (!data_close)
		fdx__ichan_close(ud, ch, sess);
}

static void gate_failed(void *ud, uint32_t ch, uint64_t sess, int err, const char *msg)
{
	fdx__ichan_fail(ud, ch, sess, err, msg);
}

static int gate_busy(void *ud, uint32_t ch)
{
	return fdx__ichan_busy(ud, ch);
}

static int gate_ended(void *ud, uint32_t ch)
{
	return fdx__ichan_ended(ud, ch);
}

const struct fdx__gate_hooks fdx__dp_gate_hooks = {gate_opened, gate_closed, gate_failed, gate_busy,
						   gate_ended};

/* ---- channel hooks: with the exchange's lock held ------------------------ */

static void chan_credit(void *ud, uint32_t added, const uint64_t *offs, uint32_t n)
{
	struct fdx__sub *s = ud;
	uint32_t bad = 0;

	if (fdx__sub_credit(s, added, offs, n, &bad) < 0)
		FDX_LOG_ERR(s->part->log, "partition %s: subpartition %u: credit refused",
			    s->part->id, s->index);
}

static void chan_failed(void *ud, int err, const char *msg)
{
	fdx__sub_fail(ud, err, msg, 0);
}

static void chan_lost(void *ud, uint32_t n)
{
	struct fdx__sub *s = ud;

	atomic_fetch_add_explicit(&s->lost, n, memory_order_relaxed);
}

const struct fdx__chan_hooks fdx__dp_chan_hooks = {chan_credit, chan_lost, chan_failed};
