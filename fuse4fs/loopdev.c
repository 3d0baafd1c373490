/*
 * Loop devices for image files.
 *
 * A fuseblk mount needs a block device as its source, and only a fuseblk
 * mount makes the kernel wait for DESTROY before umount(2) returns, so an
 * image file gets an autoclearing loop device.  In classic mode fuse4fs
 * then does all its I/O (libext2fs and file data) through that device,
 * whose page cache takes concurrent writes that the image file's inode
 * lock would serialise; in iomap mode the kernel sends its bios to the
 * device (iomap.c) while fuse4fs keeps to the image file.  The device
 * disappears once the last of the kernel's mount and fuse4fs's own
 * descriptors lets go of it.
 */
#include "config.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fuse4fs.h"

int f4_loop_attach(const char *path, bool ro, uint64_t offset, char *name,
		   size_t namelen, int *loopfd)
{
	struct loop_config cfg;
	int ctl = -1, fd = -1, lfd = -1, tries, ret;

	fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return errno;
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		ret = errno;
		goto out;
	}
	/* Another process may take the free device first: try again. */
	for (tries = 0; tries < 16; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);

		if (n < 0) {
			ret = errno;
			goto out;
		}
		snprintf(name, namelen, "/dev/loop%d", n);
		lfd = open(name, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (lfd < 0) {
			ret = errno;
			goto out;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (uint32_t)fd;
		cfg.info.lo_offset = offset;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR |
			(ro ? LO_FLAGS_READ_ONLY : 0);
		if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
			*loopfd = lfd;
			lfd = -1;
			ret = 0;
			goto out;
		}
		ret = errno;
		close(lfd);
		lfd = -1;
		if (ret != EBUSY)
			goto out;
	}
out:
	if (lfd >= 0)
		close(lfd);
	if (ctl >= 0)
		close(ctl);
	close(fd);
	return ret;
}
