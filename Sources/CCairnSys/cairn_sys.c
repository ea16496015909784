#define _GNU_SOURCE
#include <fcntl.h>
#include "cairn_sys.h"

int cairn_start_writeback(int fd, int64_t offset, int64_t length) {
#ifdef __linux__
  return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
#else
  (void)fd; (void)offset; (void)length;
  return 0;
#endif
}

int cairn_advise_sequential(int fd) {
#ifdef __linux__
  return posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#else
  (void)fd;
  return 0;
#endif
}
