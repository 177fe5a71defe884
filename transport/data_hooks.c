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

static struct fdx__credit_outbox *gate_outbox(void *ud, uint32_t ch)
{
	struct fdx_gate *g = ud;

	return &g->ch[ch].outbox;
}

const struct fdx__gate_hooks fdx__dp_gate_hooks = {gate_opened, gate_closed, gate_failed,
						   gate_busy,	gate_ended,  gate_outbox};

/* ---- channel hooks: with the exchange's lock held ------------------------ */

/* Checked and applied by the subpartition's ledger: the one count of its credit. */
static int chan_credit(void *ud, uint32_t added, const uint64_t *offs, uint32_t n,
		       uint64_t written_ns, const struct fdx__credit_stamp *st, uint32_t *bad)
{
	return fdx__sub_credit(ud, added, offs, n, written_ns, st, bad);
}

static void chan_take_back(void *ud)
{
	fdx__sub_take_back(ud);
}

static uint32_t chan_in_flight(void *ud)
{
	struct fdx__sub *s = ud;

	return fdx__ledger_in_flight(&s->ledger);
}

static void chan_failed(void *ud, int err, const char *msg)
{
	fdx__sub_fail(ud, err, msg, 0);
}

const struct fdx__chan_hooks fdx__dp_chan_hooks = {chan_credit, chan_take_back, chan_in_flight,
						   chan_failed};
