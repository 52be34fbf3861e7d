/*
 * Log-scale latency histogram with a fixed layout shared with the Python side
 * (orchestrator/workloads/maps_contention/histogram.py, which documents it).
 *
 * Bucket 0 holds values below HIST_MIN_NS. For v >= HIST_MIN_NS and below
 * HIST_MAX_NS, with k = floor(log2(v / HIST_MIN_NS)) and
 * j = floor(v * HIST_SUB / (HIST_MIN_NS << k)) - HIST_SUB, the bucket is
 * 1 + k * HIST_SUB + j. Values of HIST_MAX_NS or more go to the last bucket.
 * Everything is integer arithmetic so that both sides agree exactly.
 */
#ifndef KORCH_MC_HIST_H
#define KORCH_MC_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HIST_MIN_NS 100u
#define HIST_SUB 64u
/* The fewest whole octaves above 100 ns that reach 1 s: 100 ns * 2^24 = 1.68 s. */
#define HIST_OCTAVES 24u
#define HIST_MAX_NS ((uint64_t)HIST_MIN_NS << HIST_OCTAVES)
#define HIST_OVERFLOW (1u + HIST_SUB * HIST_OCTAVES)
#define HIST_BUCKETS (HIST_OVERFLOW + 1u)

struct op_hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
	uint64_t buckets[HIST_BUCKETS];
};

static inline unsigned hist_index(uint64_t ns)
{
	unsigned k, j;

	if (ns < HIST_MIN_NS)
		return 0;
	if (ns >= HIST_MAX_NS)
		return HIST_OVERFLOW;
	k = 63u - (unsigned)__builtin_clzll(ns / HIST_MIN_NS);
	j = (unsigned)((ns * HIST_SUB) / ((uint64_t)HIST_MIN_NS << k)) - HIST_SUB;
	return 1u + k * HIST_SUB + j;
}

/* Called inside the timed loop, so it must not allocate or do I/O. */
static inline void hist_record(struct op_hist *h, uint64_t ns)
{
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
	h->buckets[hist_index(ns)]++;
}

/* Print {"count":..,"sum_ns":..,"max_ns":..,"hist":{..}} (no newline). */
void hist_print_json(FILE *out, const struct op_hist *h);

#endif
