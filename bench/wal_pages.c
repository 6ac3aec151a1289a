/*
 * What one 4 KiB page of an audit WAL part costs, by the way it is faulted in:
 * a 64 MiB fallocated file on the file system of the current directory, mapped
 * MAP_SHARED like `core/src/audit/mapped.rs`, then for each chunk the preparation
 * named by MODE, then one store per page (the shard's write), then the punch that
 * drops the stored range (the bridge's `punch_below`). Prints µs per page for each
 * phase, three rounds. Used for bench/RESULTS.md, issue 15 item 5, session 10.
 *
 *   cc -O2 -o /tmp/wal_pages bench/wal_pages.c && (cd /path/on/ext4 && /tmp/wal_pages MODE CHUNK_KIB)
 *
 * MODE: 0 nothing (the shard faults each page), 1 fadvise(WILLNEED) + populate,
 *       2 readahead(2) + populate, 3 pread + populate, 4 MADV_WILLNEED + populate,
 *       5 MADV_HUGEPAGE (no MADV_RANDOM) + populate, 6 MADV_POPULATE_READ + populate,
 *       7 MADV_RANDOM + MADV_HUGEPAGE + populate (what the gateway does past 2 MiB),
 *       8 MADV_RANDOM + MADV_HUGEPAGE, no populate (the shard faults large folios),
 *       9 MADV_RANDOM + populate (the gateway before session 10).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODE CHUNK_KIB\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    size_t chunk = (size_t)atoi(argv[2]) << 10, n = 64 << 20, pages = n / 4096;
    static char buf[8 << 20];
    if (chunk == 0 || chunk > sizeof buf) {
        fprintf(stderr, "CHUNK_KIB: 1 to 8192\n");
        return 2;
    }
    for (int round = 0; round < 3; round++) {
        int fd = open("wal_pages.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || fallocate(fd, 0, 0, n) != 0) {
            perror("wal_pages.tmp");
            return 1;
        }
        char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        if (mode != 5) madvise(p, n, MADV_RANDOM);
        if (mode == 5 || mode == 7 || mode == 8) madvise(p, n, MADV_HUGEPAGE);
        double t = now();
        for (size_t o = 0; o < n; o += chunk) {
            if (mode == 1) posix_fadvise(fd, o, chunk, POSIX_FADV_WILLNEED);
            if (mode == 2) readahead(fd, o, chunk);
            if (mode == 3 && pread(fd, buf, chunk, o) < 0) perror("pread");
            if (mode == 4) madvise(p + o, chunk, MADV_WILLNEED);
            if (mode == 6) madvise(p + o, chunk, MADV_POPULATE_READ);
            if (mode != 0 && mode != 8) madvise(p + o, chunk, MADV_POPULATE_WRITE);
        }
        double prep = now() - t;
        t = now();
        for (size_t o = 0; o < n; o += 4096) p[o] = 1;
        double touch = now() - t;
        t = now();
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, n);
        double punch = now() - t;
        printf("mode %d, chunks of %zu KiB: prepare %.3f, store %.3f, punch %.3f us per page\n", mode, chunk >> 10,
               prep * 1e6 / pages, touch * 1e6 / pages, punch * 1e6 / pages);
        munmap(p, n);
        close(fd);
        unlink("wal_pages.tmp");
    }
    return 0;
}
