/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpus of the fuzz targets: valid and nearly valid inputs
 * in the formats fuzz_data.c and fuzz_control.c describe.
 *
 *   fdx-fuzz-seeds DIR     writes DIR/data/NAME and DIR/control/NAME
 *
 * The committed corpus is tests/fuzz/corpus/; run this again after a change
 * of either wire or of the targets' input formats. Inputs that broke a
 * target once are kept there too, under names starting with "crash-" (a bug
 * fixed) or "known-" (a limit the target allows for, see fuzz_entry.h).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <fdx/fdx.h>

#include "exchange.pb-c.h"
#include "runtime/credit_proof.h"
#include "runtime/input_gate.h"
#include "runtime/result_partition.h"
#include "transport/data_wire.h"

#define SEG 4096u
#define SEG_OFF(k) ((uint64_t)SEG * ((k) + 1)) /* segment k of the fuzzers' peer region */
#define PEER_REGION_SIZE (5u * SEG)
#define TOKEN "fdx-fuzz-token!!"

/* ---- an input being built --------------------------------------------------------- */

struct buf {
	uint8_t b[16384];
	size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > sizeof(b->b)) {
		fprintf(stderr, "seed too long\n");
		exit(1);
	}
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void put8(struct buf *b, uint8_t v)
{
	put(b, &v, 1);
}

static const char *dir;

static void save(const char *kind, const char *name, const struct buf *b)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, kind, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->b, 1, b->n, f) != b->n || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* ---- data: [config] [n] [schedule] [stream] ------------------------------------------ */

enum {
	D_TCP = 1,
	D_HELLO = 2,
	D_MEMFD = 1 << 2,
	D_MEMFD_EXTRA = 2 << 2,
	D_DEVNULL = 3 << 2,
	D_HANGUP = 0x10,
	D_CONSUME = 0x20
};

/* Buffers each channel of the input being built was sent so far (data_start() resets). */
static uint32_t n_buffers[16];

/*
 * The stamp of an honest producer's buffer k (from 1) on channel ch of gate:
 * gate A's exclusive credit (2, unproven), then k itself, proven as the
 * consumer proves it under the fuzzers (its key is getrandom's, wrapped:
 * fz_token; each channel's first opening). It holds once the consumer gave
 * that much credit back.
 */
static void honest_stamp(struct fdx__dhdr *h, uint32_t gate, uint32_t ch)
{
	struct fdx__credit_key key;
	uint32_t k = ++n_buffers[ch % 16];

	memcpy(&key.k, TOKEN, sizeof(key.k)); /* little-endian words of the token's bytes */
	key.k[0] = le64toh(key.k[0]);
	key.k[1] = le64toh(key.k[1]);
	h->credit = htole32(k < 2 ? 2 : k);
	if (k > 2)
		h->credit_proof = htole32(fdx__credit_proof(&key, gate, ch, 1, k));
}

static void frame(struct buf *b, uint32_t type, uint32_t gate, uint32_t ch, uint32_t seq,
		  uint32_t len, uint64_t offset, uint32_t backlog, uint32_t ev, uint16_t flags)
{
	struct fdx__dhdr h;

	memset(&h, 0, sizeof(h));
	h.magic = htole32(FDX__DH_MAGIC);
	h.version = FDX__DH_VERSION;
	h.type = (uint8_t)type;
	h.flags = htole16(flags);
	h.gate = htole32(gate);
	h.gate_channel = htole32(ch);
	h.seq = htole32(seq);
	h.len = htole32(len);
	h.offset = htole64(offset);
	h.backlog = htole32(backlog);
	h.event_type = htole32(ev);
	if (type == FDX__DH_BUFFER)
		honest_stamp(&h, gate, ch);
	put(b, &h, sizeof(h));
}

static void shm_buf(struct buf *b, uint32_t gate, uint32_t ch, uint32_t seq, uint64_t off,
		    uint32_t len, uint32_t backlog)
{
	frame(b, FDX__DH_BUFFER, gate, ch, seq, len, off, backlog, 0, 0);
}

/* A tcp buffer: records of the given lengths (a length above what follows spans). */
static void tcp_records(struct buf *b, uint32_t gate, uint32_t ch, uint32_t seq, uint32_t backlog,
			const uint32_t *recs, uint32_t n, uint32_t total)
{
	uint8_t pay[SEG];
	uint32_t at = 0;

	memset(pay, 0, sizeof(pay));
	for (uint32_t i = 0; i < n && at + 4 <= total; i++) {
		uint32_t le = htole32(recs[i]);

		memcpy(pay + at, &le, 4);
		at += 4;
		for (uint32_t k = 0; k < recs[i] && at < total; k++)
			pay[at++] = (uint8_t)(i * 31 + k);
	}
	frame(b, FDX__DH_BUFFER, gate, ch, seq, total, 0, backlog, 0, 0);
	put(b, pay, total);
}

static void event(struct buf *b, uint32_t gate, uint32_t ch, uint32_t seq, uint32_t ev,
		  uint32_t len, uint16_t flags)
{
	uint8_t pay[64];

	for (uint32_t i = 0; i < sizeof(pay); i++)
		pay[i] = (uint8_t)i;
	frame(b, FDX__DH_EVENT, gate, ch, seq, len, 0, 0, ev, flags);
	put(b, pay, len < sizeof(pay) ? len : sizeof(pay));
}

static void hello(struct buf *b, uint32_t link, const char *token)
{
	frame(b, FDX__DH_HELLO, 0, 0, 0, 0, 0, 0, link, 0);
	put(b, token, 16);
}

static void announce(struct buf *b, uint64_t size, uint32_t seg, uint32_t count)
{
	uint32_t magic = htole32(0x52584446u), s32 = htole32(seg), c32 = htole32(count);
	uint16_t ver = htole16(1), msz = htole16(24);
	uint64_t s64 = htole64(size);

	put(b, &magic, 4);
	put(b, &ver, 2);
	put(b, &msz, 2);
	put(b, &s64, 8);
	put(b, &s32, 4);
	put(b, &c32, 4);
}

static void data_start(struct buf *b, uint8_t cfg, const uint8_t *sched, uint8_t n)
{
	b->n = 0;
	memset(n_buffers, 0, sizeof(n_buffers));
	put8(b, cfg);
	put8(b, n);
	put(b, sched, n);
}

static void data_seeds(void)
{
	static const uint32_t recs_a[] = {10, 0, 200, 30};
	static const uint32_t recs_span[] = {900};
	static const uint32_t recs_big[] = {100000};
	const uint8_t consume_each[] = {0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0,
					0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0};
	const uint8_t split[] = {0x01, 0x13, 0x27, 0x80, 0x05, 0x7e, 0x80, 0x7d, 0x80, 0x7f};
	struct buf b;

	/* shm: buffers, an event, a backlog, an abort, a close; the consumer takes them last. */
	data_start(&b, D_HANGUP, NULL, 0);
	shm_buf(&b, 7, 0, 0, SEG_OFF(0), 100, 1);
	shm_buf(&b, 7, 0, 1, SEG_OFF(0) + 100, 3000, 0);
	event(&b, 7, 0, 2, FDX_EVENT_WATERMARK, 8, 0);
	frame(&b, FDX__DH_BACKLOG, 7, 1, 0, 0, 0, 3, 0, 0);
	shm_buf(&b, 7, 1, 0, SEG_OFF(3), SEG, 2);
	frame(&b, FDX__DH_ABORT, 7, 0, 3, 0, 0, 0, 0, 0);
	event(&b, 9, 0, 0, FDX_EVENT_BARRIER, 16, FDX__DH_PRIORITY);
	event(&b, 7, 0, 4, FDX_EVENT_END_OF_PARTITION, 0, 0);
	frame(&b, FDX__DH_CLOSE, 7, 0, 5, 0, 0, 0, 0, 0);
	save("data", "shm-mix", &b);

	/* shm: credit comes back as the consumer releases; records span buffers. */
	data_start(&b, D_CONSUME, consume_each, sizeof(consume_each));
	for (uint32_t i = 0; i < 12; i++)
		shm_buf(&b, 7, 2, i, SEG_OFF(i % 4) + (i * 512) % SEG, 512, 12 - i);
	save("data", "shm-credit-flow", &b);

	/* shm, received in small pieces, with control-plane news in between. */
	data_start(&b, 0, split, sizeof(split));
	for (uint32_t i = 0; i < 4; i++)
		shm_buf(&b, 7, 0, i, SEG_OFF(1) + 64 * i, 64, 0);
	event(&b, 7, 1, 0, FDX_EVENT_USER, 40, 0);
	save("data", "shm-split", &b);

	/* shm faults: each fails the connection. */
	data_start(&b, 0, NULL, 0);
	shm_buf(&b, 7, 0, 0, SEG_OFF(0) + SEG - 10, 20, 0); /* crosses its segment's end */
	save("data", "shm-cross-segment", &b);
	data_start(&b, 0, NULL, 0);
	shm_buf(&b, 7, 0, 0, 100, 10, 0); /* in the header slot */
	save("data", "shm-header-slot", &b);
	data_start(&b, 0, NULL, 0);
	shm_buf(&b, 7, 0, 0, SEG_OFF(4), 10, 0); /* past the last segment */
	save("data", "shm-past-end", &b);
	data_start(&b, 0, NULL, 0);
	shm_buf(&b, 7, 0, 0, SEG_OFF(0), 10, 0);
	shm_buf(&b, 7, 0, 1, SEG_OFF(1), 10, 0);
	shm_buf(&b, 7, 0, 2, SEG_OFF(2), 10, 0); /* beyond its 2 credits */
	save("data", "shm-beyond-credit", &b);
	data_start(&b, 0, NULL, 0);
	shm_buf(&b, 7, 0, 1, SEG_OFF(0), 10, 0); /* skips a sequence number */
	save("data", "shm-seq-skip", &b);
	data_start(&b, 0, NULL, 0);
	shm_buf(&b, 7, 3, 0, SEG_OFF(0), 10, 0); /* another peer's channel */
	shm_buf(&b, 11, 0, 0, SEG_OFF(0), 10, 0); /* a gate removed: dropped */
	shm_buf(&b, 9, 1, 0, SEG_OFF(0), 10, 0); /* a channel not open: dropped */
	shm_buf(&b, 8, 0, 0, SEG_OFF(0), 10, 0); /* no such gate */
	save("data", "shm-channels", &b);
	data_start(&b, 0, NULL, 0);
	frame(&b, FDX__DH_EVENT, 7, 0, 0, FDX_EVENT_PAYLOAD_MAX + 1, 0, 0, FDX_EVENT_USER, 0);
	save("data", "shm-event-too-long", &b);

	/* tcp: records in the gate's segments, one spanning two buffers. */
	data_start(&b, D_TCP | D_CONSUME | D_HANGUP, NULL, 0);
	tcp_records(&b, 7, 0, 0, 1, recs_a, 4, 300);
	tcp_records(&b, 7, 0, 1, 0, recs_span, 1, 700); /* continues in the next buffer */
	event(&b, 7, 0, 2, FDX_EVENT_WATERMARK, 8, 0);
	tcp_records(&b, 7, 0, 3, 0, recs_a, 4, 300);
	frame(&b, FDX__DH_ABORT, 7, 0, 4, 0, 0, 0, 0, 0);
	tcp_records(&b, 7, 1, 0, 0, recs_big, 1, 64); /* a record above max_record */
	tcp_records(&b, 9, 0, 0, 0, recs_a, 1, 20); /* gate 9 has no pool */
	save("data", "tcp-records", &b);

	data_start(&b, D_TCP | (1u << 6), NULL, 0); /* receives of one header (48 bytes) */
	event(&b, 7, 2, 0, FDX_EVENT_USER, 64, 0);
	tcp_records(&b, 7, 2, 1, 0, recs_a, 4, 300);
	frame(&b, FDX__DH_BUFFER, 7, 2, 2, SEG + 1, 0, 0, 0, 0); /* above a segment */
	save("data", "tcp-oversize", &b);

	/* hellos: tcp with the token, shm with the region and its memfd. */
	data_start(&b, D_HELLO | D_HANGUP, NULL, 0);
	hello(&b, FDX_LINK_TCP, TOKEN);
	tcp_records(&b, 7, 0, 0, 0, recs_a, 4, 300);
	save("data", "hello-tcp", &b);
	data_start(&b, D_HELLO | D_MEMFD | D_CONSUME, NULL, 0);
	hello(&b, FDX_LINK_SHM, TOKEN);
	announce(&b, PEER_REGION_SIZE, SEG, 4);
	shm_buf(&b, 7, 0, 0, SEG_OFF(0), 100, 0);
	shm_buf(&b, 7, 0, 1, SEG_OFF(2), 400, 0);
	save("data", "hello-shm", &b);
	data_start(&b, D_HELLO | D_MEMFD_EXTRA, NULL, 0);
	hello(&b, FDX_LINK_SHM, TOKEN);
	announce(&b, PEER_REGION_SIZE, SEG, 4);
	save("data", "hello-shm-extra-fd", &b);
	data_start(&b, D_HELLO | D_MEMFD, NULL, 0);
	hello(&b, FDX_LINK_SHM, TOKEN);
	announce(&b, PEER_REGION_SIZE, SEG, 8); /* the geometry lies */
	save("data", "hello-shm-bad-geometry", &b);
	data_start(&b, D_HELLO | D_DEVNULL, NULL, 0);
	hello(&b, FDX_LINK_SHM, TOKEN);
	announce(&b, PEER_REGION_SIZE, SEG, 4);
	save("data", "hello-shm-not-memfd", &b);
	data_start(&b, D_HELLO, NULL, 0);
	hello(&b, FDX_LINK_TCP, "not-the-token!!!");
	save("data", "hello-bad-token", &b);
}

/* ---- control: [config] [operations] --------------------------------------------------- */

enum { C_PEER = 1, C_CANCEL = 4, C_HOOK = 8, C_READS = 0x40, C_OWNER = 0x80 };

static void cframe(struct buf *b, const Fdx__ControlFrame *f)
{
	uint8_t tmp[4096];
	size_t n = fdx__control_frame__pack(f, tmp);

	put8(b, 0);
	put8(b, (uint8_t)n);
	put8(b, (uint8_t)(n >> 8));
	put(b, tmp, n);
}

/* A producer's hello; same_host: it names the boot id fdx__fuzz_exchange_create() gives. */
static void c_hello_from(struct buf *b, uint32_t version, int same_host)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Hello h = FDX__HELLO__INIT;
	Fdx__Link links[] = {FDX__LINK__LINK_SHM, FDX__LINK__LINK_TCP};

	h.protocol_version = version;
	h.taskmanager_id = "seed-producer";
	h.boot_id = same_host ? "fdx-fuzz-boot-id" : "another-host";
	h.pid = 42;
	h.segment_size = 32768;
	h.n_links = 2;
	h.links = links;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO;
	f.hello = &h;
	cframe(b, &f);
}

static void c_hello(struct buf *b, uint32_t version)
{
	c_hello_from(b, version, 0);
}

static void c_open(struct buf *b, uint32_t id, uint32_t gate, uint32_t ch)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannel o = FDX__OPEN_CHANNEL__INIT;

	o.id = id;
	o.partition_id = "p";
	o.subpartition = ch;
	o.gate = gate;
	o.gate_channel = ch;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN;
	f.open = &o;
	cframe(b, &f);
}

static void c_close(struct buf *b, uint32_t id, int data_close)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CloseChannel c = FDX__CLOSE_CHANNEL__INIT;

	c.channel = id;
	c.data_close = data_close;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CLOSE;
	f.close = &c;
	cframe(b, &f);
}

/* The consumer's answer to our close. */
static void c_closed(struct buf *b, uint32_t id)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__ChannelClosed c = FDX__CHANNEL_CLOSED__INIT;

	c.channel = id;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CLOSED;
	f.closed = &c;
	cframe(b, &f);
}

static void c_backlog(struct buf *b, uint32_t n, const uint32_t *ids, const uint32_t *bls)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Backlog bl = FDX__BACKLOG__INIT;

	bl.n_channels = bl.n_backlogs = n;
	bl.channels = (uint32_t *)ids;
	bl.backlogs = (uint32_t *)bls;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_BACKLOG;
	f.backlog = &bl;
	cframe(b, &f);
}

static void c_error(struct buf *b, int32_t code, uint32_t chan, const char *msg)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Error e = FDX__ERROR__INIT;

	e.code = code;
	e.channel = chan;
	e.message = (char *)msg;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_ERROR;
	f.error = &e;
	cframe(b, &f);
}

static void c_stats(struct buf *b)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__StatsRequest r = FDX__STATS_REQUEST__INIT;

	f.frame_case = FDX__CONTROL_FRAME__FRAME_STATS_REQUEST;
	f.stats_request = &r;
	cframe(b, &f);
}

static void c_hello_ack(struct buf *b)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__HelloAck a = FDX__HELLO_ACK__INIT;

	a.protocol_version = FDX_PROTOCOL_VERSION;
	a.taskmanager_id = "seed-consumer";
	a.link = FDX__LINK__LINK_SHM;
	a.data_endpoint = "unix:/nonexistent/seed.data";
	a.tcp_data_endpoint = "127.0.0.1:1";
	a.token.data = (uint8_t *)TOKEN;
	a.token.len = 16;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO_ACK;
	f.hello_ack = &a;
	cframe(b, &f);
}

static void c_open_ack(struct buf *b, uint32_t id, uint32_t credit)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannelAck a = FDX__OPEN_CHANNEL_ACK__INIT;

	a.id = id;
	a.initial_credit = credit;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN_ACK;
	f.open_ack = &a;
	cframe(b, &f);
}

/* One CreditUpdate of n credits: channel, added, and k offsets (indexes) each. */
struct cr {
	uint32_t channel, added, k;
	uint64_t offs[4];
};

static void c_credit(struct buf *b, const struct cr *crs, uint32_t n)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CreditUpdate cu = FDX__CREDIT_UPDATE__INIT;
	Fdx__Credit c[4], *cp[4];

	for (uint32_t i = 0; i < n; i++) {
		fdx__credit__init(&c[i]);
		c[i].channel = crs[i].channel;
		c[i].added = crs[i].added;
		c[i].n_returned_offsets = crs[i].k;
		c[i].returned_offsets = (uint64_t *)crs[i].offs;
		cp[i] = &c[i];
	}
	cu.n_credits = n;
	cu.credits = cp;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CREDIT;
	f.credit = &cu;
	cframe(b, &f);
}

static void c_stats_reply(struct buf *b)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__StatsReply r = FDX__STATS_REPLY__INIT;

	r.taskmanager_id = "seed-consumer";
	f.frame_case = FDX__CONTROL_FRAME__FRAME_STATS_REPLY;
	f.stats_reply = &r;
	cframe(b, &f);
}

static void op(struct buf *b, uint8_t code, const uint8_t *args, size_t n)
{
	put8(b, code);
	put(b, args, n);
}

static void control_start(struct buf *b, uint8_t cfg)
{
	b->n = 0;
	memset(n_buffers, 0, sizeof(n_buffers));
	put8(b, cfg);
}

#define OFFI(i) (4096ull * ((i) + 1)) /* the target's offset index i */

static void control_seeds(void)
{
	static const uint32_t ids[] = {10, 11}, bls[] = {3, 0};
	struct buf b;

	/* session: hello, opens on both gates, backlog, credit from the owner, stats, closes. */
	control_start(&b, C_OWNER | C_READS);
	c_hello_from(&b, FDX_PROTOCOL_VERSION, 1);
	c_open(&b, 10, 1, 0);
	c_open(&b, 11, 2, 1);
	c_backlog(&b, 2, ids, bls);
	op(&b, 2, (const uint8_t[]){0x11, 3, 2, 0, 1}, 5); /* credit gate 2 channel 1 */
	op(&b, 2, (const uint8_t[]){0x00, 1, 0}, 3); /* credit gate 1 channel 0 */
	op(&b, 1, NULL, 0);
	c_stats(&b);
	c_close(&b, 10, 1);
	c_close(&b, 11, 0);
	save("control", "session-basic", &b);

	/* session: a gate goes while its channel is open, a data socket fails, closes cross. */
	control_start(&b, C_READS);
	c_hello(&b, FDX_PROTOCOL_VERSION);
	c_open(&b, 1, 1, 2);
	c_open(&b, 2, 1, 3);
	op(&b, 4, (const uint8_t[]){3, 0}, 2); /* data socket of gate 1 channel 3 fails */
	op(&b, 5, (const uint8_t[]){0, 0}, 2); /* gate 1 destroyed and made again */
	c_close(&b, 1, 1);
	c_open(&b, 3, 1, 2);
	op(&b, 3, NULL, 0);
	c_error(&b, FDX_EPROTO, 0, "seed: you are at fault");
	save("control", "session-gate-gone", &b);

	/* session faults. */
	control_start(&b, C_CANCEL);
	c_open(&b, 1, 1, 0); /* before the hello */
	save("control", "session-no-hello", &b);
	control_start(&b, 0);
	c_hello(&b, 99);
	save("control", "session-bad-version", &b);
	control_start(&b, 0);
	c_hello(&b, FDX_PROTOCOL_VERSION);
	c_open(&b, 5, 2, 0);
	c_open(&b, 5, 2, 1); /* id twice */
	save("control", "session-open-twice", &b);
	control_start(&b, C_READS);
	c_hello(&b, FDX_PROTOCOL_VERSION);
	c_open(&b, 5, 2, 9); /* no such channel: refused, the stream goes on */
	c_open(&b, 6, 7, 0); /* no such gate */
	c_open(&b, 7, 2, 0);
	c_open(&b, 8, 2, 0); /* busy */
	c_credit(&b, (const struct cr[]){{7, 1, 0, {0}}}, 1); /* credit from a producer */
	save("control", "session-refusals", &b);
	control_start(&b, 0);
	c_hello(&b, FDX_PROTOCOL_VERSION);
	c_backlog(&b, 2, ids, bls); /* unknown channels */
	save("control", "session-unknown-backlog", &b);
	control_start(&b, 0);
	c_hello(&b, FDX_PROTOCOL_VERSION);
	c_hello(&b, FDX_PROTOCOL_VERSION); /* a second hello */
	put8(&b, 7);
	put8(&b, 3);
	put(&b, "\xff\xff\xff", 3); /* does not parse */
	save("control", "session-garbage", &b);

	/* peer: the consumer answers, grants and hands back; offsets go out first. */
	control_start(&b, C_PEER | (1u << 4) | C_READS | C_OWNER);
	c_hello_ack(&b);
	c_open_ack(&b, 1, 2);
	c_open_ack(&b, 2, 1);
	op(&b, 2, (const uint8_t[]){0, 0}, 2); /* sent on channel 1 at OFFI(0) */
	op(&b, 2, (const uint8_t[]){0, 1}, 2);
	op(&b, 2, (const uint8_t[]){0, 2}, 2); /* no credit left */
	op(&b, 2, (const uint8_t[]){1, 5}, 2);
	op(&b, 4, (const uint8_t[]){0, 7}, 2); /* backlog */
	c_credit(&b, (const struct cr[]){{1, 2, 2, {OFFI(0), OFFI(1)}}, {2, 1, 1, {OFFI(5)}}}, 2);
	op(&b, 2, (const uint8_t[]){0, 3}, 2);
	op(&b, 5, (const uint8_t[]){0, 5}, 2); /* a hooked channel's loop sends */
	c_stats_reply(&b);
	c_error(&b, -ENOENT, 2, "seed: gate gone");
	op(&b, 5, (const uint8_t[]){0, 0}, 2); /* close channel 1 */
	c_credit(&b, (const struct cr[]){{1, 1, 1, {OFFI(3)}}}, 1); /* after the close: counts */
	save("control", "peer-basic", &b);

	/* peer: closes confirmed (the channel is freed), credit after that fails the stream. */
	control_start(&b, C_PEER | (1u << 4) | C_HOOK | C_READS | C_OWNER);
	c_hello_ack(&b);
	c_open_ack(&b, 1, 2);
	c_open_ack(&b, 2, 2);
	op(&b, 2, (const uint8_t[]){0, 0}, 2); /* sent on channel 1 */
	op(&b, 5, (const uint8_t[]){0, 1}, 2); /* close channel 1 with a CLOSE frame */
	c_credit(&b, (const struct cr[]){{1, 1, 1, {OFFI(0)}}}, 1); /* crossed the close */
	c_closed(&b, 1);
	c_error(&b, -ENOENT, 2, "seed: gate gone"); /* we close 2 in answer */
	c_closed(&b, 2);
	c_closed(&b, 2); /* twice: no such channel */
	c_credit(&b, (const struct cr[]){{1, 1, 0, {0}}}, 1);
	save("control", "peer-close-confirmed", &b);

	/* peer, hooked channels (as the data plane): taken back when the stream fails. */
	control_start(&b, C_PEER | (3u << 4) | C_HOOK | C_READS | (1u << 1));
	c_hello_ack(&b);
	c_open_ack(&b, 1, 1);
	c_open_ack(&b, 2, 3);
	c_open_ack(&b, 3, 0);
	c_error(&b, -EBUSY, 4, "seed: busy");
	op(&b, 2, (const uint8_t[]){1, 0}, 2);
	op(&b, 2, (const uint8_t[]){1, 1}, 2);
	c_credit(&b, (const struct cr[]){{2, 1, 1, {OFFI(1)}}}, 1);
	op(&b, 2, (const uint8_t[]){1, 2}, 2);
	op(&b, 5, (const uint8_t[]){3, 2}, 2); /* data socket of channel 4 fails */
	save("control", "peer-hooked", &b);

	/* peer faults. */
	control_start(&b, C_PEER);
	c_hello_ack(&b);
	c_open_ack(&b, 1, 1);
	c_credit(&b, (const struct cr[]){{1, 1, 1, {OFFI(9)}}}, 1); /* never sent */
	save("control", "peer-bad-offset", &b);
	control_start(&b, C_PEER);
	c_hello_ack(&b);
	c_open_ack(&b, 1, 1);
	c_credit(&b, (const struct cr[]){{1, 1, 0, {0}}, {1, 1, 0, {0}}}, 2); /* named twice */
	save("control", "peer-credit-twice", &b);
	control_start(&b, C_PEER);
	c_hello_ack(&b);
	c_open_ack(&b, 1, 0xffffffffu);
	c_credit(&b, (const struct cr[]){{1, 5, 0, {0}}}, 1); /* overflows */
	save("control", "peer-credit-overflow", &b);
	control_start(&b, C_PEER | (1u << 4));
	c_hello_ack(&b);
	c_open_ack(&b, 7, 1); /* never opened */
	c_credit(&b, (const struct cr[]){{9, 1, 0, {0}}}, 1);
	save("control", "peer-unknown", &b);
	control_start(&b, C_PEER | (1u << 4));
	c_hello_ack(&b);
	op(&b, 5, (const uint8_t[]){0, 4}, 2); /* the opener gives up */
	c_open_ack(&b, 1, 2); /* a late answer: closed again */
	c_error(&b, -ENOENT, 1, "seed: late");
	c_hello(&b, FDX_PROTOCOL_VERSION); /* not from a consumer */
	save("control", "peer-late-answer", &b);
}

int main(int argc, char **argv)
{
	char path[512];

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/data", dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/control", dir);
	mkdir(path, 0755);
	data_seeds();
	control_seeds();
	return 0;
}
