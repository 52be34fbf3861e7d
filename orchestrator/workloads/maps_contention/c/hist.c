/* See hist.h. */
#include "hist.h"

#include <inttypes.h>

void hist_print_json(FILE *out, const struct op_hist *h)
{
	const char *sep = "";
	unsigned i;

	fprintf(out,
		"{\"count\":%" PRIu64 ",\"sum_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64
		",\"hist\":{\"min_ns\":%u,\"sub\":%u,\"octaves\":%u,\"counts\":[",
		h->count, h->sum_ns, h->max_ns, HIST_MIN_NS, HIST_SUB, HIST_OCTAVES);
	for (i = 0; i < HIST_BUCKETS; i++) {
		if (h->buckets[i] == 0)
			continue;
		fprintf(out, "%s[%u,%" PRIu64 "]", sep, i, h->buckets[i]);
		sep = ",";
	}
	fputs("]}}", out);
}
