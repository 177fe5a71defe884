/* SPDX-License-Identifier: MIT */
/* The control-plane wire as protoc-c generates it: frames survive a round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fdx/exchange.h>

#include "exchange.pb-c.h"
#include "transport/control_limits.h"

static void test_proto_hello_round_trips(void **state)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT, *g;
	Fdx__Hello h = FDX__HELLO__INIT;
	Fdx__Link links[] = {FDX__LINK__LINK_SHM, FDX__LINK__LINK_TCP};
	uint8_t buf[256];
	size_t n;

	(void)state;
	h.protocol_version = 1;
	h.taskmanager_id = "tm-1";
	h.boot_id = "boot";
	h.uid = 1000;
	h.pid = 42;
	h.segment_size = 32768;
	h.n_links = 2;
	h.links = links;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO;
	f.hello = &h;
	n = fdx__control_frame__get_packed_size(&f);
	assert_true(n <= sizeof(buf));
	assert_int_equal(fdx__control_frame__pack(&f, buf), n);
	g = fdx__control_frame__unpack(NULL, n, buf);
	assert_non_null(g);
	assert_int_equal(g->frame_case, FDX__CONTROL_FRAME__FRAME_HELLO);
	assert_string_equal(g->hello->taskmanager_id, "tm-1");
	assert_int_equal(g->hello->segment_size, 32768);
	assert_int_equal(g->hello->n_links, 2);
	assert_int_equal(g->hello->links[1], FDX__LINK__LINK_TCP);
	fdx__control_frame__free_unpacked(g, NULL);
}

static void test_proto_credit_update_carries_offsets(void **state)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT, *g;
	Fdx__CreditUpdate cu = FDX__CREDIT_UPDATE__INIT;
	Fdx__Credit c[2] = {FDX__CREDIT__INIT, FDX__CREDIT__INIT}, *cp[2] = {&c[0], &c[1]};
	uint64_t offs[3] = {32768, 65536, 1u << 30};
	uint8_t *buf;
	size_t n;

	(void)state;
	c[0].channel = 3;
	c[0].added = 2;
	c[0].n_returned_offsets = 3;
	c[0].returned_offsets = offs;
	c[1].channel = 9;
	c[1].added = 1;
	cu.n_credits = 2;
	cu.credits = cp;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CREDIT;
	f.credit = &cu;
	n = fdx__control_frame__get_packed_size(&f);
	buf = malloc(n);
	assert_non_null(buf);
	fdx__control_frame__pack(&f, buf);
	g = fdx__control_frame__unpack(NULL, n, buf);
	assert_non_null(g);
	assert_int_equal(g->credit->n_credits, 2);
	assert_int_equal(g->credit->credits[0]->n_returned_offsets, 3);
	assert_int_equal(g->credit->credits[0]->returned_offsets[2], 1u << 30);
	assert_int_equal(g->credit->credits[1]->channel, 9);
	fdx__control_frame__free_unpacked(g, NULL);
	free(buf);
}

/* Packed size of f, after checking it packs to exactly that. */
static size_t packed(const Fdx__ControlFrame *f)
{
	size_t n = fdx__control_frame__get_packed_size(f);
	uint8_t *buf = malloc(n);

	assert_non_null(buf);
	assert_int_equal(fdx__control_frame__pack(f, buf), n);
	free(buf);
	return n;
}

/*
 * The widest frames a TaskManager packs, every field at its widest, fit
 * what it accepts (FDX_CTL_FRAME_MAX): a CreditUpdate of the most channels
 * and offsets, each Credit with its granted total and proof, and a Backlog
 * of the most channels.
 */
static void test_proto_widest_frames_fit_the_receive_limit(void **state)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CreditUpdate cu = FDX__CREDIT_UPDATE__INIT;
	Fdx__Backlog bl = FDX__BACKLOG__INIT;
	uint32_t nc = FDX__CREDIT_MSG_CHANNELS_MAX, per = FDX__CREDIT_MSG_OFFSETS_MAX / nc;
	Fdx__Credit *c = calloc(nc, sizeof(*c));
	Fdx__Credit **cp = calloc(nc, sizeof(*cp));
	uint64_t *offs = malloc(FDX__CREDIT_MSG_OFFSETS_MAX * sizeof(*offs));
	uint32_t *ids = malloc(FDX__BACKLOG_FRAME_CHANNELS_MAX * sizeof(*ids));
	size_t n;

	(void)state;
	assert_true(c && cp && offs && ids);
	for (uint32_t i = 0; i < FDX__CREDIT_MSG_OFFSETS_MAX; i++)
		offs[i] = UINT64_MAX - i;
	for (uint32_t i = 0; i < nc; i++) {
		fdx__credit__init(&c[i]);
		c[i].channel = UINT32_MAX;
		c[i].added = UINT32_MAX;
		c[i].granted = UINT64_MAX;
		c[i].proof = UINT32_MAX;
		c[i].n_returned_offsets = per;
		c[i].returned_offsets = offs + (size_t)i * per;
		cp[i] = &c[i];
	}
	cu.n_credits = nc;
	cu.credits = cp;
	cu.written_ns = UINT64_MAX;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CREDIT;
	f.credit = &cu;
	n = packed(&f);
	print_message("widest CreditUpdate: %zu bytes of %u\n", n, FDX_CTL_FRAME_MAX);
	assert_true(n <= FDX_CTL_FRAME_MAX);
	/* All the offsets on one channel: the same bytes, one Credit header instead of many. */
	cu.n_credits = 1;
	c[0].n_returned_offsets = FDX__CREDIT_MSG_OFFSETS_MAX;
	c[0].returned_offsets = offs;
	assert_true(packed(&f) <= FDX_CTL_FRAME_MAX);

	for (uint32_t i = 0; i < FDX__BACKLOG_FRAME_CHANNELS_MAX; i++)
		ids[i] = UINT32_MAX;
	bl.n_channels = bl.n_backlogs = FDX__BACKLOG_FRAME_CHANNELS_MAX;
	bl.channels = ids;
	bl.backlogs = ids;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_BACKLOG;
	f.backlog = &bl;
	n = packed(&f);
	print_message("widest Backlog: %zu bytes of %u\n", n, FDX_CTL_FRAME_MAX);
	assert_true(n <= FDX_CTL_FRAME_MAX);
	free(c);
	free(cp);
	free(offs);
	free(ids);
}

static void test_proto_garbage_does_not_parse(void **state)
{
	static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};

	(void)state;
	assert_null(fdx__control_frame__unpack(NULL, sizeof(junk), junk));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proto_hello_round_trips),
		cmocka_unit_test(test_proto_credit_update_carries_offsets),
		cmocka_unit_test(test_proto_widest_frames_fit_the_receive_limit),
		cmocka_unit_test(test_proto_garbage_does_not_parse),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
