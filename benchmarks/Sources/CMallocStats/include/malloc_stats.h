#ifndef SWETCD_MALLOC_STATS_H
#define SWETCD_MALLOC_STATS_H
#include <stddef.h>
/// Bytes the allocator has handed out and not taken back (glibc mallinfo2).
size_t swetcd_heap_bytes_in_use(void);
/// Resident set size of this process, in bytes (/proc/self/statm).
size_t swetcd_resident_bytes(void);
#endif
