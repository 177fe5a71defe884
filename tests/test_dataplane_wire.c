/* SPDX-License-Identifier: MIT */
/*
 * The data wire against a peer that does not follow it. The consumer is this
 * process: an exchange on a Unix socket in a temporary directory and a gate
 * of two channels. Two producers are this program re-executed, forked before
 * the test creates its exchange:
 * - "fake CASE": opens channel 0 of the gate on the control plane (the real
 *   one), takes the token and the data endpoints the handshake gave
 *   (fdx__exchange_peer_data()), then speaks the data wire by hand on a raw
 *   socket and breaks it the way CASE says. It prints "closed ok" once the
 *   consumer closed that socket (EOF or ECONNRESET within a bounded time).
 *   Where the consumer refuses the socket before it knows whose it is (bad
 *   token, not a hello), the fake then opens a correct data socket and sends
 *   one good buffer on channel 0: the session must be unharmed.
 * - "good CHANNEL": a real partition, connected over shm to CHANNEL; on "go"
 *   it emits GOOD_RECORDS records and finishes.
 * Both read "addr ADDRESS" on stdin, print what they did, then wait for
 * "stop" (or EOF) and exit 0 only if everything they checked held.
 *
 * Each case asserts: the consumer fails channel 0 with the exact fdx error
 * and a message naming the peer and the fault (or, for a socket refused
 * before its session is known, logs why and keeps channel 0 working); the
 * bad frame never reaches the gate; the fake sees its socket closed; the
 * consumer holds none of the descriptors the fake passed; and afterwards the
 * good producer's records arrive intact. Every wait is bounded.
 */
#ifdef _GNU_SOURCE
/* helpers.h defines it; a build that passes -D_GNU_SOURCE must not see two definitions. */
#undef _GNU_SOURCE
#endif
#include "helpers.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <fdx/gate.h>
#include <fdx/partition.h>

#include "runtime/input_gate.h"
#include "runtime/result_partition.h"
#include "transport/data_wire.h"
#include "runtime/region.h"
#include "transport/exchange_internal.h"
#include "transport/region_share.h"

#define GATE 7u
#define N_CH 2u /* the gate's channels: 0 for the fake, 1 for the good producer */
#define CONS_SEG (32u * 1024) /* the consumer's segments (tcp receives into them) */
#define FAKE_SEG 4096u /* the fake's region: 4 segments of 4 KiB after the header slot */
#define FAKE_SEGS 4u
#define GOOD_RECORDS 300u
#define OUTCOME_MS 5000 /* the longest the consumer may take to fail or refuse a socket */
#define CLOSED_MS 5000 /* the longest the fake waits to see its socket closed */
#define STEP_MS 10000 /* any other single wait */
#define MEMFD_TAG "fdxwire-" /* the name of every memfd the consumer must not keep */

#define ULL(x) ((unsigned long long)(x))

/* ---- the cases -------------------------------------------------------------- */

enum wcase_id {
	SHM_OFFSET_OUTSIDE_REGION,
	SHM_OFFSET_IN_HEADER_SLOT,
	SHM_SLICE_CROSSES_SEGMENT_END,
	SHM_LEN_ABOVE_SEGMENT,
	SHM_LEN_ZERO,
	SHM_OFFSET_PAST_LAST_SEGMENT,
	SHM_SEQ_SKIPS_AHEAD,
	SHM_UNKNOWN_GATE,
	SHM_CHANNEL_OUT_OF_RANGE,
	SHM_CHANNEL_OF_ANOTHER_PEER,
	SHM_BAD_MAGIC,
	SHM_BAD_VERSION,
	SHM_UNKNOWN_TYPE,
	SHM_EVENT_TOO_LONG,
	SHM_EVENT_UNKNOWN_TYPE,
	SHM_SECOND_HELLO,
	SHM_HELLO_WITHOUT_MEMFD,
	SHM_REGION_UNSEALED,
	SHM_REGION_SHORTER,
	SHM_REGION_WITH_EXTRA_DESCRIPTORS,
	HELLO_WRONG_TOKEN,
	HELLO_TOKEN_REUSED,
	HELLO_GARBAGE,
	HELLO_EXTRA_DESCRIPTORS,
	TCP_HELLO_WITH_MEMFD,
	TCP_LEN_ABOVE_SEGMENT,
	TCP_SEQ_REPLAYED,
	TCP_EVENT_TOO_LONG,
	SHM_FAILED_CHANNEL_REOPENED,
	SHM_BUFFER_BEYOND_CREDIT,
	TCP_BUFFER_BEYOND_CREDIT,
	SHM_BUFFER_BEYOND_CREDIT_REGRANTED,
	TCP_BUFFER_BEYOND_CREDIT_REGRANTED,
	SHM_BUFFER_UNPROVEN_CREDIT,
	N_CASES,
};

struct wcase {
	const char *name; /* the fake's argument */
	uint32_t link; /* the fake's data link: FDX_LINK_SHM or FDX_LINK_TCP */
	int32_t error; /* of the FAILED view of channel 0; 0: refused before the session is known */
	const char *why; /* in the FAILED view's message, or in the log when error is 0 */
	uint32_t valid_first; /* good buffers the fake sends on channel 0 before the bad frame */
	uint32_t good_channel; /* where the good producer connects (0: after channel 0 failed) */
	int memfds; /* the fake passes memfds of its own: the consumer must keep none */
	/*
	 * The fake sends everything before the consumer takes a view (the test
	 * waits until its socket is closed): no credit can go back meanwhile.
	 * valid_first is then the most good buffers that may come before the failure.
	 */
	int held;
};

#define NOT_IN_SEGMENT "is not inside one segment of the region"

static const struct wcase cases[N_CASES] = {
	[SHM_OFFSET_OUTSIDE_REGION] = {"offset-outside", FDX_LINK_SHM, FDX_EPROTO, NOT_IN_SEGMENT,
				       0, 1, 0, 0},
	[SHM_OFFSET_IN_HEADER_SLOT] = {"offset-in-header", FDX_LINK_SHM, FDX_EPROTO, NOT_IN_SEGMENT,
				       0, 1, 0, 0},
	[SHM_SLICE_CROSSES_SEGMENT_END] = {"crosses-segment", FDX_LINK_SHM, FDX_EPROTO,
					   NOT_IN_SEGMENT, 0, 1, 0, 0},
	[SHM_LEN_ABOVE_SEGMENT] = {"len-above-segment", FDX_LINK_SHM, FDX_EPROTO, NOT_IN_SEGMENT, 0,
				   1, 0, 0},
	[SHM_LEN_ZERO] = {"len-zero", FDX_LINK_SHM, FDX_EPROTO, NOT_IN_SEGMENT, 0, 1, 0, 0},
	[SHM_OFFSET_PAST_LAST_SEGMENT] = {"past-last-segment", FDX_LINK_SHM, FDX_EPROTO,
					  NOT_IN_SEGMENT, 0, 1, 1, 0},
	[SHM_SEQ_SKIPS_AHEAD] = {"seq-ahead", FDX_LINK_SHM, FDX_EPROTO,
				 "channel 0 of gate 7: sequence 5, expected 0", 0, 1, 0, 0},
	[SHM_UNKNOWN_GATE] = {"unknown-gate", FDX_LINK_SHM, FDX_EPROTO,
			      "unknown channel 0 of gate 99", 0, 1, 0, 0},
	[SHM_CHANNEL_OUT_OF_RANGE] = {"channel-out-of-range", FDX_LINK_SHM, FDX_EPROTO,
				      "unknown channel 2 of gate 7", 0, 1, 0, 0},
	[SHM_CHANNEL_OF_ANOTHER_PEER] = {"channel-of-another-peer", FDX_LINK_SHM, FDX_EPROTO,
					 "channel 1 of gate 7 is not open to this peer", 0, 1, 0,
					 0},
	[SHM_BAD_MAGIC] = {"bad-magic", FDX_LINK_SHM, FDX_EPROTO, "not a data frame", 0, 1, 0, 0},
	[SHM_BAD_VERSION] = {"bad-version", FDX_LINK_SHM, FDX_EPROTO, "not a data frame", 0, 1, 0,
			     0},
	[SHM_UNKNOWN_TYPE] = {"unknown-type", FDX_LINK_SHM, FDX_EPROTO, "unknown frame type 9", 0,
			      1, 0, 0},
	[SHM_EVENT_TOO_LONG] = {"event-too-long", FDX_LINK_SHM, FDX_EPROTO,
				"bad event (type 4, 65537 bytes)", 0, 1, 0, 0},
	[SHM_EVENT_UNKNOWN_TYPE] = {"event-type-99", FDX_LINK_SHM, FDX_EPROTO,
				    "bad event (type 99, 8 bytes)", 0, 1, 0, 0},
	[SHM_SECOND_HELLO] = {"second-hello", FDX_LINK_SHM, FDX_EPROTO, "unknown frame type 1", 0,
			      1, 0, 0},
	[SHM_HELLO_WITHOUT_MEMFD] = {"shm-hello-without-memfd", FDX_LINK_SHM, FDX_EPROTO,
				     "its shm hello came without the region's memfd", 0, 1, 0, 0},
	[SHM_REGION_UNSEALED] = {"unsealed-memfd", FDX_LINK_SHM, FDX_EUNSEALED,
				 "its region was refused", 0, 1, 1, 0},
	[SHM_REGION_SHORTER] = {"shorter-memfd", FDX_LINK_SHM, FDX_ESIZE, "its region was refused",
				0, 1, 1, 0},
	[SHM_REGION_WITH_EXTRA_DESCRIPTORS] = {"region-extra-fds", FDX_LINK_SHM, FDX_EPROTO,
					       "more than one descriptor in its hello", 0, 1, 1, 0},
	[HELLO_WRONG_TOKEN] = {"wrong-token", FDX_LINK_SHM, 0,
			       "it presented a token no control stream handed out", 0, 1, 0, 0},
	/* Two sockets present one token at once: one is admitted, the other refused. */
	[HELLO_TOKEN_REUSED] = {"token-reused", FDX_LINK_SHM, 0, "or one used already", 0, 1, 0, 0},
	[HELLO_GARBAGE] = {"garbage", FDX_LINK_SHM, 0, "its first frame is not a hello", 0, 1, 0,
			   0},
	[HELLO_EXTRA_DESCRIPTORS] = {"hello-extra-fds", FDX_LINK_SHM, 0,
				     "more than one descriptor in its hello", 0, 1, 1, 0},
	[TCP_HELLO_WITH_MEMFD] = {"tcp-hello-with-memfd", FDX_LINK_TCP, FDX_EPROTO,
				  "a descriptor came with its tcp hello", 0, 1, 1, 0},
	[TCP_LEN_ABOVE_SEGMENT] = {"tcp-len-above-segment", FDX_LINK_TCP, FDX_EPROTO,
				   "buffer of 32769 bytes does not fit a segment of gate 7", 0, 1,
				   0, 0},
	[TCP_SEQ_REPLAYED] = {"tcp-seq-replayed", FDX_LINK_TCP, FDX_EPROTO,
			      "channel 0 of gate 7: sequence 0, expected 1", 1, 1, 0, 0},
	[TCP_EVENT_TOO_LONG] = {"tcp-event-too-long", FDX_LINK_TCP, FDX_EPROTO,
				"bad event (type 4, 65537 bytes)", 0, 1, 0, 0},
	[SHM_FAILED_CHANNEL_REOPENED] = {"reopen", FDX_LINK_SHM, FDX_EPROTO, NOT_IN_SEGMENT, 0, 0,
					 0, 0},
	/* The gate's default exclusive credit, no floating credit asked for (backlog 0). */
	[SHM_BUFFER_BEYOND_CREDIT] = {"beyond-credit", FDX_LINK_SHM, FDX_EPROTO,
				      "beyond its credit", FDX_EXCLUSIVE_CREDITS_DEFAULT, 1, 0, 1},
	[TCP_BUFFER_BEYOND_CREDIT] = {"tcp-beyond-credit", FDX_LINK_TCP, FDX_EPROTO,
				      "beyond its credit", FDX_EXCLUSIVE_CREDITS_DEFAULT, 1, 0, 1},
	/*
	 * The consumer takes the buffers sent on the credit of the open, its
	 * credit comes back and reaches the fake; the next buffer still names the
	 * old credit, as one sent before the credit came would: refused, though
	 * the consumer has granted more by the time it arrives.
	 */
	[SHM_BUFFER_BEYOND_CREDIT_REGRANTED] = {"beyond-credit-regranted", FDX_LINK_SHM, FDX_EPROTO,
						"buffer 3 sent beyond its credit of 2",
						FDX_EXCLUSIVE_CREDITS_DEFAULT, 1, 0, 0},
	[TCP_BUFFER_BEYOND_CREDIT_REGRANTED] = {"tcp-beyond-credit-regranted", FDX_LINK_TCP,
						FDX_EPROTO, "buffer 3 sent beyond its credit of 2",
						FDX_EXCLUSIVE_CREDITS_DEFAULT, 1, 0, 0},
	/* The same, but the buffer names the new credit with a proof it made up. */
	[SHM_BUFFER_UNPROVEN_CREDIT] = {"unproven-credit", FDX_LINK_SHM, FDX_EPROTO,
					"it was never sent (no proof)",
					FDX_EXCLUSIVE_CREDITS_DEFAULT, 1, 0, 0},
};

static const struct wcase *case_by_name(const char *name)
{
	for (uint32_t i = 0; i < N_CASES; i++)
		if (strcmp(cases[i].name, name) == 0)
			return &cases[i];
	return NULL;
}

/* The one good record every correct buffer of the fake carries: 4-byte length, then bytes. */
#define OK_REC "fdxwire-ok!"
#define OK_REC_LEN ((uint32_t)sizeof(OK_REC)) /* with its NUL: 12 bytes */
#define OK_SLICE (4u + OK_REC_LEN)

static void ok_slice(uint8_t *dst)
{
	uint32_t n = htole32(OK_REC_LEN);

	memcpy(dst, &n, 4);
	memcpy(dst + 4, OK_REC, OK_REC_LEN);
}

/* The good producer's record i. */
static uint32_t good_len(uint32_t i)
{
	return 1 + (uint32_t)((i * 2654435761u) >> 7) % 3000u;
}

static uint8_t good_byte(uint32_t i, uint32_t j)
{
	return (uint8_t)(i * 131u + j * 7u + (j >> 8));
}

/* ---- lines between processes ------------------------------------------------ */

static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	if ((size_t)k > sizeof(line) - 2)
		k = (int)sizeof(line) - 2;
	line[k++] = '\n';
	(void)!write(1, line, (size_t)k);
}

/* ---- the fake producer: the wire by hand ------------------------------------ */

struct fake {
	const struct wcase *k;
	char addr[400];
	struct fdx_exchange *ex;
	struct fdx_region *region;
	struct fdx__peer_data pd;
	uint32_t chan;
	uint32_t credit; /* granted at open */
	int admitted; /* token-reused: the socket the token admitted, kept open to the end */
	struct test_log log;
	char fail[300]; /* the first thing that went wrong */
};

static int fake_fail(struct fake *f, const char *fmt, ...)
{
	va_list ap;

	if (!f->fail[0]) {
		va_start(ap, fmt);
		vsnprintf(f->fail, sizeof(f->fail), fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* The fake's credit at open: the stamp of its buffers unless a case says otherwise. */
static uint32_t open_credit;

static void hdr_make(struct fdx__dhdr *h, uint32_t type, uint32_t gate_channel, uint32_t seq,
		     uint32_t len, uint64_t offset)
{
	memset(h, 0, sizeof(*h));
	if (type == FDX__DH_BUFFER)
		h->credit = htole32(open_credit); /* unproven: at most the exclusive credit */
	h->magic = htole32(FDX__DH_MAGIC);
	h->version = FDX__DH_VERSION;
	h->type = (uint8_t)type;
	h->gate = htole32(GATE);
	h->gate_channel = htole32(gate_channel);
	h->seq = htole32(seq);
	h->len = htole32(len);
	h->offset = htole64(offset);
}

/* The first frame of a data socket: a HELLO header for link, then the token. */
static void hello_make(uint8_t *out, uint32_t link, const uint8_t *token)
{
	struct fdx__dhdr h;

	hdr_make(&h, FDX__DH_HELLO, 0, 0, 0, 0);
	h.event_type = htole32(link);
	memcpy(out, &h, sizeof(h));
	memcpy(out + sizeof(h), token, FDX__TOKEN_LEN);
}

static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* len bytes in one message, with nfd descriptors attached (SCM_RIGHTS). */
static int send_with_fds(int sock, const int *fds, int nfd, const void *buf, size_t len)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} cb;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	ssize_t n;

	if (nfd > 4)
		return -1;
	memset(&cb, 0, sizeof(cb));
	if (nfd) {
		mh.msg_control = cb.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfd);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfd);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfd);
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -1;
}

static int dial(const char *ep, uint32_t link)
{
	int fd = -1, one = 1;

	if (link == FDX_LINK_SHM) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};

		if (strncmp(ep, "unix:", 5) != 0 || strlen(ep + 5) >= sizeof(sa.sun_path))
			return -1;
		strcpy(sa.sun_path, ep + 5);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			close(fd);
			fd = -1;
		}
		return fd;
	}
	char host[128];
	const char *colon = strrchr(ep, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;

	if (!colon || (size_t)(colon - ep) >= sizeof(host))
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - ep), ep);
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* A memfd named for the consumer's leak check, size bytes, sealed or not. */
static int tagged_memfd(const char *what, uint64_t size, int sealable)
{
	char name[64];
	int fd;

	snprintf(name, sizeof(name), MEMFD_TAG "%s", what);
	fd = memfd_create(name, MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));
	if (fd >= 0 && ftruncate(fd, (off_t)size) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* The 24-byte region announcement, written by hand (region_share.c's layout). */
static void announce_make(uint8_t *out, uint64_t size, uint32_t seg_size, uint32_t seg_count)
{
	uint32_t magic = htole32(0x52584446u), ss = htole32(seg_size), sc = htole32(seg_count);
	uint16_t version = htole16(1), msg_size = htole16(FDX__REGION_MSG_LEN);
	uint64_t rs = htole64(size);

	memcpy(out, &magic, 4);
	memcpy(out + 4, &version, 2);
	memcpy(out + 6, &msg_size, 2);
	memcpy(out + 8, &rs, 8);
	memcpy(out + 16, &ss, 4);
	memcpy(out + 20, &sc, 4);
}

/*
 * A sealed memfd of four pages whose header says it holds one segment: a
 * well-formed region with room past its last segment (as a hugetlb region has
 * up to its page size). The record sits at offset 2 * FAKE_SEG, in no segment.
 */
static int crafted_region(void)
{
	struct fdx__region_hdr h;
	uint8_t rec[OK_SLICE];
	int fd = tagged_memfd("crafted", 4 * FAKE_SEG, 1);

	if (fd < 0)
		return -1;
	memset(&h, 0, sizeof(h));
	h.magic = FDX_REGION_MAGIC;
	atomic_init(&h.layout_version, FDX_REGION_LAYOUT_VERSION);
	h.hdr_size = sizeof(h);
	h.region_size = 4 * FAKE_SEG;
	h.data_offset = FAKE_SEG;
	h.page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	h.seg_size = FAKE_SEG;
	h.seg_count = 1;
	ok_slice(rec);
	if (pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    pwrite(fd, rec, sizeof(rec), 2 * FAKE_SEG) != (ssize_t)sizeof(rec) ||
	    fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * A data socket that has said hello correctly (shm: with the fake's region),
 * with token: the stream's (HelloAck) or the channel's (OpenChannelAck).
 */
static int open_data_with(struct fake *f, uint32_t link, const uint8_t *token)
{
	uint8_t hello[sizeof(struct fdx__dhdr) + FDX__TOKEN_LEN];
	int fd = dial(link == FDX_LINK_SHM ? f->pd.unix_ep : f->pd.tcp_ep, link);

	if (fd < 0)
		return fake_fail(f, "cannot reach the consumer's %s data socket: %s",
				 link == FDX_LINK_SHM ? "shm" : "tcp", strerror(errno));
	hello_make(hello, link, token);
	if ((link == FDX_LINK_SHM ? fdx__region_send_with(f->region, fd, hello, sizeof(hello))
				  : send_all(fd, hello, sizeof(hello))) != 0) {
		close(fd);
		return fake_fail(f, "cannot send the hello");
	}
	return fd;
}

static int open_data(struct fake *f, uint32_t link)
{
	return open_data_with(f, link, f->pd.token);
}

/* Send one correct buffer of the good record on channel 0 (seq given). */
static int send_ok_buffer(struct fake *f, int fd, uint32_t link, uint32_t seq)
{
	uint8_t buf[sizeof(struct fdx__dhdr) + OK_SLICE];
	uint64_t off = link == FDX_LINK_SHM ? FAKE_SEG : 0;
	struct fdx__dhdr h;
	int err;

	/* As the real producer does on shm: the offset in flight first (tcp hands none back). */
	if (link == FDX_LINK_SHM) {
		err = fdx_exchange_sent(f->ex, f->chan, off);
		if (err < 0)
			return fake_fail(f, "fdx_exchange_sent: %s", fdx_strerror(err));
	}
	hdr_make(&h, FDX__DH_BUFFER, 0, seq, OK_SLICE, off);
	memcpy(buf, &h, sizeof(h));
	if (link == FDX_LINK_SHM)
		return send_all(fd, buf, sizeof(h));
	ok_slice(buf + sizeof(h));
	return send_all(fd, buf, sizeof(buf));
}

/*
 * Correct BUFFER frames on channel 0, one more than the credit granted at
 * open: the first ones spend that credit as the real producer does, each in
 * a segment of its own (shm); the last has no credit behind it. All in one
 * send, sequence numbers in order, the good record in each.
 */
static int send_beyond_credit(struct fake *f, int fd, uint32_t link)
{
	size_t fl = sizeof(struct fdx__dhdr) + (link == FDX_LINK_TCP ? OK_SLICE : 0);
	uint32_t n = f->credit + 1;
	uint8_t *buf;
	int rc;

	if (f->credit == 0 || n > FAKE_SEGS)
		return fake_fail(f, "a credit of %u at open: expected 1 .. %u", f->credit,
				 FAKE_SEGS - 1);
	buf = calloc(n, fl);
	if (!buf)
		return fake_fail(f, "out of memory");
	for (uint32_t i = 0; i < n; i++) {
		uint64_t off = link == FDX_LINK_SHM ? (uint64_t)(i + 1) * FAKE_SEG : 0;
		struct fdx__dhdr h;

		if (link == FDX_LINK_SHM) {
			void *at = fdx_region_ptr(f->region, off, OK_SLICE);

			if (!at) {
				free(buf);
				return fake_fail(f, "segment %u of the fake's region", i);
			}
			ok_slice(at);
		}
		if (i < f->credit && link == FDX_LINK_SHM) {
			int err = fdx_exchange_sent(f->ex, f->chan, off);

			if (err < 0) {
				free(buf);
				return fake_fail(f, "fdx_exchange_sent: %s", fdx_strerror(err));
			}
		}
		hdr_make(&h, FDX__DH_BUFFER, 0, i, OK_SLICE, off);
		memcpy(buf + i * fl, &h, sizeof(h));
		if (link == FDX_LINK_TCP)
			ok_slice(buf + i * fl + sizeof(h));
	}
	rc = send_all(fd, buf, n * fl);
	free(buf);
	if (rc == 0)
		say("sent buffers=%u credit=%u", n, f->credit);
	return rc;
}

/*
 * The credit of the open spent on good buffers (the consumer takes and
 * releases them), then, once the consumer's new credit reached this
 * producer, one more buffer: under the old stamp (unproven false) or the
 * new total with a proof made up (unproven true). Either way it was sent
 * beyond the credit it can show.
 */
static int send_after_regrant(struct fake *f, int fd, uint32_t link, int unproven)
{
	uint64_t end = test_now_ns() + (uint64_t)STEP_MS * 1000000u;
	uint8_t buf[sizeof(struct fdx__dhdr) + OK_SLICE];
	uint64_t off = link == FDX_LINK_SHM ? (uint64_t)(f->credit + 1) * FAKE_SEG : 0;
	struct fdx__credit_stamp st = {0, 0};
	struct fdx__dhdr h;

	if (f->credit == 0 || f->credit + 1 >= FAKE_SEGS)
		return fake_fail(f, "a credit of %u at open: expected 1 .. %u", f->credit,
				 FAKE_SEGS - 2);
	for (uint32_t i = 0; i < f->credit; i++) {
		uint64_t at = link == FDX_LINK_SHM ? (uint64_t)(i + 1) * FAKE_SEG : 0;

		if (link == FDX_LINK_SHM) {
			ok_slice(fdx_region_ptr(f->region, at, OK_SLICE));
			if (fdx_exchange_sent(f->ex, f->chan, at) < 0)
				return fake_fail(f, "fdx_exchange_sent");
		}
		hdr_make(&h, FDX__DH_BUFFER, 0, i, OK_SLICE, at);
		memcpy(buf, &h, sizeof(h));
		ok_slice(buf + sizeof(h));
		if (send_all(fd, buf, link == FDX_LINK_SHM ? sizeof(h) : sizeof(buf)) != 0)
			return -1;
	}
	/* Bounded: the consumer hands the credit back once it released those buffers. */
	while (st.total <= f->credit) {
		if (fdx__exchange_chan_stamp(f->ex, f->chan, &st) < 0)
			return fake_fail(f, "channel %u gone while waiting for credit", f->chan);
		if (test_now_ns() > end)
			return fake_fail(f, "no credit back within %d ms", STEP_MS);
		usleep(1000);
	}
	if (link == FDX_LINK_SHM)
		ok_slice(fdx_region_ptr(f->region, off, OK_SLICE));
	hdr_make(&h, FDX__DH_BUFFER, 0, f->credit, OK_SLICE, off);
	if (unproven) {
		h.credit = htole32(st.total);
		h.credit_proof = htole32(st.proof ^ 0x5a5a5a5au);
	}
	memcpy(buf, &h, sizeof(h));
	ok_slice(buf + sizeof(h));
	say("credit back: total %u; buffer %u sent under %u", st.total, f->credit + 1,
	    le32toh(h.credit));
	return send_all(fd, buf, link == FDX_LINK_SHM ? sizeof(h) : sizeof(buf));
}

/*
 * The consumer must close fd within CLOSED_MS: EOF or ECONNRESET. It never
 * sends a byte on a data socket.
 */
static int wait_closed(struct fake *f, int fd)
{
	uint64_t end = test_now_ns() + (uint64_t)CLOSED_MS * 1000000u;
	uint8_t junk[256];

	for (;;) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		uint64_t now = test_now_ns();
		ssize_t n;

		if (now >= end)
			return fake_fail(f, "the consumer kept the data socket open for %d ms",
					 CLOSED_MS);
		if (poll(&pf, 1, (int)((end - now) / 1000000u) + 1) <= 0)
			continue;
		n = recv(fd, junk, sizeof(junk), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		if (n < 0 && errno != EINTR)
			return fake_fail(f, "reading the data socket: %s", strerror(errno));
		if (n > 0)
			return fake_fail(f, "the consumer sent %zd bytes on a data socket", n);
	}
}

/* Whether the consumer closed fd (EOF or reset) by now; reads nothing that is there. */
static int closed_now(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);

	return n == 0 || (n < 0 && errno == ECONNRESET);
}

/*
 * Two data sockets say hello with the stream's one token, back to back:
 * exactly one is refused (returned, for the test to see closed), the other
 * admitted (kept in f->admitted and still open after the refusal).
 */
static int token_reused(struct fake *f)
{
	int a = open_data(f, FDX_LINK_SHM), b = a < 0 ? -1 : open_data(f, FDX_LINK_SHM);
	uint64_t end = test_now_ns() + (uint64_t)CLOSED_MS * 1000000u;
	int ca = 0, cb = 0;

	if (a < 0 || b < 0) {
		if (a >= 0)
			close(a);
		return -1;
	}
	while (!(ca = closed_now(a)) && !(cb = closed_now(b)) && test_now_ns() < end)
		test_sleep_us(1000);
	if (!ca && !cb) {
		close(a);
		close(b);
		return fake_fail(f, "neither socket with the same token was refused");
	}
	test_sleep_us(300000); /* the other one must stay */
	if (closed_now(ca ? b : a)) {
		close(a);
		close(b);
		return fake_fail(f, "both sockets with the same token were refused");
	}
	say("one admitted, one refused");
	f->admitted = ca ? b : a;
	return ca ? a : b;
}

/* The socket of the case, with its fault sent; -1 (f->fail set) if it could not be. */
static int send_case(struct fake *f, enum wcase_id id)
{
	uint8_t buf[256], hello[sizeof(struct fdx__dhdr) + FDX__TOKEN_LEN];
	const uint64_t seg = FAKE_SEG, size = fdx_region_size(f->region);
	struct fdx__dhdr h;
	int fd = -1, mfd[3] = {-1, -1, -1}, rc = 0;
	uint32_t link = f->k->link;

	if (id == HELLO_TOKEN_REUSED)
		return token_reused(f);
	switch (id) {
	case SHM_HELLO_WITHOUT_MEMFD:
	case SHM_REGION_UNSEALED:
	case SHM_REGION_SHORTER:
	case SHM_REGION_WITH_EXTRA_DESCRIPTORS:
	case SHM_OFFSET_PAST_LAST_SEGMENT:
	case HELLO_WRONG_TOKEN:
	case HELLO_GARBAGE:
	case HELLO_EXTRA_DESCRIPTORS:
	case TCP_HELLO_WITH_MEMFD:
		/* The hello itself is the case: on the Unix data socket, by hand. */
		fd = dial(f->pd.unix_ep, FDX_LINK_SHM);
		if (fd < 0)
			return fake_fail(f, "cannot reach %s: %s", f->pd.unix_ep, strerror(errno));
		break;
	default:
		fd = open_data(f, link);
		if (fd < 0)
			return -1;
		break;
	}
	hello_make(hello, link, f->pd.token);
	switch (id) {
	case SHM_OFFSET_OUTSIDE_REGION:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, size + seg);
		break;
	case SHM_OFFSET_IN_HEADER_SLOT:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, 64);
		break;
	case SHM_SLICE_CROSSES_SEGMENT_END:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, 64, 2 * seg - 8);
		break;
	case SHM_LEN_ABOVE_SEGMENT:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, (uint32_t)seg + 1, seg);
		break;
	case SHM_LEN_ZERO:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, 0, seg);
		break;
	case SHM_SEQ_SKIPS_AHEAD:
		hdr_make(&h, FDX__DH_BUFFER, 0, 5, OK_SLICE, seg);
		break;
	case SHM_UNKNOWN_GATE:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, seg);
		h.gate = htole32(99);
		break;
	case SHM_CHANNEL_OUT_OF_RANGE:
		hdr_make(&h, FDX__DH_BUFFER, N_CH, 0, OK_SLICE, seg);
		break;
	case SHM_CHANNEL_OF_ANOTHER_PEER:
		hdr_make(&h, FDX__DH_BUFFER, 1, 0, OK_SLICE, seg);
		break;
	case SHM_BAD_MAGIC:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, seg);
		h.magic = htole32(0x12345678u);
		break;
	case SHM_BAD_VERSION:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, seg);
		h.version = FDX__DH_VERSION + 1;
		break;
	case SHM_UNKNOWN_TYPE:
		hdr_make(&h, 9, 0, 0, OK_SLICE, seg);
		break;
	case SHM_EVENT_TOO_LONG:
	case TCP_EVENT_TOO_LONG:
		/* Only the header: the consumer must not wait for 64 KiB + 1 of payload. */
		hdr_make(&h, FDX__DH_EVENT, 0, 0, FDX_EVENT_PAYLOAD_MAX + 1, 0);
		h.event_type = htole32(FDX_EVENT_USER);
		break;
	case SHM_EVENT_UNKNOWN_TYPE:
		hdr_make(&h, FDX__DH_EVENT, 0, 0, 8, 0);
		h.event_type = htole32(99);
		memcpy(buf, &h, sizeof(h));
		memset(buf + sizeof(h), 0xee, 8);
		rc = send_all(fd, buf, sizeof(h) + 8);
		goto sent;
	case SHM_SECOND_HELLO:
		rc = send_all(fd, hello, sizeof(hello));
		goto sent;
	case SHM_FAILED_CHANNEL_REOPENED:
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, size);
		break;
	case SHM_BUFFER_BEYOND_CREDIT:
	case TCP_BUFFER_BEYOND_CREDIT:
		rc = send_beyond_credit(f, fd, link);
		goto sent;
	case SHM_BUFFER_BEYOND_CREDIT_REGRANTED:
	case TCP_BUFFER_BEYOND_CREDIT_REGRANTED:
	case SHM_BUFFER_UNPROVEN_CREDIT:
		rc = send_after_regrant(f, fd, link, id == SHM_BUFFER_UNPROVEN_CREDIT);
		goto sent;
	case TCP_LEN_ABOVE_SEGMENT:
		/* Only the header: a consumer that believed it would read 32 KiB + 1. */
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, CONS_SEG + 1, 0);
		break;
	case TCP_SEQ_REPLAYED:
		if (send_ok_buffer(f, fd, FDX_LINK_TCP, 0) != 0) {
			rc = -1;
			goto sent;
		}
		hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, 0);
		memcpy(buf, &h, sizeof(h));
		ok_slice(buf + sizeof(h));
		rc = send_all(fd, buf, sizeof(h) + OK_SLICE);
		goto sent;
	case SHM_HELLO_WITHOUT_MEMFD:
		memcpy(buf, hello, sizeof(hello));
		fdx__region_announce(f->region, buf + sizeof(hello));
		rc = send_all(fd, buf, sizeof(hello) + FDX__REGION_MSG_LEN);
		goto sent;
	case SHM_REGION_UNSEALED:
		/* A plain memfd, no seals possible, announced with its real size. */
		mfd[0] = tagged_memfd("unsealed", size, 0);
		memcpy(buf, hello, sizeof(hello));
		announce_make(buf + sizeof(hello), size, FAKE_SEG, FAKE_SEGS);
		rc = mfd[0] < 0
			     ? -1
			     : send_with_fds(fd, mfd, 1, buf, sizeof(hello) + FDX__REGION_MSG_LEN);
		goto sent;
	case SHM_REGION_SHORTER:
		/*
		 * A sealed, well-formed region of four segments announced as eight:
		 * mapping the announced size would fault (SIGBUS) past the real end.
		 */
		mfd[0] = crafted_region();
		memcpy(buf, hello, sizeof(hello));
		announce_make(buf + sizeof(hello), 8 * seg, FAKE_SEG, 7);
		rc = mfd[0] < 0
			     ? -1
			     : send_with_fds(fd, mfd, 1, buf, sizeof(hello) + FDX__REGION_MSG_LEN);
		goto sent;
	case SHM_REGION_WITH_EXTRA_DESCRIPTORS:
		/* The hello with the region's memfd, then the announcement with two more. */
		mfd[0] = tagged_memfd("extra1", 4096, 0);
		mfd[1] = tagged_memfd("extra2", 4096, 0);
		{
			int rfd = fdx_region_fd(f->region);

			rc = send_with_fds(fd, &rfd, 1, hello, sizeof(hello));
		}
		fdx__region_announce(f->region, buf);
		if (rc == 0)
			rc = mfd[0] < 0 || mfd[1] < 0
				     ? -1
				     : send_with_fds(fd, mfd, 2, buf, FDX__REGION_MSG_LEN);
		goto sent;
	case SHM_OFFSET_PAST_LAST_SEGMENT:
		mfd[0] = crafted_region();
		memcpy(buf, hello, sizeof(hello));
		announce_make(buf + sizeof(hello), 4 * seg, FAKE_SEG, 1);
		rc = mfd[0] < 0
			     ? -1
			     : send_with_fds(fd, mfd, 1, buf, sizeof(hello) + FDX__REGION_MSG_LEN);
		if (rc == 0) {
			hdr_make(&h, FDX__DH_BUFFER, 0, 0, OK_SLICE, 2 * seg);
			rc = send_all(fd, &h, sizeof(h));
		}
		goto sent;
	case HELLO_WRONG_TOKEN:
		hello[sizeof(struct fdx__dhdr)] ^= 0x5a;
		rc = fdx__region_send_with(f->region, fd, hello, sizeof(hello));
		goto sent;
	case HELLO_GARBAGE: {
		uint64_t x = 0x9e3779b97f4a7c15ull;

		for (size_t i = 0; i < 100; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = (uint8_t)x;
		}
		buf[0] = (uint8_t) ~(FDX__DH_MAGIC & 0xff); /* never the magic by chance */
		rc = send_all(fd, buf, 100);
		goto sent;
	}
	case HELLO_EXTRA_DESCRIPTORS:
		mfd[0] = tagged_memfd("extra1", 4096, 0);
		mfd[1] = tagged_memfd("extra2", 4096, 0);
		mfd[2] = tagged_memfd("extra3", 4096, 0);
		rc = mfd[0] < 0 || mfd[1] < 0 || mfd[2] < 0
			     ? -1
			     : send_with_fds(fd, mfd, 3, hello, sizeof(hello));
		goto sent;
	case TCP_HELLO_WITH_MEMFD:
		mfd[0] = tagged_memfd("tcp", 4096, 0);
		rc = mfd[0] < 0 ? -1 : send_with_fds(fd, mfd, 1, hello, sizeof(hello));
		goto sent;
	default:
		rc = -1;
		goto sent;
	}
	rc = send_all(fd, &h, sizeof(h));
sent:
	for (int i = 0; i < 3; i++)
		if (mfd[i] >= 0)
			close(mfd[i]);
	if (rc != 0) {
		close(fd);
		return fake_fail(f, "cannot send the case: %s", strerror(errno));
	}
	return fd;
}

/* "fake CASE": see the file comment. */
static int fake_main(const char *name)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct fdx_region_opts ro = {.size = sizeof(ro),
				     .seg_size = FAKE_SEG,
				     .seg_count = FAKE_SEGS,
				     .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "fake-producer"};
	char line[400];
	int fd = -1, fd2 = -1, err, rc;

	if (!f)
		return 2;
	f->admitted = -1;
	f->k = case_by_name(name);
	if (!f->k)
		return 2;
	eo.log_fn = test_log_fn;
	eo.log_ud = &f->log;
	if (test_read_fd_line(0, line, sizeof(line), 20000) != 0 || strncmp(line, "addr ", 5) != 0)
		return 3;
	snprintf(f->addr, sizeof(f->addr), "%s", line + 5);
	err = fdx_region_create(&ro, &f->region);
	if (err == 0) {
		ok_slice(fdx_region_ptr(f->region, FAKE_SEG, OK_SLICE));
		err = fdx_exchange_create(&eo, &f->ex);
	}
	if (err == 0)
		err = fdx_exchange_open_channel(f->ex, f->addr, "fake", 0, GATE, 0, STEP_MS,
						&f->chan, &f->credit);
	if (err == 0)
		err = fdx__exchange_peer_data(f->ex, f->addr, f->chan, &f->pd);
	open_credit = f->credit;
	if (err < 0) {
		fake_fail(f, "setup: %s", fdx_strerror(err));
		goto out;
	}
	fd = send_case(f, (enum wcase_id)(f->k - cases));
	if (fd < 0 || wait_closed(f, fd) != 0)
		goto out;
	say("closed ok");
	if (f->k->error == 0) {
		/*
		 * Refused before its session was known: the session must be
		 * unharmed. The socket goes with the channel's own token (its
		 * OpenChannelAck's): the stream's may be used up.
		 */
		if (!f->pd.has_sock_token) {
			fake_fail(f, "the answer to the open carried no socket token");
			goto out;
		}
		fd2 = open_data_with(f, FDX_LINK_SHM, f->pd.sock_token);
		if (fd2 < 0 || send_ok_buffer(f, fd2, FDX_LINK_SHM, 0) != 0) {
			fake_fail(f, "the good buffer after the refused socket could not go");
			goto out;
		}
		say("followup ok");
	}
out:
	if (f->fail[0])
		say("fake failed: %s", f->fail);
	(void)test_read_fd_line(0, line, sizeof(line), 60000); /* "stop", or EOF */
	/*
	 * Credit for its good buffer came back as its exchange expected: nothing
	 * went wrong before the stop (its own teardown logs the stream's end).
	 */
	if (f->k->error == 0 && f->log.errors && !f->fail[0]) {
		fake_fail(f, "its exchange logged %d error(s)", f->log.errors);
		say("fake failed: %s", f->fail);
	}
	if (fd >= 0)
		close(fd);
	if (fd2 >= 0)
		close(fd2);
	if (f->admitted >= 0)
		close(f->admitted);
	fdx_exchange_destroy(f->ex);
	fdx_region_destroy(f->region);
	rc = f->fail[0] ? 1 : 0;
	if (rc && f->log.count)
		fprintf(stderr, "fake producer log:\n%s", f->log.all);
	free(f);
	return rc;
}

/* ---- the good producer: the real API ------------------------------------------ */

/*
 * "good CHANNEL": connect to CHANNEL over shm, "go": emit, finish.
 * "good CHANNEL/BUSY": first try to open input channel BUSY (a partition of
 * its own, over shm) and say "refused rc=N", then as "good CHANNEL".
 */
static int good_main(const char *channel)
{
	const char *slash = strchr(channel, '/');
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = CONS_SEG,
				  .seg_count = 32,
				  .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 16};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "good-producer"};
	struct fdx_partition_opts po = {
		.size = sizeof(po), .n_subpartitions = 1, .partition_id = "good"};
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	struct fdx_exchange *ex = NULL;
	struct fdx_partition *p = NULL;
	struct test_log log = {0};
	uint8_t rec[3000];
	char line[400];
	int err, rc = 1;

	eo.log_fn = test_log_fn;
	eo.log_ud = &log;
	if (test_read_fd_line(0, line, sizeof(line), 30000) != 0 || strncmp(line, "addr ", 5) != 0)
		return 3;
	err = fdx_nbp_create(&no, &nbp);
	if (!err)
		err = fdx_lbp_create(nbp, &lo, &lbp);
	if (!err)
		err = fdx_exchange_create(&eo, &ex);
	if (!err && slash) {
		struct fdx_partition *q = NULL;
		int e = fdx_partition_create(ex, lbp, &po, &q);

		if (!e)
			e = fdx_partition_connect(q, 0, line + 5, GATE, (uint32_t)atoi(slash + 1),
						  FDX_LINK_SHM, STEP_MS);
		say("refused rc=%d", e);
		fdx_partition_destroy(q);
	}
	if (!err)
		err = fdx_partition_create(ex, lbp, &po, &p);
	if (!err)
		err = fdx_partition_connect(p, 0, line + 5, GATE, (uint32_t)atoi(channel),
					    FDX_LINK_SHM, STEP_MS);
	say("ready rc=%d", err);
	if (err)
		goto out;
	if (test_read_fd_line(0, line, sizeof(line), 60000) != 0 || strcmp(line, "go") != 0)
		goto out;
	for (uint32_t i = 0; i < GOOD_RECORDS && !err; i++) {
		uint32_t len = good_len(i);

		for (uint32_t j = 0; j < len; j++)
			rec[j] = good_byte(i, j);
		err = fdx_partition_emit(p, 0, rec, len, STEP_MS);
	}
	if (!err)
		err = fdx_partition_finish(p, 2 * STEP_MS);
	say("result rc=%d", err);
	rc = err ? 1 : 0;
out:
	(void)test_read_fd_line(0, line, sizeof(line), 60000); /* "stop", or EOF */
	fdx_partition_destroy(p);
	fdx_lbp_destroy(lbp);
	fdx_exchange_destroy(ex);
	fdx_nbp_destroy(nbp);
	if (rc && log.count)
		fprintf(stderr, "good producer log:\n%s", log.all);
	return rc;
}

/* ---- the test's side: children ------------------------------------------------- */

struct child {
	const char *what;
	pid_t pid;
	int to, from; /* its stdin and stdout */
	char buf[4096]; /* what it said, not yet taken */
	size_t len;
};

/* Fork and exec this program as a child; before any exchange of this test exists. */
static void child_spawn(struct child *c, const char *what, const char *arg)
{
	char *argv[] = {"test_dataplane_wire", (char *)what, (char *)arg, NULL};

	c->what = what;
	c->to = c->from = -1;
	c->len = 0;
	c->pid = test_spawn_self(argv, &c->to, &c->from);
	assert_true(c->pid > 0);
}

static void child_say(struct child *c, const char *line)
{
	size_t n = strlen(line);

	assert_int_equal(write(c->to, line, n), (ssize_t)n);
}

/* Take the first line starting with prefix; 1 if there was one. */
static int take_line(struct child *c, const char *prefix, char *out, size_t n)
{
	return test_take_line(c->buf, &c->len, prefix, out, n);
}

/* Gather what the child said within ms; -1 once it closed its stdout. */
static int child_fill(struct child *c, int ms)
{
	struct pollfd pf = {.fd = c->from, .events = POLLIN};
	ssize_t r;

	if (c->from < 0 || c->len == sizeof(c->buf))
		return -1;
	if (poll(&pf, 1, ms) <= 0)
		return 0;
	r = read(c->from, c->buf + c->len, sizeof(c->buf) - c->len);
	if (r <= 0)
		return -1;
	c->len += (size_t)r;
	return 0;
}

/* A line starting with prefix within ms; a line starting with "fake failed" ends the wait. */
static int child_line(struct child *c, const char *prefix, char *out, size_t n, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	for (;;) {
		uint64_t now = test_now_ns();

		/* Its failure first: taking lines drops the ones before the match. */
		if (memmem(c->buf, c->len, "fake failed", 11)) {
			snprintf(out, n, "%.*s", (int)c->len, c->buf);
			return -1;
		}
		if (take_line(c, prefix, out, n))
			return 0;
		if (now >= end || child_fill(c, (int)((end - now) / 1000000u) + 1) < 0)
			break;
	}
	if (take_line(c, prefix, out, n))
		return 0;
	snprintf(out, n, "(nothing)%s%.*s", c->len ? "; it said: " : "", (int)c->len, c->buf);
	return -1;
}

/* "stop", then the child must exit 0 within 10 s. */
static void child_stop(struct child *c)
{
	char line[400] = "";
	int status = 0, exited;
	pid_t r = 0;

	if (c->pid <= 0)
		return;
	(void)!write(c->to, "stop\n", 5);
	for (int i = 0; i < 2000 && (r = waitpid(c->pid, &status, WNOHANG)) == 0; i++)
		test_sleep_us(5000);
	exited = r == c->pid;
	if (!exited) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, &status, 0);
	}
	/* What went wrong, if it says (a fake that failed says so before it exits). */
	for (int i = 0; i < 64 && child_fill(c, 0) == 0; i++)
		;
	take_line(c, "fake failed", line, sizeof(line));
	c->pid = 0;
	close(c->to);
	close(c->from);
	c->to = c->from = -1;
	if (!exited)
		fail_msg("the %s producer did not exit within 10 s", c->what);
	if (!WIFEXITED(status))
		fail_msg("the %s producer was killed by signal %d", c->what,
			 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (WEXITSTATUS(status) != 0)
		fail_msg("the %s producer exited %d%s%s", c->what, WEXITSTATUS(status),
			 line[0] ? ": " : "", line);
}

static void child_reap(struct child *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
	}
	if (c->to >= 0)
		close(c->to);
	if (c->from >= 0)
		close(c->from);
	c->to = c->from = -1;
}

/* ---- the test's side: the consumer --------------------------------------------- */

/* Open descriptors of this process whose name has tag in it. */
static int count_fds_named(const char *tag)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], name[300];
		ssize_t k;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		k = readlink(path, name, sizeof(name) - 1);
		if (k > 0) {
			name[k] = '\0';
			n += strstr(name, tag) != NULL;
		}
	}
	closedir(d);
	return n;
}

/* Their names, for a failure message. */
static const char *fd_names(const char *tag)
{
	static char out[512];
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	out[0] = '\0';
	while (d && (e = readdir(d))) {
		char path[300], name[300];
		size_t used = strlen(out);
		ssize_t k;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		k = e->d_name[0] == '.' ? -1 : readlink(path, name, sizeof(name) - 1);
		if (k <= 0)
			continue;
		name[k] = '\0';
		if (strstr(name, tag))
			snprintf(out + used, sizeof(out) - used, "%s%.16s -> %.100s",
				 used ? ", " : "", e->d_name, name);
	}
	if (d)
		closedir(d);
	return out;
}

struct fx {
	const struct wcase *k;
	char dir[64];
	struct child fake, good;
	struct fdx_nbp *nbp;
	struct fdx_lbp *pool;
	struct fdx_exchange *ex;
	struct fdx_gate *gate;
	struct test_log log;
	struct fdx_view v; /* the view being looked at */
	int holding;
	int tagged_fds; /* memfds of earlier fakes this process holds (a leak is their test's) */
	struct fdx_lbp *lpool; /* a local producer's, in this process */
	struct fdx_partition *lpart;
};

/*
 * The consumer and its children: "fake FAKE_ARG" (none if NULL) and "good
 * GOOD_ARG", spawned before any exchange of this process exists.
 */
static int fx_setup(void **state, const struct wcase *k, const char *fake_arg, const char *good_arg)
{
	struct fx *x = calloc(1, sizeof(*x));
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = CONS_SEG,
				  .seg_count = 64,
				  .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 16};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "consumer"};
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = GATE, .n_channels = N_CH};
	char listen[128];

	assert_non_null(x);
	x->k = k;
	x->fake.to = x->fake.from = x->good.to = x->good.from = -1;
	*state = x;
	snprintf(x->dir, sizeof(x->dir), "/tmp/fdx-wiretest-XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	/* The children first: no process with gRPC threads is forked. */
	if (fake_arg)
		child_spawn(&x->fake, "fake", fake_arg);
	child_spawn(&x->good, "good", good_arg);
	snprintf(listen, sizeof(listen), "unix:%s/consumer.sock", x->dir);
	eo.listen = listen;
	eo.log_fn = test_log_fn;
	eo.log_ud = &x->log;
	assert_int_equal(fdx_nbp_create(&no, &x->nbp), 0);
	assert_int_equal(fdx_lbp_create(x->nbp, &lo, &x->pool), 0);
	assert_int_equal(fdx_exchange_create(&eo, &x->ex), 0);
	assert_int_equal(fdx_gate_create(x->ex, x->pool, &go, &x->gate), 0);
	x->tagged_fds = count_fds_named("memfd:" MEMFD_TAG);
	return 0;
}

static int setup(void **state)
{
	const struct wcase *k = *state;
	char ch[16];

	snprintf(ch, sizeof(ch), "%u", k->good_channel);
	return fx_setup(state, k, k->name, ch);
}

/* No fake: the good producer tries channel 0 (taken by a local producer), then uses 1. */
static int setup_local_taken(void **state)
{
	return fx_setup(state, NULL, NULL, "1/0");
}

static int teardown(void **state)
{
	struct fx *x = *state;

	child_reap(&x->fake);
	child_reap(&x->good);
	if (x->holding)
		fdx_gate_release(x->gate, &x->v);
	fdx_partition_destroy(x->lpart);
	fdx_lbp_destroy(x->lpool);
	fdx_gate_destroy(x->gate);
	fdx_exchange_destroy(x->ex);
	fdx_lbp_destroy(x->pool);
	fdx_nbp_destroy(x->nbp);
	rmdir(x->dir);
	free(x);
	return 0;
}

static void release(struct fx *x)
{
	assert_int_equal(fdx_gate_release(x->gate, &x->v), 0);
	x->holding = 0;
}

/* What the consumer and the children have to say, for a failure message. */
static void dump(struct fx *x)
{
	char out[8192];

	for (uint32_t ch = 0; ch < N_CH; ch++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_gate_channel_stats(x->gate, ch, &cs) == 0)
			fprintf(stderr,
				"  channel %u: link %u held %u received %llu buffers %llu events "
				"error %d\n",
				ch, cs.link, cs.held, ULL(cs.buffers_received),
				ULL(cs.events_received), cs.error);
	}
	if (x->log.count)
		fprintf(stderr, "consumer log:\n%s", x->log.all);
	for (int i = 0; i < 16 && child_fill(&x->fake, 0) == 0; i++)
		;
	snprintf(out, sizeof(out), "%.*s", (int)x->fake.len, x->fake.buf);
	if (out[0])
		fprintf(stderr, "fake producer said:\n%s", out);
}

/* The next view within ms; fails the test if none comes. */
static void next_view(struct fx *x, int ms, const char *waiting_for)
{
	int r = fdx_gate_next(x->gate, &x->v, ms);

	if (r == -EAGAIN) {
		dump(x);
		fail_msg("no view within %d ms while waiting for %s", ms, waiting_for);
	}
	assert_int_equal(r, 0);
	x->holding = 1;
}

/* A buffer view must hold exactly the fake's one good record. */
static void check_ok_buffer(struct fx *x)
{
	const void *rec;
	uint32_t len;

	assert_int_equal(x->v.kind, FDX_VIEW_BUFFER);
	assert_int_equal(x->v.len, OK_SLICE);
	assert_int_equal(fdx_gate_next_record(x->gate, &x->v, &rec, &len), 1);
	assert_int_equal(len, OK_REC_LEN);
	assert_memory_equal(rec, OK_REC, OK_REC_LEN);
	assert_int_equal(fdx_gate_next_record(x->gate, &x->v, &rec, &len), 0);
}

static const char *view_kind(uint32_t kind)
{
	return kind == FDX_VIEW_BUFFER ? "buffer" : kind == FDX_VIEW_EVENT ? "event" : "failure";
}

/*
 * Until the case's outcome on channel 0: its FAILED view (the exact error, a
 * message naming the peer and the fault) or, for a socket refused before its
 * session was known, the good buffer the fake sends on a correct socket.
 */
static uint32_t await_outcome(struct fx *x)
{
	const struct wcase *k = x->k;
	uint64_t end = test_now_ns() + (uint64_t)OUTCOME_MS * 1000000u;
	uint32_t valid = 0;

	for (;;) {
		uint64_t now = test_now_ns();

		next_view(x, now < end ? (int)((end - now) / 1000000u) + 1 : 0,
			  k->error ? "channel 0 to fail" : "the good buffer after the refusal");
		if (x->v.channel != 0) {
			dump(x);
			fail_msg("a %s view on channel %u, whose producer has not begun (%s)",
				 view_kind(x->v.kind), x->v.channel,
				 x->v.kind == FDX_VIEW_FAILED ? x->v.message : "");
		}
		if (x->v.kind == FDX_VIEW_FAILED) {
			if (k->error == 0) {
				dump(x);
				fail_msg("channel 0 failed (%s: %s) though its session was never "
					 "bound to the refused socket",
					 fdx_strerror(x->v.error), x->v.message);
			}
			if (x->v.error != k->error || !x->v.message ||
			    !strstr(x->v.message, "TaskManager fake-producer") ||
			    !strstr(x->v.message, k->why)) {
				dump(x);
				fail_msg("channel 0 failed with %d (%s), \"%s\"; expected %d (%s) "
					 "with a message naming TaskManager fake-producer and "
					 "\"%s\"",
					 x->v.error, fdx_strerror(x->v.error),
					 x->v.message ? x->v.message : "(null)", k->error,
					 fdx_strerror(k->error), k->why);
			}
			if (k->held)
				assert_true(valid <= k->valid_first);
			else
				assert_int_equal(valid, k->valid_first);
			release(x);
			return valid;
		}
		if (x->v.kind == FDX_VIEW_BUFFER && (k->error == 0 || valid < k->valid_first)) {
			check_ok_buffer(x);
			release(x);
			if (k->error == 0)
				return 1;
			valid++;
			continue;
		}
		dump(x);
		fail_msg("the consumer took a bad frame in: a %s view on channel 0 (seq %llu, %u "
			 "bytes at %p) where it should have failed the socket (%s)",
			 view_kind(x->v.kind), ULL(x->v.seq), x->v.len, x->v.data, k->why);
	}
}

/* The good producer's records, in order and intact, then its END_OF_PARTITION. */
static void consume_good(struct fx *x, uint32_t ch)
{
	uint64_t end = test_now_ns() + 3ull * STEP_MS * 1000000u;
	uint32_t n = 0;
	char line[400];

	for (;;) {
		uint64_t now = test_now_ns();
		const uint8_t *rec;
		uint32_t len;
		int r;

		next_view(x, now < end ? (int)((end - now) / 1000000u) + 1 : 0,
			  "the good producer's records");
		if (x->v.channel != ch) {
			dump(x);
			fail_msg("a %s view on channel %u while the good producer sends on %u (%s)",
				 view_kind(x->v.kind), x->v.channel, ch,
				 x->v.kind == FDX_VIEW_FAILED ? x->v.message : "");
		}
		if (x->v.kind == FDX_VIEW_FAILED) {
			dump(x);
			fail_msg("the good producer's channel failed: %s: %s",
				 fdx_strerror(x->v.error), x->v.message);
		}
		if (x->v.kind == FDX_VIEW_EVENT) {
			assert_int_equal(x->v.event_type, FDX_EVENT_END_OF_PARTITION);
			release(x);
			break;
		}
		while ((r = fdx_gate_next_record(x->gate, &x->v, (const void **)&rec, &len)) == 1) {
			assert_true(n < GOOD_RECORDS);
			assert_int_equal(len, good_len(n));
			for (uint32_t j = 0; j < len; j++)
				if (rec[j] != good_byte(n, j))
					fail_msg("record %u: byte %u of %u is %#x, expected %#x", n,
						 j, len, rec[j], good_byte(n, j));
			n++;
		}
		assert_int_equal(r, 0);
		release(x);
	}
	assert_int_equal(n, GOOD_RECORDS);
	/* finish() waits for its buffers: keep the gate turning (credit goes out) meanwhile. */
	end = test_now_ns() + 3ull * STEP_MS * 1000000u;
	while (child_line(&x->good, "result", line, sizeof(line), 20) != 0) {
		int r = fdx_gate_next(x->gate, &x->v, 20);

		if (r == 0) {
			x->holding = 1;
			dump(x);
			fail_msg("a %s view on channel %u after END_OF_PARTITION",
				 view_kind(x->v.kind), x->v.channel);
		}
		if (test_now_ns() > end)
			fail_msg("the good producer gave no result: %s", line);
	}
	assert_string_equal(line, "result rc=0");
}

static void run_case(void **state)
{
	struct fx *x = *state;
	const struct wcase *k = x->k;
	const char *addr = fdx_exchange_address(x->ex);
	struct fdx_input_channel_stats cs = {.size = sizeof(cs)};
	char line[600], msg[400], want[64];
	uint32_t valid;

	assert_non_null(addr);
	snprintf(msg, sizeof(msg), "addr %s\n", addr);
	/* The good producer's channel is open before the fake begins (its frames may name it). */
	if (k->good_channel != 0) {
		child_say(&x->good, msg);
		if (child_line(&x->good, "ready", line, sizeof(line), STEP_MS) != 0)
			fail_msg("the good producer did not connect: %s", line);
		assert_string_equal(line, "ready rc=0");
	}
	child_say(&x->fake, msg);
	if (k->held) {
		/* Everything sent, and the consumer has seen it, before we take a view. */
		if (child_line(&x->fake, "sent", line, sizeof(line), STEP_MS) != 0) {
			dump(x);
			fail_msg("the fake did not send its frames: %s", line);
		}
		snprintf(want, sizeof(want), "sent buffers=%u credit=%u", k->valid_first + 1,
			 k->valid_first);
		assert_string_equal(line, want);
		if (child_line(&x->fake, "closed", line, sizeof(line), STEP_MS) != 0) {
			dump(x);
			fail_msg("the consumer did not close the fake's data socket: %s", line);
		}
	}
	valid = await_outcome(x);
	if (!k->held && child_line(&x->fake, "closed", line, sizeof(line), STEP_MS) != 0) {
		dump(x);
		fail_msg("the consumer did not close the fake's data socket: %s", line);
	}
	if (k->error == 0) {
		assert_int_equal(child_line(&x->fake, "followup ok", line, sizeof(line), STEP_MS),
				 0);
		/* No view tells why: the log must. */
		if (!strstr(x->log.all, k->why) || !strstr(x->log.all, "data socket of")) {
			dump(x);
			fail_msg("the consumer's log does not say \"%s\"", k->why);
		}
	}
	if (k->memfds) {
		uint64_t until = test_now_ns() + 5000000000ull;

		while (count_fds_named("memfd:" MEMFD_TAG) > x->tagged_fds && test_now_ns() < until)
			test_sleep_us(200);
		if (count_fds_named("memfd:" MEMFD_TAG) > x->tagged_fds) {
			dump(x);
			fail_msg("the consumer still holds %d descriptor(s) the fake passed, 5 s "
				 "after it closed the socket (all tagged: %s)",
				 count_fds_named("memfd:" MEMFD_TAG) - x->tagged_fds,
				 fd_names("memfd:" MEMFD_TAG));
		}
	}

	assert_int_equal(fdx_gate_channel_stats(x->gate, 0, &cs), 0);
	assert_int_equal(cs.error, k->error);
	assert_int_equal(cs.buffers_received, k->error ? valid : 1);
	assert_int_equal(cs.events_received, 0);

	/* The consumer keeps serving: a real producer's records come through whole. */
	if (k->good_channel == 0) {
		child_say(&x->good, msg);
		if (child_line(&x->good, "ready", line, sizeof(line), STEP_MS) != 0)
			fail_msg("the good producer did not connect: %s", line);
		if (strcmp(line, "ready rc=0") != 0)
			fail_msg("channel 0 could not be opened again after it failed: \"%s\" "
				 "(expected rc=0)",
				 line);
	}
	child_say(&x->good, "go\n");
	consume_good(x, k->good_channel);
	assert_int_equal(fdx_gate_channel_stats(x->gate, k->good_channel, &cs), 0);
	assert_int_equal(cs.error, 0);
	assert_int_equal(cs.buffers_received > 0, 1);
	child_stop(&x->good);
	child_stop(&x->fake);
}

/* ---- a local channel is not for a remote producer --------------------------- */

#define LOCAL_RECORDS 40u

/*
 * A local partition of this process holds channel 0: a remote producer's
 * open of channel 0 is refused with -EBUSY (and brings the gate nothing),
 * its open of channel 1 works, and channel 0 keeps serving the local one.
 */
static void test_remote_open_of_a_local_channel_is_refused(void **state)
{
	struct fx *x = *state;
	const char *addr = fdx_exchange_address(x->ex);
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 8};
	struct fdx_partition_opts po = {
		.size = sizeof(po), .n_subpartitions = 1, .partition_id = "local"};
	struct fdx_input_channel_stats cs = {.size = sizeof(cs)};
	uint64_t end;
	uint32_t n = 0;
	uint8_t rec[3000];
	char line[600], msg[400], want[64];

	assert_non_null(addr);
	assert_int_equal(fdx_lbp_create(x->nbp, &lo, &x->lpool), 0);
	assert_int_equal(fdx_partition_create(x->ex, x->lpool, &po, &x->lpart), 0);
	assert_int_equal(fdx_partition_connect(x->lpart, 0, addr, GATE, 0, FDX_LINK_LOCAL, STEP_MS),
			 0);

	snprintf(msg, sizeof(msg), "addr %s\n", addr);
	child_say(&x->good, msg);
	if (child_line(&x->good, "refused", line, sizeof(line), STEP_MS) != 0)
		fail_msg("the remote producer did not try channel 0: %s", line);
	snprintf(want, sizeof(want), "refused rc=%d", -EBUSY);
	if (strcmp(line, want) != 0) {
		dump(x);
		fail_msg("a remote open of channel 0, which a local producer holds: \"%s\", "
			 "expected \"%s\"",
			 line, want);
	}
	if (child_line(&x->good, "ready", line, sizeof(line), STEP_MS) != 0)
		fail_msg("the remote producer did not connect to channel 1: %s", line);
	assert_string_equal(line, "ready rc=0");

	/* The remote producer's channel works (a view of channel 0 now would fail it). */
	child_say(&x->good, "go\n");
	consume_good(x, 1);
	assert_int_equal(fdx_gate_channel_stats(x->gate, 1, &cs), 0);
	assert_int_equal(cs.error, 0);

	/* And channel 0 still serves its local producer. */
	for (uint32_t i = 0; i < LOCAL_RECORDS; i++) {
		uint32_t len = good_len(i);

		for (uint32_t j = 0; j < len; j++)
			rec[j] = good_byte(i, j);
		assert_int_equal(fdx_partition_emit(x->lpart, 0, rec, len, STEP_MS), 0);
	}
	assert_int_equal(fdx_partition_event(x->lpart, 0, FDX_EVENT_END_OF_PARTITION, 0, NULL, 0),
			 0);
	end = test_now_ns() + 3ull * STEP_MS * 1000000u;
	for (;;) {
		uint64_t now = test_now_ns();
		const uint8_t *r;
		uint32_t len;
		int k;

		next_view(x, now < end ? (int)((end - now) / 1000000u) + 1 : 0,
			  "the local producer's records");
		if (x->v.channel != 0 || x->v.kind == FDX_VIEW_FAILED) {
			dump(x);
			fail_msg("a %s view on channel %u (%s) while the local producer sends on 0",
				 view_kind(x->v.kind), x->v.channel,
				 x->v.kind == FDX_VIEW_FAILED ? x->v.message : "");
		}
		if (x->v.kind == FDX_VIEW_EVENT) {
			assert_int_equal(x->v.event_type, FDX_EVENT_END_OF_PARTITION);
			release(x);
			break;
		}
		while ((k = fdx_gate_next_record(x->gate, &x->v, (const void **)&r, &len)) == 1) {
			assert_true(n < LOCAL_RECORDS);
			assert_int_equal(len, good_len(n));
			for (uint32_t j = 0; j < len; j++)
				if (r[j] != good_byte(n, j))
					fail_msg(
						"local record %u: byte %u of %u is %#x, expected %#x",
						n, j, len, r[j], good_byte(n, j));
			n++;
		}
		assert_int_equal(k, 0);
		release(x);
	}
	assert_int_equal(n, LOCAL_RECORDS);
	assert_int_equal(fdx_partition_finish(x->lpart, STEP_MS), 0);
	assert_int_equal(fdx_gate_channel_stats(x->gate, 0, &cs), 0);
	assert_int_equal(cs.link, FDX_LINK_LOCAL);
	assert_int_equal(cs.error, 0);
	fdx_partition_destroy(x->lpart);
	x->lpart = NULL;
	child_stop(&x->good);
}

/* ---- the tests --------------------------------------------------------------- */

#define WIRE_TESTS(X)                                                                              \
	X(test_shm_offset_outside_region_fails_the_connection, SHM_OFFSET_OUTSIDE_REGION)          \
	X(test_shm_offset_in_header_slot_fails_the_connection, SHM_OFFSET_IN_HEADER_SLOT)          \
	X(test_shm_slice_crossing_segment_end_fails_the_connection, SHM_SLICE_CROSSES_SEGMENT_END) \
	X(test_shm_len_above_segment_fails_the_connection, SHM_LEN_ABOVE_SEGMENT)                  \
	X(test_shm_len_zero_fails_the_connection, SHM_LEN_ZERO)                                    \
	X(test_shm_offset_past_last_segment_fails_the_connection, SHM_OFFSET_PAST_LAST_SEGMENT)    \
	X(test_shm_sequence_skipping_ahead_fails_the_connection, SHM_SEQ_SKIPS_AHEAD)              \
	X(test_shm_unknown_gate_fails_the_connection, SHM_UNKNOWN_GATE)                            \
	X(test_shm_channel_out_of_range_fails_the_connection, SHM_CHANNEL_OUT_OF_RANGE)            \
	X(test_shm_channel_of_another_peer_fails_the_connection, SHM_CHANNEL_OF_ANOTHER_PEER)      \
	X(test_shm_bad_magic_fails_the_connection, SHM_BAD_MAGIC)                                  \
	X(test_shm_bad_version_fails_the_connection, SHM_BAD_VERSION)                              \
	X(test_shm_unknown_frame_type_fails_the_connection, SHM_UNKNOWN_TYPE)                      \
	X(test_shm_event_above_payload_max_fails_the_connection, SHM_EVENT_TOO_LONG)               \
	X(test_shm_event_type_99_fails_the_connection, SHM_EVENT_UNKNOWN_TYPE)                     \
	X(test_shm_second_hello_fails_the_connection, SHM_SECOND_HELLO)                            \
	X(test_shm_hello_without_memfd_fails_the_connection, SHM_HELLO_WITHOUT_MEMFD)              \
	X(test_shm_unsealed_memfd_fails_the_connection, SHM_REGION_UNSEALED)                       \
	X(test_shm_memfd_shorter_than_announced_fails_the_connection, SHM_REGION_SHORTER)          \
	X(test_shm_region_with_extra_descriptors_fails_the_connection,                             \
	  SHM_REGION_WITH_EXTRA_DESCRIPTORS)                                                       \
	X(test_hello_wrong_token_is_refused_and_session_unharmed, HELLO_WRONG_TOKEN)               \
	X(test_a_token_admits_one_data_socket_only, HELLO_TOKEN_REUSED)                            \
	X(test_hello_garbage_is_refused_and_session_unharmed, HELLO_GARBAGE)                       \
	X(test_hello_extra_descriptors_are_refused_and_none_kept, HELLO_EXTRA_DESCRIPTORS)         \
	X(test_tcp_hello_with_memfd_fails_the_connection, TCP_HELLO_WITH_MEMFD)                    \
	X(test_tcp_len_above_segment_fails_the_connection, TCP_LEN_ABOVE_SEGMENT)                  \
	X(test_tcp_replayed_sequence_fails_the_connection, TCP_SEQ_REPLAYED)                       \
	X(test_tcp_event_above_payload_max_fails_the_connection, TCP_EVENT_TOO_LONG)               \
	X(test_shm_failed_channel_can_be_opened_again, SHM_FAILED_CHANNEL_REOPENED)                \
	X(test_shm_buffer_beyond_credit_fails_the_connection, SHM_BUFFER_BEYOND_CREDIT)            \
	X(test_tcp_buffer_beyond_credit_fails_the_connection, TCP_BUFFER_BEYOND_CREDIT)            \
	X(test_shm_buffer_beyond_credit_after_a_regrant_fails, SHM_BUFFER_BEYOND_CREDIT_REGRANTED) \
	X(test_tcp_buffer_beyond_credit_after_a_regrant_fails, TCP_BUFFER_BEYOND_CREDIT_REGRANTED) \
	X(test_shm_buffer_with_an_unproven_credit_fails, SHM_BUFFER_UNPROVEN_CREDIT)

#define WIRE_TEST_FN(fn, id)                                            \
	static void fn(void **state)                                    \
	{                                                               \
		assert_ptr_equal(((struct fx *)*state)->k, &cases[id]); \
		run_case(state);                                        \
	}
WIRE_TESTS(WIRE_TEST_FN)
#undef WIRE_TEST_FN

/*
 * As uid 65534, connect to path and wait (bounded) for the server to close
 * the socket unread: exit 0 if it did, 1 if not, 2 if the uid cannot be taken.
 */
static int other_uid_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct pollfd pfd;
	char b;
	int fd;

	if (setgid(65534) < 0 || setuid(65534) < 0)
		return 2;
	if (strlen(path) >= sizeof(sa.sun_path))
		return 1;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 1; /* refused by the file system: not the check under test */
	pfd.fd = fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 5000) != 1)
		return 1;
	return recv(fd, &b, 1, 0) <= 0 ? 0 : 1; /* EOF or reset: closed unread */
}

/*
 * A process of another uid reaches both Unix sockets (their files opened to
 * everyone here, as a careless deployment might): SO_PEERCRED refuses it on
 * each, the reason is logged, and the exchange serves its own uid as before.
 */
/* An exchange of its own, its sockets in a temporary directory; no peer. */
struct lone {
	struct test_log lg;
	struct fdx_exchange *ex;
	char dir[32], listen[160], ctl[128], data[160];
};

static void lone_open(struct lone *l)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo)};

	memset(l, 0, sizeof(*l));
	snprintf(l->dir, sizeof(l->dir), "/tmp/fdx-lone-XXXXXX");
	assert_non_null(mkdtemp(l->dir));
	assert_int_equal(chmod(l->dir, 0711), 0);
	snprintf(l->ctl, sizeof(l->ctl), "%s/tm.sock", l->dir);
	snprintf(l->listen, sizeof(l->listen), "unix:%s", l->ctl);
	eo.listen = l->listen;
	eo.log_fn = test_log_fn;
	eo.log_ud = &l->lg;
	assert_int_equal(fdx_exchange_create(&eo, &l->ex), 0);
	snprintf(l->data, sizeof(l->data), "%s",
		 fdx__dp_unix_endpoint(fdx__exchange_dp(l->ex)) + 5);
}

static void lone_close(struct lone *l)
{
	fdx_exchange_destroy(l->ex);
	unlink(l->data);
	unlink(l->ctl);
	assert_int_equal(rmdir(l->dir), 0);
}

static void test_peer_of_another_uid_is_refused_on_both_unix_sockets(void **state)
{
	struct fdx_exchange_stats st = {.size = sizeof(st)};
	struct lone l;
	const char *paths[2] = {l.ctl, l.data};

	(void)state;
	if (geteuid() != 0)
		skip(); /* only root can be another uid */
	lone_open(&l);
	for (int i = 0; i < 2; i++) {
		int status;
		pid_t pid;

		assert_int_equal(chmod(paths[i], 0777), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(other_uid_connect(paths[i]));
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	/* The control socket's refusal is counted and logged by the accepting thread. */
	for (int i = 0; i < 500 && (fdx_exchange_stats(l.ex, &st), st.peers_refused < 1); i++)
		test_sleep_us(10000);
	assert_int_equal(st.peers_refused, 1);
	assert_non_null(strstr(l.lg.all, "refused a data socket from uid 65534"));
	/* Our own uid is still served. */
	assert_int_equal(fdx_exchange_connect(l.ex, l.listen, 5000), 0);
	lone_close(&l);
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Wait up to ms for fd to be closed by the other end: 1 if it was, 0 if not. */
static int closed_within(int fd, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char b;

	if (poll(&pfd, 1, ms) != 1)
		return 0;
	return recv(fd, &b, 1, MSG_DONTWAIT) <= 0;
}

/*
 * Data sockets that never finish their hello (silent, or half a hello) are
 * closed after a few seconds, not held for ever; their descriptors go.
 */
static void test_a_data_socket_without_its_hello_is_closed_in_time(void **state)
{
	struct lone l;
	int fds_before, silent, half;
	uint8_t hello[sizeof(struct fdx__dhdr) + FDX__TOKEN_LEN];

	(void)state;
	lone_open(&l);
	fds_before = test_count_fds();
	silent = unix_connect(l.data);
	half = unix_connect(l.data);
	hello_make(hello, FDX_LINK_TCP, (const uint8_t *)"0123456789abcdef");
	assert_int_equal(send(half, hello, sizeof(hello) / 2, MSG_NOSIGNAL),
			 (ssize_t)sizeof(hello) / 2);
	assert_false(closed_within(silent, 500)); /* it has its time */
	assert_true(closed_within(silent, 10000));
	assert_true(closed_within(half, 10000));
	close(silent);
	close(half);
	TEST_WAIT_UNTIL(test_count_fds() == fds_before);
	TEST_WAIT_UNTIL(strstr(l.lg.all, "no hello within the time allowed") != NULL);
	assert_int_equal(fdx_exchange_connect(l.ex, l.listen, 5000), 0); /* still serving */
	lone_close(&l);
}

/*
 * A flood of data sockets that send nothing: 64 may wait for their hello at
 * once, the next ones are closed at accept (well before the hello timeout).
 */
#define FLOOD 64

static void test_a_flood_of_silent_data_sockets_is_bounded(void **state)
{
	int fds[FLOOD + 4], fds_before;
	struct lone l;

	(void)state;
	lone_open(&l);
	fds_before = test_count_fds();
	for (int i = 0; i < FLOOD + 4; i++)
		fds[i] = unix_connect(l.data);
	for (int i = FLOOD; i < FLOOD + 4; i++)
		if (!closed_within(fds[i], 2000))
			fail_msg("data socket %d of a flood of %d was not refused", i + 1,
				 FLOOD + 4);
	for (int i = 0; i < FLOOD; i++)
		assert_false(closed_within(fds[i], 0));
	TEST_WAIT_UNTIL(strstr(l.lg.all, "others are still to send their hello") != NULL);
	for (int i = 0; i < FLOOD + 4; i++)
		close(fds[i]);
	TEST_WAIT_UNTIL(test_count_fds() == fds_before);
	lone_close(&l);
}

/*
 * Out of descriptors: accept fails with EMFILE while a connection waits. The
 * loop pauses accepting instead of retrying at once (it used to spin on the
 * same failure), and accepts the connection once descriptors are back.
 */
/* An open /proc stat file of this process's thread named comm (-1 if none). */
static int thread_stat_fd(const char *comm)
{
	char path[320], name[64];
	struct dirent *e;
	DIR *d = opendir("/proc/self/task");
	int fd = -1;

	assert_non_null(d);
	while (fd < 0 && (e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f) && strncmp(name, comm, strlen(comm)) == 0) {
			snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
			fd = open(path, O_RDONLY | O_CLOEXEC);
		}
		fclose(f);
	}
	closedir(d);
	return fd;
}

/* The CPU time (user + system, s) in a thread's stat file; opens nothing. */
static double thread_cpu_s(int fd)
{
	char buf[512];
	unsigned long ut = 0, st = 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	const char *p;

	assert_true(n > 0);
	buf[n] = 0;
	p = strrchr(buf, ')');
	/* After ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime. */
	assert_non_null(p);
	assert_int_equal(
		sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st), 2);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Take every descriptor the limit leaves (up to max): the ones a thread of
 * the exchange closes late too, so that the loop's accept cannot get one.
 */
static void fill_fds(int *fills, int *n, int max)
{
	int f;

	while (*n < max && (f = dup(STDERR_FILENO)) >= 0)
		fills[(*n)++] = f;
}

static void test_out_of_descriptors_the_data_plane_pauses_accepting(void **state)
{
	struct rlimit old, low;
	struct lone l;
	double cpu0, cpu1;
	int fd, n, io, fills[64], n_fills = 0, paused;

	(void)state;
	lone_open(&l);
	io = thread_stat_fd("fdx-io");
	assert_true(io >= 0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	n = test_count_fds();
	low = old;
	low.rlim_cur = (rlim_t)n + 8; /* filled below, all but our connecting socket's */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	fill_fds(fills, &n_fills, 64);
	assert_true(n_fills > 0);
	close(fills[--n_fills]);
	fd = unix_connect(l.data); /* waits in the backlog: accept gets EMFILE */
	/* Bounded (5 s); the limit goes back even if the pause never comes. */
	for (uint64_t end = test_now_ns() + 5000000000ull;
	     !(paused = strstr(l.lg.all, "accepting again in") != NULL) && test_now_ns() < end;) {
		fill_fds(fills, &n_fills, 64);
		test_sleep_us(200);
	}
	cpu0 = thread_cpu_s(io);
	if (paused)
		test_sleep_us(1000000); /* a second with the connection pending */
	cpu1 = thread_cpu_s(io);
	while (n_fills)
		close(fills[--n_fills]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_true(paused);
	if (cpu1 - cpu0 > 0.3)
		fail_msg("the data plane's loop used %.2f s of CPU in 1 s out of descriptors",
			 cpu1 - cpu0);
	/* Descriptors back: it is accepted, and closed when its hello does not come. */
	assert_true(closed_within(fd, 10000));
	close(fd);
	close(io);
	lone_close(&l);
}

int main(int argc, char **argv)
{
#define WIRE_TEST_ENTRY(fn, id) \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)&cases[id]),
	const struct CMUnitTest tests[] = {
		WIRE_TESTS(WIRE_TEST_ENTRY) cmocka_unit_test_setup_teardown(
			test_remote_open_of_a_local_channel_is_refused, setup_local_taken,
			teardown),
		cmocka_unit_test(test_peer_of_another_uid_is_refused_on_both_unix_sockets),
		cmocka_unit_test(test_a_data_socket_without_its_hello_is_closed_in_time),
		cmocka_unit_test(test_a_flood_of_silent_data_sockets_is_bounded),
		cmocka_unit_test(test_out_of_descriptors_the_data_plane_pauses_accepting),
	};
#undef WIRE_TEST_ENTRY

	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && strcmp(argv[1], "fake") == 0) {
		alarm(120); /* a parent that failed and forgot us cannot keep us */
		return fake_main(argv[2]);
	}
	if (argc == 3 && strcmp(argv[1], "good") == 0) {
		alarm(120);
		return good_main(argv[2]);
	}
	/* FDX_TEST_FILTER=pattern runs only the matching tests (for chasing one). */
	if (getenv("FDX_TEST_FILTER"))
		cmocka_set_test_filter(getenv("FDX_TEST_FILTER"));
	return cmocka_run_group_tests_name("dataplane_wire", tests, NULL, NULL);
}
