// Linux calls that Swift's Glibc module does not export (they need _GNU_SOURCE).
#ifndef CAIRN_SYS_H
#define CAIRN_SYS_H
#include <stdint.h>

// Starts writeback of a file range without waiting (sync_file_range SYNC_FILE_RANGE_WRITE),
// so that the fsync at commit finds most pages already on their way to disk.
int cairn_start_writeback(int fd, int64_t offset, int64_t length);

// Advises sequential access for a file read front to back.
int cairn_advise_sequential(int fd);

// Opens an unnamed file in `dir` (O_TMPFILE): it costs no directory entry until linked.
// Returns -1 with errno set (EOPNOTSUPP/EISDIR where the filesystem lacks O_TMPFILE).
int cairn_open_unnamed(const char *dir, int mode);

// Gives an open file (unnamed or not) the name `target`; fails with EEXIST if it exists.
int cairn_link_fd(int fd, const char *target);
#endif
