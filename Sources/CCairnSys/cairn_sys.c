#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <errno.h>
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

int cairn_open_unnamed(const char *dir, int mode) {
#ifdef O_TMPFILE
  return open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
#else
  (void)dir; (void)mode;
  errno = EOPNOTSUPP;
  return -1;
#endif
}

int cairn_link_fd(int fd, const char *target) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return linkat(AT_FDCWD, path, AT_FDCWD, target, AT_SYMLINK_FOLLOW);
}
