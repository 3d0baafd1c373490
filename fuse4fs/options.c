/*
 * Command line: fuse4fs [-f] [-d] [-o opt,...] DEVICE MOUNTPOINT.
 *
 * Options fuse4fs understands are consumed here; everything else given with
 * -o is collected for the kernel mount, which libfuse validates.
 */
#include "config.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <fuse_opt.h>

#include "fuse4fs.h"

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_RO,
	KEY_RW,
	KEY_NORECOVERY,
	KEY_ACL,
	KEY_NOACL,
	KEY_SYNC_UNMOUNT,
	KEY_NOSYNC_UNMOUNT,
	KEY_WRITEBACK_CACHE,
	KEY_IOMAP_DEBUG,
};

struct f4_optparse {
	struct f4_options *opts;
	unsigned long long offset;
	unsigned int threads;
	unsigned int write_behind;
	char *iomap;
	char *uring;
	char *errors;
	char *fsname;
	char *subtype;
	int nonopts;
	bool help;
	bool version;
	bool failed;
};

#define F4_OPT(t, p) { t, offsetof(struct f4_optparse, p), 1 }

static const struct fuse_opt f4_opt_spec[] = {
	F4_OPT("offset=%llu", offset),
	F4_OPT("threads=%u", threads),
	F4_OPT("write_behind=%u", write_behind),
	F4_OPT("fsname=%s", fsname),
	F4_OPT("subtype=%s", subtype),
	F4_OPT("iomap=%s", iomap),
	F4_OPT("uring=%s", uring),
	F4_OPT("errors=%s", errors),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("rw", KEY_RW),
	FUSE_OPT_KEY("norecovery", KEY_NORECOVERY),
	FUSE_OPT_KEY("noload", KEY_NORECOVERY),
	FUSE_OPT_KEY("acl", KEY_ACL),
	FUSE_OPT_KEY("noacl", KEY_NOACL),
	FUSE_OPT_KEY("sync_unmount", KEY_SYNC_UNMOUNT),
	FUSE_OPT_KEY("nosync_unmount", KEY_NOSYNC_UNMOUNT),
	FUSE_OPT_KEY("writeback_cache", KEY_WRITEBACK_CACHE),
	FUSE_OPT_KEY("iomap_debug", KEY_IOMAP_DEBUG),
	FUSE_OPT_END
};

void f4_usage(FILE *out)
{
	fprintf(out,
"usage: " F4_PROGNAME " [-f] [-d] [-o option[,option...]] DEVICE|IMAGE MOUNTPOINT\n"
"\n"
"Serve an ext2/ext3/ext4 filesystem through FUSE.\n"
"\n"
"  -f                 stay in the foreground\n"
"  -d                 trace every request and reply to stderr (implies -f)\n"
"  -h, --help         show this help and exit\n"
"  -V, --version      show the version and exit\n"
"\n"
"Filesystem options (-o):\n"
"  rw                 read-write (default)\n"
"  ro                 read-only; nothing at all is written to the device\n"
"  norecovery         serve a filesystem whose journal needs recovery as it\n"
"                     is on disk, without replaying the journal\n"
"  offset=BYTES       the filesystem starts BYTES into the device or image\n"
"  threads=N          number of worker threads (default 4)\n"
"  acl | noacl        expose and enforce POSIX ACLs (default acl)\n"
"  nosync_unmount     do not make umount wait for the write-back (by default\n"
"                     a read-write mount by root is a fuseblk mount, over a\n"
"                     loop device for image files, so that when umount\n"
"                     returns everything is on disk and marked clean)\n"
"  iomap=auto|on|off  let the kernel move file data itself through FUSE\n"
"                     iomap (needs a kernel with the extension, its\n"
"                     enable_iomap module parameter and CAP_SYS_RAWIO);\n"
"                     auto (default) uses it when possible\n"
"  iomap_debug        log every iomap mapping, and check each against the\n"
"                     kernel's validation rules before sending it\n"
"  uring=auto|on|off  take requests over FUSE io_uring queues instead of\n"
"                     /dev/fuse reads (needs the fuse module parameter\n"
"                     enable_uring=Y); auto (default) uses them when the\n"
"                     kernel offers them\n"
"  errors=continue|remount-ro|panic\n"
"                     what to do when corruption is found (default: the\n"
"                     superblock's setting); panic stops all writes\n"
"  write_behind=MIB   answer large buffered writes once they are queued, with\n"
"                     at most MIB queued (default 8; 0: every write waits\n"
"                     for the device); a device error then fails fsync/close\n"
"  writeback_cache    let the kernel cache writes (faster small writes, but\n"
"                     ENOSPC and I/O errors then surface at fsync/close)\n"
"  fsname=NAME        source name shown in /proc/mounts (default DEVICE)\n"
"  subtype=NAME       fuse.NAME in /proc/mounts (default fuse4fs)\n"
"\n"
"Other -o options (allow_other, nodev, nosuid, noexec, ...) are passed to\n"
"the kernel mount.  MOUNTPOINT may be /dev/fd/N to serve an inherited,\n"
"already mounted /dev/fuse descriptor.\n");
}

/* name=auto|on|off; unset means auto. */
static int f4_parse_auto_mode(const char *name, const char *value,
			      enum f4_auto_mode *mode)
{
	if (!value || !strcmp(value, "auto"))
		*mode = F4_AUTO;
	else if (!strcmp(value, "on"))
		*mode = F4_ON;
	else if (!strcmp(value, "off"))
		*mode = F4_OFF;
	else {
		fprintf(stderr, F4_PROGNAME ": %s=%s: expected auto, on or off\n",
			name, value);
		return -1;
	}
	return 0;
}

static int f4_opt_proc(void *data, const char *arg, int key,
		       struct fuse_args *outargs)
{
	struct f4_optparse *p = data;
	struct f4_options *opts = p->opts;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (p->nonopts == 0)
			opts->device = arg;
		else if (p->nonopts == 1)
			opts->mountpoint = arg;
		else {
			fprintf(stderr, F4_PROGNAME ": unexpected argument '%s'\n", arg);
			p->failed = true;
			return -1;
		}
		p->nonopts++;
		return 0;
	case FUSE_OPT_KEY_OPT:
		if (arg[0] == '-') {
			fprintf(stderr, F4_PROGNAME ": unknown option '%s'\n", arg);
			p->failed = true;
			return -1;
		}
		if (fuse_opt_add_opt(&opts->mount_opts, arg) == -1)
			return -1;
		return 0;
	case KEY_HELP:
		p->help = true;
		return 0;
	case KEY_VERSION:
		p->version = true;
		return 0;
	case KEY_FOREGROUND:
		opts->foreground = true;
		return 0;
	case KEY_DEBUG:
		opts->debug = true;
		opts->foreground = true;
		return 0;
	case KEY_RO:
		opts->ro = true;
		return 0;
	case KEY_RW:
		opts->ro = false;
		return 0;
	case KEY_SYNC_UNMOUNT:
		opts->nosync_unmount = false;
		return 0;
	case KEY_NOSYNC_UNMOUNT:
		opts->nosync_unmount = true;
		return 0;
	case KEY_WRITEBACK_CACHE:
		opts->writeback_cache = true;
		return 0;
	case KEY_IOMAP_DEBUG:
		opts->iomap_debug = true;
		return 0;
	case KEY_NORECOVERY:
		opts->norecovery = true;
		return 0;
	case KEY_ACL:
		opts->acl = true;
		return 0;
	case KEY_NOACL:
		opts->acl = false;
		return 0;
	}
	return 1;
}

/*
 * Returns 0 to go on, 1 when the command line asked for help or the
 * version (already printed), -1 on a usage error (already reported).
 */
int f4_parse_options(int argc, char **argv, struct f4_options *opts)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct f4_optparse p = { .opts = opts, .threads = 4,
				 .write_behind = 8 };
	int ret = -1;

	opts->acl = true;
	if (fuse_opt_parse(&args, &p, f4_opt_spec, f4_opt_proc) == -1)
		goto out;
	if (p.help) {
		f4_usage(stdout);
		ret = 1;
		goto out;
	}
	if (p.version) {
		const char *libver = "?";

		ext2fs_get_library_version(&libver, NULL);
		printf(F4_PROGNAME " " PACKAGE_VERSION " (libext2fs %s)\n",
		       libver);
		ret = 1;
		goto out;
	}
	if (!opts->device || !opts->mountpoint) {
		fprintf(stderr, F4_PROGNAME ": %s\n", !opts->device ?
			"no device or image given" : "no mountpoint given");
		f4_usage(stderr);
		goto out;
	}
	if (p.threads < 1 || p.threads > 64) {
		fprintf(stderr, F4_PROGNAME ": threads=%u is out of range (1..64)\n",
			p.threads);
		goto out;
	}
	if (p.write_behind > 1024) {
		fprintf(stderr, F4_PROGNAME ": write_behind=%u is out of range "
			"(0..1024 MiB)\n", p.write_behind);
		goto out;
	}
	if (p.offset > (unsigned long long)INT64_MAX) {
		fprintf(stderr, F4_PROGNAME ": offset=%llu is too large\n",
			p.offset);
		goto out;
	}
	if (f4_parse_auto_mode("iomap", p.iomap, &opts->iomap) ||
	    f4_parse_auto_mode("uring", p.uring, &opts->uring))
		goto out;
	if (p.errors && !strcmp(p.errors, "continue")) {
		opts->errors = EXT2_ERRORS_CONTINUE;
	} else if (p.errors && !strcmp(p.errors, "remount-ro")) {
		opts->errors = EXT2_ERRORS_RO;
	} else if (p.errors && !strcmp(p.errors, "panic")) {
		opts->errors = EXT2_ERRORS_PANIC;
	} else if (p.errors) {
		fprintf(stderr, F4_PROGNAME ": errors=%s: expected continue, "
			"remount-ro or panic\n", p.errors);
		goto out;
	}
	opts->threads = p.threads;
	opts->write_behind_mib = p.write_behind;
	opts->offset = p.offset;
	opts->fsname = p.fsname;
	opts->subtype = p.subtype;
	p.fsname = p.subtype = NULL;
	ret = 0;
out:
	free(p.fsname);
	free(p.subtype);
	free(p.iomap);
	free(p.uring);
	free(p.errors);
	fuse_opt_free_args(&args);
	return p.failed ? -1 : ret;
}

void f4_free_options(struct f4_options *opts)
{
	free(opts->mount_opts);
	free(opts->fsname);
	free(opts->subtype);
	opts->mount_opts = opts->fsname = opts->subtype = NULL;
}
