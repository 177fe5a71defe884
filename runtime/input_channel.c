/* SPDX-License-Identifier: MIT */
/*
 * An input channel's openings and what its producer may send, as the
 * transport's threads see them (the consumer's side of a channel lives in
 * input_gate.c).
 *
 * A channel is open to one session at a time (sess): the completion-queue
 * thread (a remote producer's open, close or failure) or a local connect
 * sets it, with a compare-and-swap so that exactly one opener, closer or
 * failure wins. Each opening is numbered (opening) before its session is
 * published (release), so that everything that names an opening (credit,
 * CLOSED, FAILED) is counted for that opening only. The loop alone owns the
 * sequence check (expect_seq, rcvd, seq_sess, seq_open): it restarts with
 * each opening.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <fdx/partition.h>

#include "input_gate.h"
#include "result_partition.h"

int fdx__ichan_open(struct fdx_gate *g, uint32_t ch, uint64_t sess, uint32_t link,
		    struct fdx_partition *lpart, struct fdx__sub *lsub, uint64_t *opening)
{
	struct fdx__gchan *c = &g->ch[ch];
	struct fdx__gitem *it = fdx__gitem_new(FDX__GI_OPENED, ch, 0);
	uint64_t none = 0;

	if (!it) {
		FDX_LOG_ERR(g->log, "gate %u: out of memory opening channel %u", g->id, ch);
		return -ENOMEM;
	}
	/* Taken: FDX__SESS_OPENING is busy to another opener and closed to the loop. */
	if (!atomic_compare_exchange_strong(&c->sess, &none, FDX__SESS_OPENING)) {
		free(it);
		return -EBUSY;
	}
	atomic_store_explicit(&c->link, link, memory_order_relaxed);
	atomic_store_explicit(&c->granted_total, g->exclusive, memory_order_relaxed);
	atomic_store_explicit(&c->eop, 0, memory_order_relaxed);
	/* Every opening, local ones too: a view of an opening that ended gives it no credit. */
	*opening = atomic_fetch_add_explicit(&c->opening, 1, memory_order_relaxed) + 1;
	it->sess = sess;
	it->opening = *opening;
	it->link_type = (uint8_t)link;
	it->lpart = lpart;
	it->lserial = lpart ? lpart->serial : 0;
	it->lsub = lsub;
	fdx__gate_push(g, it);
	/* O1: the opening, then the session; pairs with the acquire loads below. */
	atomic_store_explicit(&c->sess, sess, memory_order_release);
	return 0;
}

/*
 * The opening that ends: read after its session (stored after it, O1) and
 * before the channel is free, so no newer opening can have begun. The gate
 * ignores news of an opening it has seen replaced.
 */
static int end_opening(struct fdx__gchan *c, uint64_t sess, uint64_t *opening)
{
	uint64_t was = sess;

	if (atomic_load_explicit(&c->sess, memory_order_acquire) != sess)
		return 0;
	*opening = atomic_load_explicit(&c->opening, memory_order_relaxed);
	/* One winner: a close, a failure or another close of the same opening. */
	return atomic_compare_exchange_strong(&c->sess, &was, 0);
}

void fdx__ichan_close(struct fdx_gate *g, uint32_t ch, uint64_t sess)
{
	struct fdx__gitem *it;
	uint64_t opening;

	if (!end_opening(&g->ch[ch], sess, &opening))
		return;
	it = fdx__gitem_new(FDX__GI_CLOSED, ch, 0);
	if (it) {
		it->sess = sess;
		it->opening = opening;
		fdx__gate_push(g, it);
	}
}

int fdx__ichan_fail(struct fdx_gate *g, uint32_t ch, uint64_t sess, int err, const char *msg)
{
	struct fdx__gitem *it;
	uint64_t opening;

	if (!end_opening(&g->ch[ch], sess, &opening))
		return 0; /* closed or failed already: one FAILED view per opening */
	it = fdx__gitem_new(FDX__GI_FAILED, ch, 0);
	if (!it)
		return 1; /* it ended all the same */
	it->sess = sess;
	it->opening = opening;
	it->error = err;
	snprintf(it->msg, sizeof(it->msg), "%s", msg);
	fdx__gate_push(g, it);
	return 1;
}

int fdx__ichan_busy(struct fdx_gate *g, uint32_t ch)
{
	return atomic_load_explicit(&g->ch[ch].sess, memory_order_acquire) != 0;
}

int fdx__ichan_ended(struct fdx_gate *g, uint32_t ch)
{
	return atomic_load_explicit(&g->ch[ch].eop, memory_order_acquire) != 0;
}

void fdx__ichan_mark_ended(struct fdx_gate *g, uint32_t ch)
{
	atomic_store_explicit(&g->ch[ch].eop, 1, memory_order_release);
}

/*
 * The credit buffer number rcvd + 1 of gc was sent under, as its stamp names
 * it: the loop's check (credit_proof.h). The total is known to within the
 * credit granted and not yet used (< 2^31) from its low 32 bits.
 */
static int within_credit(struct fdx_gate *g, uint32_t ch, struct fdx__gchan *gc,
			 struct fdx__credit_stamp st, char *why, size_t n)
{
	/* R1: pairs with the release in fdx__outbox_take(); what was counted before this buffer. */
	uint64_t granted = atomic_load_explicit(&gc->granted_total, memory_order_acquire);
	uint32_t back = (uint32_t)granted - st.total;
	uint64_t claim = granted - back;
	unsigned long long no = (unsigned long long)gc->rcvd + 1;

	if (back >= 1u << 31 || back > granted) {
		snprintf(why, n,
			 "channel %u of gate %u: buffer %llu names a credit (low bits %u) never "
			 "granted (%llu granted)",
			 ch, g->id, no, st.total, (unsigned long long)granted);
		return 0;
	}
	if (gc->rcvd + 1 > claim) {
		snprintf(why, n,
			 "channel %u of gate %u: buffer %llu sent beyond its credit of %llu (%llu "
			 "granted by now)",
			 ch, g->id, no, (unsigned long long)claim, (unsigned long long)granted);
		return 0;
	}
	/* Above the exclusive credit every opening starts with, only a Credit gave it. */
	if (claim > g->exclusive && claim != gc->claim_ok) {
		if (st.proof != fdx__credit_proof(&g->key, g->id, ch, gc->seq_open, claim)) {
			snprintf(why, n,
				 "channel %u of gate %u: buffer %llu names a credit of %llu it was "
				 "never sent (no proof)",
				 ch, g->id, no, (unsigned long long)claim);
			return 0;
		}
		gc->claim_ok = claim;
	}
	return 1;
}

int fdx__ichan_accept(struct fdx_gate *g, uint32_t ch, uint64_t sess, uint32_t link, uint32_t kind,
		      uint32_t seq, int is_end, struct fdx__credit_stamp st, uint64_t *opening,
		      char *why, size_t n)
{
	struct fdx__gchan *gc = &g->ch[ch];
	uint64_t now = atomic_load_explicit(&gc->sess, memory_order_acquire);
	uint64_t open_no;

	if (now != sess) {
		if (now == 0 || now == FDX__SESS_OPENING)
			return 0; /* closed meanwhile (and perhaps being opened again) */
		snprintf(why, n, "channel %u of gate %u is not open to this peer", ch, g->id);
		return -1;
	}
	/* The loop owns the sequence: it restarts with each new opening. */
	open_no = atomic_load_explicit(&gc->opening, memory_order_relaxed);
	if (gc->seq_sess != sess || gc->seq_open != open_no) {
		gc->seq_sess = sess;
		gc->seq_open = open_no;
		gc->expect_seq = 0;
		gc->rcvd = 0;
		gc->claim_ok = 0;
	}
	/* Credit bounds what a producer may have sent us: a buffer beyond it is a lie. */
	if (kind == FDX__GI_BUFFER && !within_credit(g, ch, gc, st, why, n))
		return -1;
	if (kind != FDX__GI_BACKLOG) {
		if (seq != gc->expect_seq) {
			snprintf(why, n, "channel %u of gate %u: sequence %u, expected %u", ch,
				 g->id, seq, gc->expect_seq);
			return -1;
		}
		gc->expect_seq++;
	}
	if (kind == FDX__GI_BUFFER)
		gc->rcvd++;
	if (kind == FDX__GI_EVENT && is_end)
		atomic_store_explicit(&gc->eop, 1, memory_order_release);
	atomic_store_explicit(&gc->link, link, memory_order_relaxed);
	*opening = gc->seq_open;
	if (kind == FDX__GI_CLOSED) {
		/* The channel's last frame, in order: the next opening starts at 0. */
		gc->expect_seq = 0;
		gc->rcvd = 0;
		fdx__ichan_close(g, ch, sess);
	}
	return 1;
}
