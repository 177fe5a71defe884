/* SPDX-License-Identifier: MIT */
/*
 * A minimal fdx consumer: a gate of one input channel, served on a Unix
 * socket. It prints its address, then reads records until the producer ends
 * the partition, checks each one and prints how many came.
 *
 *   cc consumer.c $(pkg-config --cflags --libs fdx) -o consumer
 *   ./consumer          # prints: unix:/run/user/1000/fdx/tm-…sock
 */
#include <stdio.h>
#include <string.h>

#include <fdx/fdx.h>

static int check(int err, const char *what)
{
	if (err < 0)
		fprintf(stderr, "consumer: %s: %s\n", what, fdx_strerror(err));
	return err < 0;
}

int main(void)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "example-consumer"};
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = 1, .n_channels = 1};
	struct fdx_exchange *ex;
	struct fdx_gate *gate;
	unsigned long records = 0, bad = 0;
	int ended = 0, err;

	if (check(fdx_exchange_create(&eo, &ex), "exchange"))
		return 1;
	if (check(fdx_gate_create(ex, NULL, &go, &gate), "gate"))
		return 1;
	printf("%s\n", fdx_exchange_address(ex));
	fflush(stdout);

	while (!ended) {
		struct fdx_view v;
		const void *rec;
		uint32_t len;

		err = fdx_gate_next(gate, &v, 10000);
		if (check(err, "next"))
			break;
		if (v.kind == FDX_VIEW_BUFFER) {
			/* Records are read in place, in the producer's memory: nothing copied. */
			while (fdx_gate_next_record(gate, &v, &rec, &len) == 1) {
				char want[32];

				snprintf(want, sizeof(want), "record %lu", records++);
				bad += len != strlen(want) || memcmp(rec, want, len) != 0;
			}
		} else if (v.kind == FDX_VIEW_EVENT) {
			ended = v.event_type == FDX_EVENT_END_OF_PARTITION;
		} else {
			fprintf(stderr, "consumer: channel failed: %s\n", v.message);
			ended = -1;
		}
		fdx_gate_release(gate, &v); /* the credit goes back to the producer */
	}
	printf("consumer: %lu records, %lu bad\n", records, bad);
	fdx_gate_destroy(gate);
	fdx_exchange_destroy(ex);
	return ended == 1 && bad == 0 && records > 0 ? 0 : 1;
}
