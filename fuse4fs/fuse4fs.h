/*
 * fuse4fs: an ext2/3/4 server for FUSE.  Internal interfaces shared by the
 * files of the server; each file owns one concern (see Makefile.am).
 */
#ifndef FUSE4FS_H
#define FUSE4FS_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <ext2fs/ext3_extents.h>

#include "fuse_engine.h"

#define F4_PROGNAME "fuse4fs"

enum f4_auto_mode {
	F4_AUTO,
	F4_ON,
	F4_OFF,
};

/* What the user asked for on the command line. */
struct f4_options {
	const char *device;	/* image file or block device */
	const char *mountpoint;
	char *mount_opts;	/* passed through to the kernel mount */
	char *fsname;
	char *subtype;
	uint64_t offset;	/* byte offset of the filesystem in the device */
	unsigned int threads;
	unsigned int write_behind_mib; /* queue size, 0: every write waits */
	bool ro;
	bool norecovery;
	bool nosync_unmount;
	bool writeback_cache;
	enum f4_auto_mode iomap;
	bool iomap_debug;
	enum f4_auto_mode uring;
	uint16_t errors;	/* EXT2_ERRORS_*, 0 = the superblock's */
	bool acl;
	bool foreground;
	bool debug;
};

/* The mounted filesystem. */
struct f4fs {
	/*
	 * libext2fs is not thread safe: every call into it, and every use of
	 * the ext2_filsys, happens under this lock.  File data moves outside
	 * it, through devfd.
	 */
	pthread_mutex_t lock;
	ext2_filsys fs;
	int devfd;		/* data I/O on the device, at opts.offset */
	int dio_fd;		/* io_loop opened O_DIRECT for large writes, or -1 */
	/*
	 * The loop device fuse4fs attached over the image for a classic
	 * fuseblk mount, or "": then devfd and libext2fs both use it instead
	 * of the image file, so that metadata and data share its page cache.
	 */
	char io_loop[64];
	unsigned int blocksize;
	unsigned int blockbits;
	bool ro;
	bool acl;
	double entry_timeout;	/* seconds */
	double attr_timeout;
	double negative_timeout;
	bool nsec_times;	/* inodes store nanoseconds */
	/*
	 * Data written to newly allocated blocks must reach the device before
	 * metadata that points at them: writers hold this shared from
	 * allocation until their data is written, a metadata flush holds it
	 * exclusively.
	 */
	pthread_rwlock_t flush_barrier;
	struct f4_itable *itable;
	struct f4_wb *wb;	/* write-behind queue, or NULL (writebehind.c) */
	/* Inodes holding a soft reservation window (mapping.c). */
	struct f4_inode *resv_list;
	/* No free run of nofit_len blocks while at most nofit_free blocks
	 * are free (mapping.c; 0 and 0: nothing known). */
	uint64_t nofit_len;
	uint64_t nofit_free;
	/* iomap: the kernel moves file data itself (iomap.c) */
	bool iomap_wanted;	/* probed and prepared before mounting */
	bool iomap;		/* agreed in INIT */
	int iomap_fd;		/* the block device registered for mappings */
	uint32_t iomap_dev;	/* its backing id */
	uint64_t iomap_addr_offset; /* device address of filesystem byte 0 */
	char iomap_loop[64];	/* loop device over an image, if any */
	bool shutdown;		/* after SHUTDOWN_FS every request fails */
	struct f4_options opts;
	struct fe_session *se;
};

#define F4_LINK_MAX	65000	/* EXT4_LINK_MAX */

/* ext4's timestamp range: 1901 to 2446 with the extra epoch bits, to 2038
 * without them. */
#define F4_TIME_MIN		((int64_t)INT32_MIN)
#define F4_TIME_MAX_EXTRA	(((int64_t)1 << 34) - 1 + INT32_MIN)
#define F4_TIME_MAX_OLD		((int64_t)INT32_MAX)

/* The timestamps of an inode, for f4_touch(). */
enum {
	F4_ATIME = 1 << 0,
	F4_MTIME = 1 << 1,
	F4_CTIME = 1 << 2,
	F4_CRTIME = 1 << 3,
};

/* An inode the kernel holds: looked up, open, or both (itable.c). */
struct f4_inode {
	ext2_ino_t ino;
	unsigned int opens;	/* open handles */
	uint64_t nlookup;	/* references handed out and not yet forgotten */
	bool orphan;		/* unlinked while held: on the orphan list */
	ext2_ino_t orphan_prev;	/* the orphan whose i_dtime names this one */
	/* Who last opened it for writing: writes from the kernel's page
	 * cache carry the kernel's identity, not the writer's. */
	uint32_t writer_uid;
	uint32_t writer_gid;
	pthread_rwlock_t iolock; /* data I/O shared; size/extent changes exclusive */
	/* Soft reservation (mapping.c): device blocks [resv_start,
	 * resv_end) that this inode's next allocation continues into and
	 * others' allocations avoid.  Memory only; on f4fs.resv_list while
	 * resv_pprev is set. */
	uint64_t resv_start;
	uint64_t resv_end;
	struct f4_inode *resv_next;
	struct f4_inode **resv_pprev;
	/* Write-behind (writebehind.c), changed under its lock: queued
	 * writes not yet on the device (read without the lock too), and
	 * the first error not yet reported. */
	unsigned int wb_pending;
	int wb_error;
	struct f4_inode *next;
};

struct f4_itable;

static inline void f4_lock(struct f4fs *f4)
{
	pthread_mutex_lock(&f4->lock);
}

static inline void f4_unlock(struct f4fs *f4)
{
	pthread_mutex_unlock(&f4->lock);
}

/* errno.c: the one translation from libext2fs error codes to errno. */
int f4_errno(errcode_t err);
void f4_fs_error(struct f4fs *f4, ext2_ino_t ino, int err);
int f4_reply_err(struct fe_req *req, int err);

/* options.c */
int f4_parse_options(int argc, char **argv, struct f4_options *opts);
void f4_usage(FILE *out);
void f4_free_options(struct f4_options *opts);

/* super.c: opening, checking and describing the filesystem. */
int f4_open_dev(struct f4fs *f4);
int f4_open_fs(struct f4fs *f4);
int f4_mark_mounted(struct f4fs *f4);
void f4_close_fs(struct f4fs *f4);
int f4_flush(struct f4fs *f4, bool sync);
void f4_statfs(struct fe_req *req, uint64_t nodeid);
void f4_syncfs(struct fe_req *req, uint64_t nodeid);
void f4_reply_flushed(struct fe_req *req);
void f4_destroy(void *fs);

/* writebehind.c: large buffered writes answered before the device
 * write; direct writes need this alignment of buffer, length, offset. */
#define F4_DIO_ALIGN	4096
struct f4_wb;
void f4_wb_start(struct f4fs *f4);
void f4_wb_stop(struct f4fs *f4);
bool f4_wb_queue(struct f4fs *f4, struct f4_inode *ip, const void *data,
		 size_t len, off_t dev);
void f4_wb_wait(struct f4fs *f4, struct f4_inode *ip);
bool f4_wb_quiet(struct f4fs *f4);
int f4_wb_take_error(struct f4fs *f4, struct f4_inode *ip);

/* loopdev.c */
int f4_loop_attach(const char *path, bool ro, uint64_t offset, char *name,
		   size_t namelen, int *loopfd);

/* itable.c */
int f4_itable_init(struct f4fs *f4);
void f4_itable_free(struct f4fs *f4);
struct f4_inode *f4_itable_find(struct f4fs *f4, ext2_ino_t ino);
struct f4_inode *f4_itable_get(struct f4fs *f4, ext2_ino_t ino);
void f4_itable_put(struct f4fs *f4, struct f4_inode *ip);
void f4_itable_lookup(struct f4fs *f4, ext2_ino_t ino);
void f4_forget(void *fs, uint64_t nodeid, uint64_t nlookup);
int f4_itable_handle(struct f4fs *f4, uint64_t fh, ext2_ino_t ino,
		     struct f4_inode **ipp);

/* inode.c: node ids, inode reading and attributes. */
static inline ext2_ino_t f4_nodeid_to_ino(uint64_t nodeid)
{
	return nodeid == FUSE_ROOT_ID ? EXT2_ROOT_INO : (ext2_ino_t)nodeid;
}

static inline uint64_t f4_ino_to_nodeid(ext2_ino_t ino)
{
	return ino == EXT2_ROOT_INO ? FUSE_ROOT_ID : ino;
}

int f4_check_nodeid(struct f4fs *f4, uint64_t nodeid, ext2_ino_t *ino);
int f4_read_inode(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode);
int f4_iget(struct f4fs *f4, uint64_t nodeid, ext2_ino_t *ino,
	    struct ext2_inode_large *inode);
uint64_t f4_inode_size(const struct ext2_inode_large *inode);
void f4_fill_attr(struct f4fs *f4, ext2_ino_t ino,
		  const struct ext2_inode_large *inode, struct fuse_attr *attr);
void f4_fill_entry(struct f4fs *f4, ext2_ino_t ino,
		   const struct ext2_inode_large *inode,
		   struct fuse_entry_out *entry);
uint32_t f4_dirent_type(unsigned int ext2_file_type);
uint32_t f4_mode_to_dtype(uint16_t mode);
void f4_getattr(struct fe_req *req, uint64_t nodeid,
		const struct fuse_getattr_in *arg);
void f4_statx(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_statx_in *arg);
void f4_access(struct fe_req *req, uint64_t nodeid,
	       const struct fuse_access_in *arg);
int f4_write_inode(struct f4fs *f4, ext2_ino_t ino,
		   struct ext2_inode_large *inode);
void f4_init_extent_header(struct ext2_inode_large *inode);
void f4_touch(struct f4fs *f4, struct ext2_inode_large *inode,
	      unsigned int which, const struct timespec *ts);
int f4_new_inode(struct f4fs *f4, struct fe_req *req, ext2_ino_t dir,
		 const struct ext2_inode_large *dir_inode, uint32_t mode,
		 ext2_ino_t *ino, struct ext2_inode_large *inode);
int f4_free_inode(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode);
int f4_orphan_add(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode);
int f4_orphan_del(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode);
int f4_drop_link(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode);
void f4_inc_nlink(struct f4fs *f4, struct ext2_inode_large *inode);
void f4_dec_nlink(struct ext2_inode_large *inode);
bool f4_dir_link_max(struct f4fs *f4, const struct ext2_inode_large *dir);
void f4_setattr(struct fe_req *req, uint64_t nodeid,
		const struct fuse_setattr_in *arg);
void f4_kill_suidgid(struct fe_req *req, struct ext2_inode_large *inode);
bool f4_kernel_keeps_times(struct f4fs *f4,
			   const struct ext2_inode_large *inode);
bool f4_caller_in_group(uint32_t pid, uint32_t gid);

/* dir.c: directory blocks, listing and name lookup. */
typedef int (*f4_dirent_fn)(void *priv, ext2_ino_t ino, const char *name,
			    unsigned int namelen, unsigned int ftype,
			    uint64_t next_pos);
int f4_dir_iterate(struct f4fs *f4, ext2_ino_t dir,
		   const struct ext2_inode_large *inode, uint64_t pos,
		   f4_dirent_fn fn, void *priv);
int f4_dir_lookup(struct f4fs *f4, ext2_ino_t dir,
		  const struct ext2_inode_large *inode, const char *name,
		  size_t namelen, ext2_ino_t *found, uint64_t *where);
int f4_dx_index_dir(struct f4fs *f4, ext2_ino_t dir);
int f4_dir_add(struct f4fs *f4, ext2_ino_t dir, const char *name,
	       ext2_ino_t ino, uint16_t mode);
int f4_dir_remove(struct f4fs *f4, ext2_ino_t dir, const char *name);
int f4_dir_retarget(struct f4fs *f4, ext2_ino_t dir, const char *name,
		    ext2_ino_t ino, uint16_t mode);
int f4_dir_is_empty(struct f4fs *f4, ext2_ino_t dir,
		    const struct ext2_inode_large *inode);
int f4_dir_make(struct f4fs *f4, ext2_ino_t ino,
		struct ext2_inode_large *inode, ext2_ino_t parent);
void f4_fsyncdir(struct fe_req *req, uint64_t nodeid,
		 const struct fuse_fsync_in *arg);
void f4_opendir(struct fe_req *req, uint64_t nodeid,
		const struct fuse_open_in *arg);
void f4_readdir(struct fe_req *req, uint64_t nodeid,
		const struct fuse_read_in *arg);
void f4_readdirplus(struct fe_req *req, uint64_t nodeid,
		    const struct fuse_read_in *arg);
void f4_releasedir(struct fe_req *req, uint64_t nodeid,
		   const struct fuse_release_in *arg);

/* namei.c */
void f4_lookup(struct fe_req *req, uint64_t parent, const char *name);
void f4_mknod(struct fe_req *req, uint64_t parent, const char *name,
	      const struct fuse_mknod_in *arg);
void f4_mkdir(struct fe_req *req, uint64_t parent, const char *name,
	      const struct fuse_mkdir_in *arg);
void f4_symlink(struct fe_req *req, uint64_t parent, const char *name,
		const char *target);
void f4_create(struct fe_req *req, uint64_t parent, const char *name,
	       const struct fuse_create_in *arg);
void f4_tmpfile(struct fe_req *req, uint64_t parent,
		const struct fuse_create_in *arg);
void f4_link(struct fe_req *req, uint64_t oldnodeid, uint64_t newparent,
	     const char *newname);
void f4_unlink(struct fe_req *req, uint64_t parent, const char *name);
void f4_rmdir(struct fe_req *req, uint64_t parent, const char *name);
void f4_rename(struct fe_req *req, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, uint32_t flags);

/* mapping.c: the mapping engine.  Ranges are in filesystem blocks. */
enum f4_map_type {
	F4_MAP_HOLE,
	F4_MAP_MAPPED,
	F4_MAP_UNWRITTEN,
	F4_MAP_INLINE,
};

struct f4_map {
	uint64_t lblk;		/* first file block described */
	uint64_t len;		/* number of blocks, >= 1 */
	uint64_t pblk;		/* first device block (MAPPED/UNWRITTEN) */
	enum f4_map_type type;
	bool fresh;		/* allocated by this call: contents undefined */
};

#define F4_MAP_READ	0u	/* look up only */
#define F4_MAP_WRITE	1u	/* allocate holes; the caller writes the data */
#define F4_MAP_ROOT	2u	/* the caller may use the root-reserved blocks */

int f4_map_begin(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode, uint64_t lblk,
		 uint64_t maxlen, unsigned int flags, struct f4_map *map);
int f4_map_convert(struct f4fs *f4, ext2_ino_t ino,
		   struct ext2_inode_large *inode, uint64_t lblk,
		   uint64_t len);
int f4_map_punch(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode, uint64_t start,
		 uint64_t end);
int f4_map_prealloc(struct f4fs *f4, ext2_ino_t ino,
		    struct ext2_inode_large *inode, uint64_t lblk,
		    uint64_t len, unsigned int flags);
uint64_t f4_max_file_size(struct f4fs *f4,
			  const struct ext2_inode_large *inode);
uint64_t f4_extent_reserve(struct f4fs *f4);
int f4_check_space(struct f4fs *f4, uint64_t nblocks, bool root);
bool f4_req_privileged(struct f4fs *f4, const struct fe_req *req);
void f4_resv_drop(struct f4_inode *ip);

/* file.c */
void f4_open(struct fe_req *req, uint64_t nodeid,
	     const struct fuse_open_in *arg);
void f4_read(struct fe_req *req, uint64_t nodeid,
	     const struct fuse_read_in *arg);
void f4_release(struct fe_req *req, uint64_t nodeid,
		const struct fuse_release_in *arg);
void f4_lseek(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_lseek_in *arg);
int f4_read_inline(struct f4fs *f4, ext2_ino_t ino,
		   struct ext2_inode_large *inode, void **buf, size_t *size);
void f4_write(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_write_in *arg, const void *data);
void f4_flush_op(struct fe_req *req, uint64_t nodeid,
		 const struct fuse_flush_in *arg);
void f4_fsync(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_fsync_in *arg);
void f4_fallocate(struct fe_req *req, uint64_t nodeid,
		  const struct fuse_fallocate_in *arg);
int f4_truncate(struct f4fs *f4, ext2_ino_t ino,
		struct ext2_inode_large *inode, uint64_t size);
int f4_pwrite_full(int fd, const void *buf, size_t len, off_t off);
int f4_zero_range_on_disk(struct f4fs *f4, ext2_ino_t ino,
			  struct ext2_inode_large *inode, uint64_t start,
			  uint64_t end);
int f4_open_file(struct f4fs *f4, ext2_ino_t ino, struct f4_inode **ipp);

/* symlink.c */
void f4_readlink(struct fe_req *req, uint64_t nodeid);

/* xattr.c */
void f4_getxattr(struct fe_req *req, uint64_t nodeid, const char *name,
		 uint32_t size);
void f4_listxattr(struct fe_req *req, uint64_t nodeid, uint32_t size);
void f4_setxattr(struct fe_req *req, uint64_t nodeid, const char *name,
		 const void *value, uint32_t size, uint32_t flags,
		 uint32_t setxattr_flags);
void f4_removexattr(struct fe_req *req, uint64_t nodeid, const char *name);
int f4_acl_inherit(struct f4fs *f4, ext2_ino_t dir, ext2_ino_t ino,
		   struct ext2_inode_large *inode, uint32_t umask);
int f4_acl_chmod(struct f4fs *f4, ext2_ino_t ino, uint16_t mode);

/* iomap.c */
int f4_iomap_prepare(struct f4fs *f4, int fusefd);
void f4_iomap_release(struct f4fs *f4);
uint32_t f4_iomap_attr_flags(struct f4fs *f4,
			     const struct ext2_inode_large *inode);
void f4_iomap_statx(struct f4fs *f4, struct fuse_statx *sx);
void f4_iomap_config(struct fe_req *req,
		     const struct fuse_iomap_config_in *arg);
void f4_iomap_begin(struct fe_req *req, uint64_t nodeid,
		    const struct fuse_iomap_begin_in *arg);
void f4_iomap_end(struct fe_req *req, uint64_t nodeid,
		  const struct fuse_iomap_end_in *arg);
void f4_iomap_ioend(struct fe_req *req, uint64_t nodeid,
		    const struct fuse_iomap_ioend_in *arg);
void f4_freezefs(struct fe_req *req, uint64_t nodeid,
		 const struct fuse_freezefs_in *arg);
void f4_unfreezefs(struct fe_req *req, uint64_t nodeid);
void f4_shutdownfs(struct fe_req *req, uint64_t nodeid,
		   const struct fuse_shutdownfs_in *arg);

/* ops.c */
extern const struct fe_ops f4_ops;

/* Logging: messages for the user go to stderr with the program name. */
void f4_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* FUSE4FS_H */
