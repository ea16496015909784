// Linux calls that Swift's Glibc module does not export (they need _GNU_SOURCE).
#ifndef CAIRN_SYS_H
#define CAIRN_SYS_H
#include <stdint.h>

// Starts writeback of a file range without waiting (sync_file_range SYNC_FILE_RANGE_WRITE),
// so that the fsync at commit finds most pages already on their way to disk.
int cairn_start_writeback(int fd, int64_t offset, int64_t length);

// Advises sequential access for a file read front to back.
int cairn_advise_sequential(int fd);
#endif
