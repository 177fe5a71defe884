/* SPDX-License-Identifier: MIT */
/* The control-plane wire as protoc-c generates it: frames survive a round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "exchange.pb-c.h"

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
		cmocka_unit_test(test_proto_garbage_does_not_parse),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
