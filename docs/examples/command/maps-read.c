/*
 * maps-read: how long one read of /proc/self/maps takes in a process with many VMAs.
 *
 * An example of a user's own benchmark for korch's command workload. It maps one region
 * and makes every other page writable, which splits the region into VMAS separate VMAs,
 * then reads /proc/self/maps READS times. It prints the median read time as a JSON line
 * and the read rate as text, the two ways the command workload reads metrics:
 *
 *   {"read_us": 812.250, "vmas": 2001}
 *   reads per second: 1203.4
 *
 * Build it statically (the guest has no C library): gcc -O2 -static -o maps-read maps-read.c
 * Usage: maps-read [VMAS [READS]]   (defaults 1000 and 200)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* One whole read of /proc/self/maps; returns the number of lines, -1 on error. */
static int read_maps(char *buf, size_t size)
{
	int fd = open("/proc/self/maps", O_RDONLY);
	int lines = 0;
	ssize_t n;

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf, size)) > 0)
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	close(fd);
	return n < 0 ? -1 : lines;
}

int main(int argc, char **argv)
{
	long vmas = argc > 1 ? atol(argv[1]) : 1000;
	long reads = argc > 2 ? atol(argv[2]) : 200;
	long page = sysconf(_SC_PAGESIZE);
	static char buf[1 << 16];
	double *took, start, total = 0;
	char *region;
	int lines = 0;

	if (vmas < 1 || reads < 1) {
		fprintf(stderr, "usage: %s [VMAS [READS]] (both at least 1)\n", argv[0]);
		return 64;
	}
	region = mmap(NULL, 2 * vmas * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("mmap");
		return 70;
	}
	for (long i = 0; i < vmas; i++)
		if (mprotect(region + 2 * i * page, page, PROT_READ | PROT_WRITE)) {
			perror("mprotect");
			return 70;
		}
	took = calloc(reads, sizeof(*took));
	if (!took) {
		perror("calloc");
		return 70;
	}
	for (long r = 0; r < reads; r++) {
		start = now_us();
		lines = read_maps(buf, sizeof(buf));
		took[r] = now_us() - start;
		total += took[r];
		if (lines < 0) {
			perror("/proc/self/maps");
			return 70;
		}
	}
	qsort(took, reads, sizeof(*took), cmp_double);
	printf("{\"read_us\": %.3f, \"vmas\": %d}\n", took[reads / 2], lines);
	printf("reads per second: %.1f\n", reads / (total / 1e6));
	return 0;
}
