/*
 * iomap_shim: an LD_PRELOAD library that lets fuse4fs run its iomap mode
 * over a SOCK_SEQPACKET socketpair, where the test program plays the
 * kernel (tests/iomap_model.py).
 *
 * A kernel with the FUSE iomap extension answers a few ioctls on
 * /dev/fuse; a socket answers them with ENOTTY.  This library intercepts
 * ioctl() and, for the FUSE device requests (magic 0xE5) on a file
 * descriptor that is a socket, answers as the iomap kernel would
 * (fuse-abi.md sections 2.3 and 3):
 *
 *   FUSE_DEV_IOC_IOMAP_SUPPORT  (0x8010E563)  flags = FILEIO
 *   FUSE_DEV_IOC_BACKING_OPEN   (0x4010E501)  type must be IOMAP (1), the
 *       padding zero, the fd an open block device: returns ids 1, 2, ...
 *       and logs "backing_open <id> <device path> <open flags>"
 *   FUSE_DEV_IOC_BACKING_CLOSE  (0x4004E502)  EBUSY (devices live until
 *       unmount)
 *   FUSE_DEV_IOC_SET_NOFS       (0x4004E564)  0 or 1 -> 0, else EINVAL
 *
 * Every other request, and every request on a descriptor that is not a
 * socket, goes to the real ioctl().  The log is the file named by the
 * environment variable F4SHIM_LOG (appended to; nothing is logged when it
 * is unset).  Lines:
 *
 *   iomap_support
 *   backing_open <id> <path> 0x<open flags> mono=<CLOCK_MONOTONIC ns>
 *   backing_open_error <errno> <reason>
 *   backing_close <id>
 *   set_nofs <value>
 *
 * Build: gcc -shared -fPIC -o iomap_shim.so iomap_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHIM_IOC_MAGIC			0xE5u
#define SHIM_IOC_BACKING_OPEN		0x4010E501u
#define SHIM_IOC_BACKING_CLOSE		0x4004E502u
#define SHIM_IOC_IOMAP_SUPPORT		0x8010E563u
#define SHIM_IOC_SET_NOFS		0x4004E564u

#define SHIM_BACKING_TYPE_IOMAP		1u
#define SHIM_IOMAP_SUPPORT_FILEIO	1ull
#define SHIM_MAX_IOMAP_ID		1024

struct shim_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};

struct shim_iomap_support {
	uint64_t flags;
	uint64_t padding;
};

typedef int (*real_ioctl_fn)(int, unsigned long, ...);

static int shim_next_id;	/* last id handed out; atomically bumped */

static real_ioctl_fn shim_real(void)
{
	static real_ioctl_fn real;

	if (!real)
		real = (real_ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
	return real;
}

static void shim_log(const char *fmt, ...)
{
	const char *path = getenv("F4SHIM_LOG");
	char line[PATH_MAX + 128];
	va_list ap;
	int fd, n;

	if (!path || !*path)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	/* One write per line: O_APPEND keeps lines from threads whole. */
	if (write(fd, line, (size_t)n) < 0) {
		/* nothing useful to do */
	}
	close(fd);
}

static int shim_fd_path(int fd, char *buf, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, len - 1);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

static int shim_is_socket(int fd)
{
	char path[PATH_MAX];

	if (shim_fd_path(fd, path, sizeof(path)) < 0)
		return 0;
	return strncmp(path, "socket:", 7) == 0;
}

static int shim_fail(int err)
{
	errno = err;
	return -1;
}

static int shim_backing_open(struct shim_backing_map *map)
{
	char path[PATH_MAX];
	struct timespec now;
	struct stat st;
	int oflags, id;

	if (!map)
		return shim_fail(EFAULT);
	/* Only the iomap type; flag bits beyond the type are refused. */
	if ((map->flags & 0xFFu) != SHIM_BACKING_TYPE_IOMAP) {
		/* passthrough (0) needs FUSE_PASSTHROUGH; others are unknown */
		int err = map->flags & 0xFFu ? EOPNOTSUPP : EPERM;

		shim_log("backing_open_error %d type %u is not IOMAP", err,
			 map->flags & 0xFFu);
		return shim_fail(err);
	}
	if (map->flags != SHIM_BACKING_TYPE_IOMAP) {
		shim_log("backing_open_error %d flags 0x%x has bits beyond "
			 "the type", EINVAL, map->flags);
		return shim_fail(EINVAL);
	}
	if (map->padding != 0) {
		shim_log("backing_open_error %d padding 0x%llx is not zero",
			 EINVAL, (unsigned long long)map->padding);
		return shim_fail(EINVAL);
	}
	oflags = fcntl(map->fd, F_GETFL);
	if (oflags < 0 || fstat(map->fd, &st) < 0) {
		shim_log("backing_open_error %d fd %d is not open", EBADF,
			 map->fd);
		return shim_fail(EBADF);
	}
	if (oflags & O_PATH) {
		shim_log("backing_open_error %d fd %d is an O_PATH fd", EBADF,
			 map->fd);
		return shim_fail(EBADF);
	}
	if (shim_fd_path(map->fd, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "?");
	if (!S_ISBLK(st.st_mode)) {
		shim_log("backing_open_error %d %s is not a block device",
			 ENODEV, path);
		return shim_fail(ENODEV);
	}
	id = __atomic_add_fetch(&shim_next_id, 1, __ATOMIC_SEQ_CST);
	if (id > SHIM_MAX_IOMAP_ID) {
		shim_log("backing_open_error %d out of ids", ENOSPC);
		return shim_fail(ENOSPC);
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	shim_log("backing_open %d %s 0x%x mono=%lld", id, path,
		 (unsigned)oflags,
		 (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
	return id;
}

static int shim_fuse_ioctl(unsigned int req, void *arg)
{
	switch (req) {
	case SHIM_IOC_IOMAP_SUPPORT: {
		struct shim_iomap_support *s = arg;

		if (!s)
			return shim_fail(EFAULT);
		s->flags = SHIM_IOMAP_SUPPORT_FILEIO;
		s->padding = 0;
		shim_log("iomap_support");
		return 0;
	}
	case SHIM_IOC_BACKING_OPEN:
		return shim_backing_open(arg);
	case SHIM_IOC_BACKING_CLOSE: {
		const uint32_t *id = arg;

		if (!id)
			return shim_fail(EFAULT);
		shim_log("backing_close %u", *id);
		if ((int32_t)*id <= 0)
			return shim_fail(EINVAL);
		return shim_fail(EBUSY);
	}
	case SHIM_IOC_SET_NOFS: {
		const uint32_t *v = arg;

		if (!v)
			return shim_fail(EFAULT);
		shim_log("set_nofs %u", *v);
		if (*v > 1)
			return shim_fail(EINVAL);
		return 0;
	}
	}
	return -2;	/* not ours */
}

int ioctl(int fd, unsigned long request, ...)
{
	real_ioctl_fn real = shim_real();
	unsigned int req = (unsigned int)request;
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);

	if (((req >> 8) & 0xFFu) == SHIM_IOC_MAGIC && shim_is_socket(fd)) {
		int ret = shim_fuse_ioctl(req, arg);

		if (ret != -2)
			return ret;
	}
	if (!real)
		return shim_fail(ENOSYS);
	return real(fd, request, arg);
}
