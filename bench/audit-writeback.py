#!/usr/bin/env python3
"""Kernel CPU of the audit WAL's second on-disk copy (issue 15, item 5).

400-byte records (a typical WAL frame) are copied into a shared mapping of a
fallocated file, as the shards do; every TICK records the file is either fdatasync'd
(`fsync`: what `fsync: interval` did to the WAL before), punched out below the
writer (`punch`: what the bridge does now, once the chain file holds the records), or
left alone (`none`: no write-back at all, the floor). Prints system CPU µs per record
of this process (fdatasync's write-back runs in the caller) and of the whole machine
(/proc/stat: kworkers, interrupts and everything else running, so compare modes run
one after the other).

usage: python3 bench/audit-writeback.py fsync|punch|none [RECORDS] [TICK] [DIR]
"""
import ctypes, mmap, os, resource, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
PUNCH, KEEP = 0x02, 0x01
mode = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
tick = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
where = sys.argv[4] if len(sys.argv) > 4 else "."
rec = b"x" * 400
size = n * len(rec) + (1 << 20)
path = os.path.join(where, f"audit-writeback-{os.getpid()}.wal")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
assert libc.fallocate(fd, 0, 0, size) == 0
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
def stat():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[2] + v[5] + v[6]
r0, s0 = resource.getrusage(resource.RUSAGE_SELF), stat()
off = 0
for i in range(n):
    m[off:off + 400] = rec
    off += 400
    if (i + 1) % tick == 0:
        if mode == "fsync":
            os.fdatasync(fd)
        elif mode == "punch":
            end = off // 4096 * 4096
            assert libc.fallocate(fd, PUNCH | KEEP, 0, end) == 0
if mode == "fsync":
    os.fdatasync(fd)
r1, s1 = resource.getrusage(resource.RUSAGE_SELF), stat()
hz = os.sysconf("SC_CLK_TCK")
print(f"{mode}: process sys {(r1.ru_stime - r0.ru_stime) * 1e6 / n:.2f} us/rec, user {(r1.ru_utime - r0.ru_utime) * 1e6 / n:.2f}, "
      f"machine kernel {(s1 - s0) / hz * 1e6 / n:.2f} us/rec, minflt {(r1.ru_minflt - r0.ru_minflt) / n:.3f}/rec")
m.close(); os.close(fd); os.unlink(path)
