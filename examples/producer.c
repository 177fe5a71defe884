/* SPDX-License-Identifier: MIT */
/*
 * A minimal fdx producer: a partition of one subpartition connected over shm
 * to the consumer at ADDR (as examples/consumer prints it); it emits N
 * records, then ends the partition and waits until every buffer came back.
 *
 *   cc producer.c $(pkg-config --cflags --libs fdx) -o producer
 *   ./producer unix:/run/user/1000/fdx/tm-…sock 100000
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/fdx.h>

static int check(int err, const char *what)
{
	if (err < 0)
		fprintf(stderr, "producer: %s: %s\n", what, fdx_strerror(err));
	return err < 0;
}

int main(int argc, char **argv)
{
	struct fdx_nbp_opts no = {.size = sizeof(no), .seg_count = 256};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = 16, .max = 64};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "example-producer"};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = 1};
	struct fdx_partition *part;
	struct fdx_exchange *ex;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	unsigned long n = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;

	if (argc < 2) {
		fprintf(stderr, "usage: producer ADDR [RECORDS]\n");
		return 2;
	}
	/* Buffers are segments of a shared region; the pool hands out offsets. */
	if (check(fdx_nbp_create(&no, &nbp), "nbp") || check(fdx_lbp_create(nbp, &lo, &lbp), "lbp"))
		return 1;
	if (check(fdx_exchange_create(&eo, &ex), "exchange") ||
	    check(fdx_partition_create(ex, lbp, &po, &part), "partition"))
		return 1;
	if (check(fdx_partition_connect(part, 0, argv[1], 1, 0, FDX_LINK_SHM, 5000), "connect"))
		return 1;
	for (unsigned long i = 0; i < n; i++) {
		char rec[32];
		int len = snprintf(rec, sizeof(rec), "record %lu", i);

		/* Blocks while the consumer is behind (backpressure), here for at most 5 s. */
		if (check(fdx_partition_emit(part, 0, rec, (uint32_t)len, 5000), "emit"))
			return 1;
	}
	if (check(fdx_partition_finish(part, 10000), "finish"))
		return 1;
	printf("producer: %lu records sent\n", n);
	fdx_partition_destroy(part);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	return check(fdx_nbp_destroy(nbp), "nbp destroy");
}
