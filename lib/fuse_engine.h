/*
 * The FUSE protocol engine: reads requests from a FUSE channel, checks
 * every request's length against its opcode, negotiates INIT, dispatches
 * to a filesystem's operation table and builds replies.
 *
 * The engine knows nothing about any particular filesystem.  Operations
 * receive the request's fixed argument struct (already length-checked) and
 * any trailing names (already checked to be NUL-terminated inside the
 * request).  Every operation must answer its request exactly once with one
 * of the fe_reply_*() calls before returning (the engine answers EIO for
 * an operation that returns without replying), except forget, which
 * never replies.
 *
 * Node ids are passed through untranslated; the root is FUSE_ROOT_ID (1).
 */
#ifndef FUSE_ENGINE_H
#define FUSE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fuse_abi.h"

struct fe_session;

/* One request in flight, valid while its operation runs. */
struct fe_req {
	struct fe_session *se;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t opcode;
	uint32_t uid;
	uint32_t gid;
	uint32_t pid;
	int fd;			/* channel the reply goes to */
	int interrupted;	/* read with fe_req_interrupted() */
	/* Supplementary groups sent with create-type ops, if negotiated. */
	uint32_t ngroups;
	const uint32_t *groups;
};

/*
 * Connection parameters.  The engine fills in what the kernel offered and
 * the defaults; the filesystem's init() sets `want` (the INIT flag bits it
 * would like, flags2 shifted into bits 32..63) and may lower the limits.
 * After init() the engine replies with (want & kernel_flags) and stores the
 * result in `flags`.
 */
struct fe_conn {
	uint32_t kernel_major;
	uint32_t kernel_minor;
	uint32_t major;		/* agreed */
	uint32_t minor;		/* agreed: min(kernel, 45); 99 with FUSE_IOMAP
				 * (still the kernel's view while in init) */
	uint64_t kernel_flags;	/* offered: flags | flags2 << 32 */
	uint64_t want;		/* set by the filesystem */
	uint64_t flags;		/* agreed */
	uint32_t max_readahead;
	uint32_t max_write;	/* default 1 MiB */
	uint16_t max_pages;	/* default max_write / page size */
	uint16_t max_background;
	uint16_t congestion_threshold;
	uint32_t time_gran;	/* nanoseconds, default 1 */
};

/*
 * Operation table.  A NULL entry answers ENOSYS.  Arguments are pointers
 * into the request buffer and valid until the reply.
 */
struct fe_ops {
	void (*init)(void *fs, struct fe_conn *conn);
	/* Called once when DESTROY arrives (before it is answered) or when the
	 * channel closes without one. */
	void (*destroy)(void *fs);

	void (*lookup)(struct fe_req *req, uint64_t parent, const char *name);
	void (*forget)(void *fs, uint64_t nodeid, uint64_t nlookup);
	void (*getattr)(struct fe_req *req, uint64_t nodeid,
			const struct fuse_getattr_in *arg);
	void (*setattr)(struct fe_req *req, uint64_t nodeid,
			const struct fuse_setattr_in *arg);
	void (*readlink)(struct fe_req *req, uint64_t nodeid);
	void (*symlink)(struct fe_req *req, uint64_t parent, const char *name,
			const char *target);
	void (*mknod)(struct fe_req *req, uint64_t parent, const char *name,
		      const struct fuse_mknod_in *arg);
	void (*mkdir)(struct fe_req *req, uint64_t parent, const char *name,
		      const struct fuse_mkdir_in *arg);
	void (*unlink)(struct fe_req *req, uint64_t parent, const char *name);
	void (*rmdir)(struct fe_req *req, uint64_t parent, const char *name);
	/* RENAME arrives here with flags 0. */
	void (*rename)(struct fe_req *req, uint64_t parent, const char *name,
		       uint64_t newparent, const char *newname, uint32_t flags);
	void (*link)(struct fe_req *req, uint64_t oldnodeid, uint64_t newparent,
		     const char *newname);
	void (*open)(struct fe_req *req, uint64_t nodeid,
		     const struct fuse_open_in *arg);
	void (*read)(struct fe_req *req, uint64_t nodeid,
		     const struct fuse_read_in *arg);
	/* `data` holds arg->size bytes (checked against the request length). */
	void (*write)(struct fe_req *req, uint64_t nodeid,
		      const struct fuse_write_in *arg, const void *data);
	void (*statfs)(struct fe_req *req, uint64_t nodeid);
	void (*release)(struct fe_req *req, uint64_t nodeid,
			const struct fuse_release_in *arg);
	void (*fsync)(struct fe_req *req, uint64_t nodeid,
		      const struct fuse_fsync_in *arg);
	/* `flags` are XATTR_CREATE/XATTR_REPLACE; `setxattr_flags` is 0
	 * when SETXATTR_EXT was not negotiated. */
	void (*setxattr)(struct fe_req *req, uint64_t nodeid, const char *name,
			 const void *value, uint32_t size, uint32_t flags,
			 uint32_t setxattr_flags);
	void (*getxattr)(struct fe_req *req, uint64_t nodeid, const char *name,
			 uint32_t size);
	void (*listxattr)(struct fe_req *req, uint64_t nodeid, uint32_t size);
	void (*removexattr)(struct fe_req *req, uint64_t nodeid,
			    const char *name);
	void (*flush)(struct fe_req *req, uint64_t nodeid,
		      const struct fuse_flush_in *arg);
	void (*opendir)(struct fe_req *req, uint64_t nodeid,
			const struct fuse_open_in *arg);
	void (*readdir)(struct fe_req *req, uint64_t nodeid,
			const struct fuse_read_in *arg);
	void (*readdirplus)(struct fe_req *req, uint64_t nodeid,
			    const struct fuse_read_in *arg);
	void (*releasedir)(struct fe_req *req, uint64_t nodeid,
			   const struct fuse_release_in *arg);
	void (*fsyncdir)(struct fe_req *req, uint64_t nodeid,
			 const struct fuse_fsync_in *arg);
	void (*access)(struct fe_req *req, uint64_t nodeid,
		       const struct fuse_access_in *arg);
	void (*create)(struct fe_req *req, uint64_t parent, const char *name,
		       const struct fuse_create_in *arg);
	void (*tmpfile)(struct fe_req *req, uint64_t parent,
			const struct fuse_create_in *arg);
	void (*fallocate)(struct fe_req *req, uint64_t nodeid,
			  const struct fuse_fallocate_in *arg);
	void (*lseek)(struct fe_req *req, uint64_t nodeid,
		      const struct fuse_lseek_in *arg);
	void (*copy_file_range)(struct fe_req *req, uint64_t nodeid,
				const struct fuse_copy_file_range_in *arg);
	void (*syncfs)(struct fe_req *req, uint64_t nodeid);
	void (*statx)(struct fe_req *req, uint64_t nodeid,
		      const struct fuse_statx_in *arg);
	void (*ioctl)(struct fe_req *req, uint64_t nodeid,
		      const struct fuse_ioctl_in *arg, const void *in_data);
	void (*bmap)(struct fe_req *req, uint64_t nodeid,
		     const struct fuse_bmap_in *arg);

	/*
	 * The iomap extension (protocol 7.99).  IOMAP_CONFIG (nodeid 0) is
	 * the place to register the block device (fe_backing_open_iomap).
	 * Unless FUSE_IOMAP was agreed in INIT the engine answers these
	 * seven opcodes with ENOSYS itself.
	 */
	void (*iomap_config)(struct fe_req *req,
			     const struct fuse_iomap_config_in *arg);
	void (*iomap_begin)(struct fe_req *req, uint64_t nodeid,
			    const struct fuse_iomap_begin_in *arg);
	void (*iomap_end)(struct fe_req *req, uint64_t nodeid,
			  const struct fuse_iomap_end_in *arg);
	void (*iomap_ioend)(struct fe_req *req, uint64_t nodeid,
			    const struct fuse_iomap_ioend_in *arg);
	void (*freezefs)(struct fe_req *req, uint64_t nodeid,
			 const struct fuse_freezefs_in *arg);
	void (*unfreezefs)(struct fe_req *req, uint64_t nodeid);
	void (*shutdownfs)(struct fe_req *req, uint64_t nodeid,
			   const struct fuse_shutdownfs_in *arg);
};

struct fe_config {
	unsigned int nthreads;	/* worker threads; 0 means 1 */
	bool debug;		/* trace every request and reply to stderr */
	size_t max_write;	/* 0 means 1 MiB */
	/* Serve over io_uring when the kernel offers it (FUSE_OVER_IO_URING);
	 * /dev/fuse otherwise. */
	bool io_uring;
};

struct fe_session *fe_session_new(const struct fe_ops *ops, void *fs,
				  const struct fe_config *cfg);
void fe_session_free(struct fe_session *se);

/*
 * Serve the channel `fd` (an open /dev/fuse, or a SOCK_SEQPACKET socket
 * standing in for one) until the connection ends: the filesystem is
 * unmounted (ENODEV), the peer closes the channel, DESTROY was answered, or
 * fe_session_stop() was called.  The engine uses SIGUSR1 to wake its
 * workers while serving.  Each extra worker thread reads its own
 * clone of the channel (FUSE_DEV_IOC_CLONE) where the channel supports it,
 * and shares `fd` otherwise.  With fe_config.io_uring, ring workers (one
 * or more per possible CPU) take over the ordinary requests once INIT has
 * agreed FUSE_OVER_IO_URING.  Returns 0 or a negative errno.
 */
int fe_session_serve(struct fe_session *se, int fd);

/* Ask the workers to finish their current request and return.  Safe to call
 * from any thread (not from a signal handler). */
void fe_session_stop(struct fe_session *se);

/* The agreed parameters, or NULL before INIT was answered. */
const struct fe_conn *fe_session_conn(const struct fe_session *se);
void *fe_req_fs(const struct fe_req *req);
/* True once the kernel sent INTERRUPT for this request. */
bool fe_req_interrupted(const struct fe_req *req);

/* Replies.  `err` is a positive errno; each returns 0 or a negative errno
 * from writing the reply (which the operation may ignore). */
int fe_reply_err(struct fe_req *req, int err);
int fe_reply_ok(struct fe_req *req);	/* header only, no error */
int fe_reply_buf(struct fe_req *req, const void *buf, size_t len);
/*
 * Where the reply's data could be built so that fe_reply_buf() need not
 * copy it: len bytes, page-aligned, valid until the reply.  NULL when the
 * transport has no such place (then any buffer will do).
 */
void *fe_reply_space(struct fe_req *req, size_t len);
int fe_reply_iov(struct fe_req *req, const struct iovec *iov, int iovcnt);
int fe_reply_entry(struct fe_req *req, const struct fuse_entry_out *e);
int fe_reply_create(struct fe_req *req, const struct fuse_entry_out *e,
		    const struct fuse_open_out *o);
int fe_reply_attr(struct fe_req *req, const struct fuse_attr_out *a);
int fe_reply_open(struct fe_req *req, const struct fuse_open_out *o);
int fe_reply_write(struct fe_req *req, uint32_t count);
int fe_reply_statfs(struct fe_req *req, const struct fuse_kstatfs *st);
int fe_reply_xattr_size(struct fe_req *req, uint32_t size);
int fe_reply_lseek(struct fe_req *req, uint64_t offset);
int fe_reply_statx(struct fe_req *req, const struct fuse_statx_out *sx);
int fe_reply_bmap(struct fe_req *req, uint64_t block);
/* iomap replies.  BEGIN (64 bytes) and IOEND (8) have the exact sizes the
 * kernel demands; CONFIG sends 96 bytes, which every revision of the
 * series accepts, or 104 when FUSE_IOMAP_CONFIG_CACHE_MAXBYTES is set.
 * Set only the CONFIG flags the kernel offered in fuse_iomap_config_in. */
int fe_reply_iomap_config(struct fe_req *req,
			  const struct fuse_iomap_config_out *out);
int fe_reply_iomap_begin(struct fe_req *req,
			 const struct fuse_iomap_begin_out *out);
int fe_reply_iomap_ioend(struct fe_req *req, uint64_t newsize);

/*
 * Directory listing helpers.  Append one record to buf (of `size` bytes,
 * `used` already filled) and return the new `used`, or `used` unchanged if
 * the record does not fit.  `off` is the cookie of the *next* entry.
 */
size_t fe_add_dirent(char *buf, size_t size, size_t used, const char *name,
		     size_t namelen, uint64_t ino, uint32_t type, uint64_t off);
size_t fe_add_direntplus(char *buf, size_t size, size_t used,
			 const char *name, size_t namelen,
			 const struct fuse_entry_out *e, uint32_t type,
			 uint64_t off);

/* Notifications to the kernel.  Return 0 or a negative errno. */
int fe_notify_inval_inode(struct fe_session *se, uint64_t nodeid,
			  int64_t off, int64_t len);
int fe_notify_inval_entry(struct fe_session *se, uint64_t parent,
			  const char *name, size_t namelen);
int fe_notify_delete(struct fe_session *se, uint64_t parent, uint64_t child,
		     const char *name, size_t namelen);
int fe_notify_iomap_dev_inval(struct fe_session *se, uint32_t dev,
			      uint64_t offset, uint64_t length);
int fe_notify_iomap_upsert(struct fe_session *se,
			   const struct fuse_iomap_upsert_mappings_out *m);
int fe_notify_iomap_inval(struct fe_session *se,
			  const struct fuse_iomap_inval_mappings_out *m);

/*
 * The iomap extension's device ioctls.
 *
 * fe_iomap_probe: ask the FUSE device fd (an open /dev/fuse, before or
 * after mounting) whether this process may use iomap.  Returns 0 with
 * *flags = FUSE_IOMAP_SUPPORT_* (0 when not permitted), -ENOTTY on a
 * kernel without the extension, or another -errno.
 *
 * fe_backing_open_iomap: register a block device (opened O_RDWR, or
 * O_RDONLY for read-only mounts) with the mounted session for use in
 * mappings; returns the device id (> 0) or -errno.  Call it after INIT,
 * e.g. from iomap_config.  It and the notifications above return
 * -ENOTCONN before INIT is answered or outside fe_session_serve().
 *
 * Once FUSE_IOMAP is agreed, every worker thread marks itself with
 * FUSE_DEV_IOC_SET_NOFS before reading its next request, since iomap
 * requests can come from memory reclaim.
 */
int fe_iomap_probe(int fd, uint64_t *flags);
int fe_backing_open_iomap(struct fe_session *se, int devfd);

/* Name of an opcode for traces ("LOOKUP", "IOMAP_BEGIN", ...). */
const char *fe_opcode_name(uint32_t opcode);

#endif /* FUSE_ENGINE_H */
