/*
 * fuse4fs: mount an ext2/3/4 filesystem through FUSE.
 *
 * libfuse does the mounting (fusermount3 for unprivileged users, /dev/fd/N
 * for inherited channels); the protocol engine in lib/ serves the channel,
 * because libfuse 3.14 speaks neither iomap nor io_uring nor passthrough.
 */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <ext2fs/ext2_err.h>

#include "fuse4fs.h"

/* mount(8) conventions */
#define F4_EXIT_USAGE	1
#define F4_EXIT_MOUNT	32

static bool f4_use_syslog;

void f4_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (f4_use_syslog) {
		vsyslog(LOG_ERR, fmt, ap);
	} else {
		fputs(F4_PROGNAME ": ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

static const char *f4_default_subtype(const char *argv0)
{
	const char *base = strrchr(argv0, '/');

	base = base ? base + 1 : argv0;
	if (!strcmp(base, "ext2") || !strcmp(base, "ext3") ||
	    !strcmp(base, "ext4"))
		return base;
	return F4_PROGNAME;
}

/*
 * The options for the kernel mount: ours first, then the user's.  With a
 * block device source the mount is fuseblk, whose unmount waits for
 * DESTROY; its source must be that device.
 */
static char *f4_mount_options(const struct f4_options *opts,
			      const char *argv0, const char *blkdev)
{
	char *mo = NULL, *kv = NULL;

	if (blkdev && fuse_opt_add_opt(&mo, "blkdev") == -1)
		return NULL;
	if (asprintf(&kv, "fsname=%s", blkdev ? blkdev : opts->fsname ?
		     opts->fsname : opts->device) < 0) {
		free(mo);
		return NULL;
	}
	if (fuse_opt_add_opt_escaped(&mo, kv) == -1)
		goto fail;
	free(kv);
	if (asprintf(&kv, "subtype=%s", opts->subtype ? opts->subtype :
		     f4_default_subtype(argv0)) < 0) {
		kv = NULL;
		goto fail;
	}
	if (fuse_opt_add_opt_escaped(&mo, kv) == -1)
		goto fail;
	free(kv);
	kv = NULL;
	/* The kernel checks permissions (and, with FUSE_POSIX_ACL, ACLs)
	 * exactly as it does for its own ext4. */
	if (fuse_opt_add_opt(&mo, "default_permissions") == -1)
		goto fail;
	if (opts->ro && fuse_opt_add_opt(&mo, "ro") == -1)
		goto fail;
	if (opts->mount_opts && fuse_opt_add_opt(&mo, opts->mount_opts) == -1)
		goto fail;
	return mo;
fail:
	free(kv);
	free(mo);
	return NULL;
}

struct f4_sigwait {
	sigset_t set;
	struct fe_session *se;
};

static bool f4_is_dev_fd(const char *path)
{
	return strncmp(path, "/dev/fd/", 8) == 0;
}

/*
 * Move fuse4fs's own I/O from the image file to the loop device just
 * attached over it, before the filesystem is opened (f4_open_fs() opens
 * io_loop too): metadata and file data must share one page cache.
 * Buffered writes to the image file all take its inode lock, so
 * concurrent writers queue behind each other; writes to a block device's
 * page cache do not, and loop passes them on to the image.
 */
static void f4_io_on_loop(struct f4fs *f4, const char *loopname, int *loopfd)
{
	close(f4->devfd);
	f4->devfd = *loopfd;
	*loopfd = -1;
	snprintf(f4->io_loop, sizeof(f4->io_loop), "%s", loopname);
	/* Optional (see f4_dev_write()): without it all writes buffer. */
	f4->dio_fd = open(loopname, O_RDWR | O_DIRECT | O_CLOEXEC);
}

/*
 * Pick the block device a synchronous-unmount (fuseblk) mount stands on:
 * the device itself, or a loop device over the image.  Returns NULL when
 * the mount is a plain fuse mount instead.  Runs before the filesystem is
 * opened, because a loop device attached here also carries all I/O,
 * except in iomap mode, where the kernel sends its bios to a loop device
 * below that device's page cache, so buffered I/O through it would not
 * be coherent with them; and except with offset=, which keeps the image
 * file (a loop device ends at a whole 512-byte sector, which need not be
 * where a filesystem at an unaligned offset ends).
 */
static const char *f4_pick_blkdev(struct f4fs *f4, char *loopname,
				  size_t len, int *loopfd)
{
	struct stat st;
	int ret;

	if (f4->ro || f4->opts.nosync_unmount || geteuid() != 0 ||
	    f4_is_dev_fd(f4->opts.mountpoint))
		return NULL;
	if (stat(f4->opts.device, &st) < 0)
		return NULL;
	if (S_ISBLK(st.st_mode))
		return f4->opts.offset ? NULL : f4->opts.device;
	if (f4->iomap_loop[0] && !f4->opts.offset)
		return f4->iomap_loop;
	ret = f4_loop_attach(f4->opts.device, false, 0, loopname, len, loopfd);
	if (ret) {
		f4_log("no loop device for %s (%s): umount will not wait for "
		       "the filesystem to be written back", f4->opts.device,
		       strerror(ret));
		return NULL;
	}
	if (!f4->iomap_wanted && !f4->opts.offset)
		f4_io_on_loop(f4, loopname, loopfd);
	return loopname;
}

/* Probe for iomap on the channel we will serve, or on a fresh /dev/fuse
 * when libfuse will open the channel at mount time. */
static int f4_probe_iomap(struct f4fs *f4)
{
	const char *mnt = f4->opts.mountpoint;
	int fd, ret;

	if (f4->opts.iomap == F4_OFF)
		return 0;
	if (f4_is_dev_fd(mnt))
		return f4_iomap_prepare(f4, atoi(mnt + 8));
	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	ret = f4_iomap_prepare(f4, fd);
	if (fd >= 0)
		close(fd);
	return ret;
}

#define F4_URING_PARAM "/sys/module/fuse/parameters/enable_uring"

/* uring=on is a promise the kernel must be able to keep. */
static int f4_check_uring(const struct f4_options *opts)
{
	char c = 0;
	int fd;

	if (opts->uring != F4_ON)
		return 0;
	fd = open(F4_URING_PARAM, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (read(fd, &c, 1) != 1)
			c = 0;
		close(fd);
	}
	if (c == 'Y' || c == 'y' || c == '1')
		return 0;
	f4_log("uring=on: the kernel does not offer FUSE over io_uring (%s); "
	       "enable it with 'echo Y > %s', or use uring=auto",
	       fd < 0 ? "no " F4_URING_PARAM : "its enable_uring is off",
	       F4_URING_PARAM);
	return -1;
}

/*
 * libfuse is the judge of the kernel mount options; ask it before the
 * filesystem is opened, so a typo costs nothing.
 */
static struct fuse_session *f4_fuse_session(const struct f4_options *opts,
					    const char *argv0,
					    const char *blkdev)
{
	static const struct fuse_lowlevel_ops no_ops;
	struct fuse_args fargs = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *fuse = NULL;
	char *mo = f4_mount_options(opts, argv0, blkdev);

	if (!mo || fuse_opt_add_arg(&fargs, argv0) == -1 ||
	    fuse_opt_add_arg(&fargs, "-o") == -1 ||
	    fuse_opt_add_arg(&fargs, mo) == -1) {
		f4_log("out of memory");
		goto out;
	}
	fuse = fuse_session_new(&fargs, &no_ops, sizeof(no_ops), NULL);
	if (!fuse)
		f4_log("invalid mount options: %s", mo);
out:
	free(mo);
	fuse_opt_free_args(&fargs);
	return fuse;
}

static void *f4_signal_thread(void *arg)
{
	struct f4_sigwait *sw = arg;
	int sig;

	while (sigwait(&sw->set, &sig) == 0) {
		if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
			fe_session_stop(sw->se);
			break;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct f4fs f4 = { .devfd = -1, .dio_fd = -1, .iomap_fd = -1 };
	struct fuse_session *fuse = NULL;
	struct fe_config cfg = { 0 };
	struct f4_sigwait sw;
	pthread_t sigthread;
	bool sigthread_started = false;
	char loopname[64];
	const char *blkdev;
	int loopfd = -1;
	int exitcode = F4_EXIT_MOUNT;
	int ret;

	/* So that error_message() can describe libext2fs's codes. */
	initialize_ext2_error_table();
	ret = f4_parse_options(argc, argv, &f4.opts);
	if (ret)
		return ret < 0 ? F4_EXIT_USAGE : 0;
	pthread_mutex_init(&f4.lock, NULL);
	pthread_rwlock_init(&f4.flush_barrier, NULL);
	if (f4_itable_init(&f4)) {
		f4_log("out of memory");
		goto out;
	}

	fuse = f4_fuse_session(&f4.opts, argv[0], NULL);
	if (!fuse) {
		exitcode = F4_EXIT_USAGE;
		goto out;
	}
	fuse_session_destroy(fuse);
	fuse = NULL;
	/* Like iomap=on, a missing kernel feature is a mount failure. */
	if (f4_check_uring(&f4.opts))
		goto out;

	if (f4_open_dev(&f4))
		goto out;
	if (f4_probe_iomap(&f4))
		goto out;
	blkdev = f4_pick_blkdev(&f4, loopname, sizeof(loopname), &loopfd);
	if (f4_open_fs(&f4))
		goto out;

	fuse = f4_fuse_session(&f4.opts, argv[0], blkdev);
	if (!fuse)
		goto out;
	/* fuse4fs's own opens of the loop device (devfd, libext2fs) are
	 * not exclusive, so the kernel can still claim it for the mount. */
	ret = fuse_session_mount(fuse, f4.opts.mountpoint);
	/* The kernel holds a fuseblk source open from here on; the loop
	 * device goes away by itself once it and fuse4fs let go. */
	if (loopfd >= 0)
		close(loopfd);
	loopfd = -1;
	if (ret != 0) {
		f4_log("cannot mount on %s", f4.opts.mountpoint);
		fuse_session_destroy(fuse);
		fuse = NULL;
		goto out;
	}
	if (f4_mark_mounted(&f4))
		goto out_unmount;

	cfg.nthreads = f4.opts.threads;
	cfg.debug = f4.opts.debug;
	cfg.io_uring = f4.opts.uring != F4_OFF;
	f4.se = fe_session_new(&f4_ops, &f4, &cfg);
	if (!f4.se) {
		f4_log("out of memory");
		goto out_unmount;
	}

	/* Threads do not survive the fork, so daemonize before any start. */
	if (!f4.opts.foreground) {
		if (fuse_daemonize(0) != 0)
			goto out_unmount;
		f4_use_syslog = true;
		openlog(F4_PROGNAME, LOG_PID, LOG_DAEMON);
	}

	f4_wb_start(&f4);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sw.set);
	sigaddset(&sw.set, SIGINT);
	sigaddset(&sw.set, SIGTERM);
	sigaddset(&sw.set, SIGHUP);
	sw.se = f4.se;
	pthread_sigmask(SIG_BLOCK, &sw.set, NULL);
	if (pthread_create(&sigthread, NULL, f4_signal_thread, &sw) == 0)
		sigthread_started = true;

	ret = fe_session_serve(f4.se, fuse_session_fd(fuse));
	if (ret < 0)
		f4_log("serving %s failed: %s", f4.opts.mountpoint,
		       strerror(-ret));
	exitcode = ret < 0 ? 1 : 0;

	if (sigthread_started) {
		pthread_cancel(sigthread);
		pthread_join(sigthread, NULL);
	}
out_unmount:
	fuse_session_unmount(fuse);
	fuse_session_destroy(fuse);
out:
	if (f4.se)
		fe_session_free(f4.se);
	if (loopfd >= 0)
		close(loopfd);
	f4_close_fs(&f4);
	f4_iomap_release(&f4);
	f4_itable_free(&f4);
	f4_free_options(&f4.opts);
	pthread_rwlock_destroy(&f4.flush_barrier);
	pthread_mutex_destroy(&f4.lock);
	return exitcode;
}
