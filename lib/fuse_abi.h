/*
 * The FUSE wire format as fuse4fs speaks it: protocol 7.45 (Linux 6.18) plus
 * the experimental iomap extension (protocol 7.99, fuse-iomap series v7).
 *
 * This is the only place in fuse4fs that knows byte layouts and numeric
 * values of the protocol.  Every structure is checked against the sizes and
 * offsets of the reference ABI at compile time, so a mistake here fails the
 * build instead of corrupting a mount.
 *
 * Names follow the kernel's uapi so that the kernel sources and traces can
 * be read side by side.  The header coexists with libfuse's public headers:
 * FUSE_ROOT_ID is shared, and the ioctl request flags, which libfuse also
 * defines, are spelled FE_IOCTL_* here.
 *
 * The iomap values (opcodes 4089-4095, notify codes 99-101, the ioctls from
 * number 99 on, FUSE_IOMAP) are not stable upstream ABI; check them against
 * the uapi header of the kernel actually in use.
 */
#ifndef FUSE4FS_FUSE_ABI_H
#define FUSE4FS_FUSE_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <linux/ioctl.h>

/* ------------------------------------------------------------------ */
/* Versions and general constants                                      */
/* ------------------------------------------------------------------ */

#define FUSE_KERNEL_VERSION		7
/* Highest minor of the stock protocol this header describes. */
#define FUSE_KERNEL_MINOR_VERSION	45
/* Minor used by kernels with the iomap series; it must be echoed back. */
#define FUSE_IOMAP_MINOR_VERSION	99

/* Same spelling as libfuse's fuse_lowlevel.h so either may come first. */
#ifndef FUSE_ROOT_ID
#define FUSE_ROOT_ID 1
#endif

/* Smallest buffer a read() of /dev/fuse may offer. */
#define FUSE_MIN_READ_BUFFER		8192

/* Reply/request sizes of old protocol minors. */
#define FUSE_COMPAT_ENTRY_OUT_SIZE	120
#define FUSE_COMPAT_ATTR_OUT_SIZE	96
#define FUSE_COMPAT_MKNOD_IN_SIZE	8
#define FUSE_COMPAT_WRITE_IN_SIZE	24
#define FUSE_COMPAT_STATFS_SIZE		48
#define FUSE_COMPAT_SETXATTR_IN_SIZE	8
#define FUSE_COMPAT_INIT_OUT_SIZE	8
#define FUSE_COMPAT_22_INIT_OUT_SIZE	24

/* in_header.unique: bit 63 marks a request resent after NOTIFY_RESEND. */
#define FUSE_UNIQUE_RESEND		(1ULL << 63)
/* in_header.uid/gid when the caller has no mapping under an idmapped mount. */
#define FUSE_INVALID_UIDGID		((uint32_t)-1)

/* ------------------------------------------------------------------ */
/* INIT flags: bits 0..31 travel in flags, bits 32..63 in flags2        */
/* ------------------------------------------------------------------ */

#define FUSE_ASYNC_READ			(1ULL << 0)
#define FUSE_POSIX_LOCKS		(1ULL << 1)
#define FUSE_FILE_OPS			(1ULL << 2)
#define FUSE_ATOMIC_O_TRUNC		(1ULL << 3)
#define FUSE_EXPORT_SUPPORT		(1ULL << 4)
#define FUSE_BIG_WRITES			(1ULL << 5)
#define FUSE_DONT_MASK			(1ULL << 6)
#define FUSE_SPLICE_WRITE		(1ULL << 7)
#define FUSE_SPLICE_MOVE		(1ULL << 8)
#define FUSE_SPLICE_READ		(1ULL << 9)
#define FUSE_FLOCK_LOCKS		(1ULL << 10)
#define FUSE_HAS_IOCTL_DIR		(1ULL << 11)
#define FUSE_AUTO_INVAL_DATA		(1ULL << 12)
#define FUSE_DO_READDIRPLUS		(1ULL << 13)
#define FUSE_READDIRPLUS_AUTO		(1ULL << 14)
#define FUSE_ASYNC_DIO			(1ULL << 15)
#define FUSE_WRITEBACK_CACHE		(1ULL << 16)
#define FUSE_NO_OPEN_SUPPORT		(1ULL << 17)
#define FUSE_PARALLEL_DIROPS		(1ULL << 18)
#define FUSE_HANDLE_KILLPRIV		(1ULL << 19)
#define FUSE_POSIX_ACL			(1ULL << 20)
#define FUSE_ABORT_ERROR		(1ULL << 21)
#define FUSE_MAX_PAGES			(1ULL << 22)
#define FUSE_CACHE_SYMLINKS		(1ULL << 23)
#define FUSE_NO_OPENDIR_SUPPORT		(1ULL << 24)
#define FUSE_EXPLICIT_INVAL_DATA	(1ULL << 25)
#define FUSE_MAP_ALIGNMENT		(1ULL << 26)
#define FUSE_SUBMOUNTS			(1ULL << 27)
#define FUSE_HANDLE_KILLPRIV_V2		(1ULL << 28)
#define FUSE_SETXATTR_EXT		(1ULL << 29)
/* Must be set in the reply, or the kernel ignores init_out.flags2. */
#define FUSE_INIT_EXT			(1ULL << 30)
#define FUSE_INIT_RESERVED		(1ULL << 31)
#define FUSE_SECURITY_CTX		(1ULL << 32)
#define FUSE_HAS_INODE_DAX		(1ULL << 33)
#define FUSE_CREATE_SUPP_GROUP		(1ULL << 34)
#define FUSE_HAS_EXPIRE_ONLY		(1ULL << 35)
#define FUSE_DIRECT_IO_ALLOW_MMAP	(1ULL << 36)
#define FUSE_PASSTHROUGH		(1ULL << 37)
#define FUSE_NO_EXPORT_SUPPORT		(1ULL << 38)
#define FUSE_HAS_RESEND			(1ULL << 39)
#define FUSE_ALLOW_IDMAP		(1ULL << 40)
#define FUSE_OVER_IO_URING		(1ULL << 41)
#define FUSE_REQUEST_TIMEOUT		(1ULL << 42)
/* iomap tree only; offered only when the connection may use iomap. */
#define FUSE_IOMAP			(1ULL << 43)

/* ------------------------------------------------------------------ */
/* Per-request flag words                                              */
/* ------------------------------------------------------------------ */

/* fuse_attr.flags */
#define FUSE_ATTR_SUBMOUNT		(1U << 0)
#define FUSE_ATTR_DAX			(1U << 1)
/* The following are iomap tree only; EXCLUSIVE needs agreed minor >= 99. */
#define FUSE_ATTR_EXCLUSIVE		(1U << 2)
#define FUSE_ATTR_IOMAP			(1U << 3)
#define FUSE_ATTR_ATOMIC		(1U << 4)
#define FUSE_ATTR_SYNC			(1U << 5)
#define FUSE_ATTR_IMMUTABLE		(1U << 6)
#define FUSE_ATTR_APPEND		(1U << 7)

/* fuse_setattr_in.valid */
#define FATTR_MODE			(1U << 0)
#define FATTR_UID			(1U << 1)
#define FATTR_GID			(1U << 2)
#define FATTR_SIZE			(1U << 3)
#define FATTR_ATIME			(1U << 4)
#define FATTR_MTIME			(1U << 5)
#define FATTR_FH			(1U << 6)
#define FATTR_ATIME_NOW			(1U << 7)
#define FATTR_MTIME_NOW			(1U << 8)
#define FATTR_LOCKOWNER			(1U << 9)
#define FATTR_CTIME			(1U << 10)
#define FATTR_KILL_SUIDGID		(1U << 11)

/* fuse_open_out.open_flags */
#define FOPEN_DIRECT_IO			(1U << 0)
#define FOPEN_KEEP_CACHE		(1U << 1)
#define FOPEN_NONSEEKABLE		(1U << 2)
#define FOPEN_CACHE_DIR			(1U << 3)
#define FOPEN_STREAM			(1U << 4)
#define FOPEN_NOFLUSH			(1U << 5)
#define FOPEN_PARALLEL_DIRECT_WRITES	(1U << 6)
#define FOPEN_PASSTHROUGH		(1U << 7)

/* fuse_release_in.release_flags */
#define FUSE_RELEASE_FLUSH		(1U << 0)
#define FUSE_RELEASE_FLOCK_UNLOCK	(1U << 1)

/* fuse_getattr_in.getattr_flags */
#define FUSE_GETATTR_FH			(1U << 0)

/* fuse_lk_in.lk_flags */
#define FUSE_LK_FLOCK			(1U << 0)

/* fuse_write_in.write_flags */
#define FUSE_WRITE_CACHE		(1U << 0)
#define FUSE_WRITE_LOCKOWNER		(1U << 1)
#define FUSE_WRITE_KILL_SUIDGID		(1U << 2)

/* fuse_read_in.read_flags */
#define FUSE_READ_LOCKOWNER		(1U << 1)

/* fuse_fsync_in.fsync_flags */
#define FUSE_FSYNC_FDATASYNC		(1U << 0)

/* fuse_open_in.open_flags */
#define FUSE_OPEN_KILL_SUIDGID		(1U << 0)

/* fuse_setxattr_in.setxattr_flags */
#define FUSE_SETXATTR_ACL_KILL_SGID	(1U << 0)

/* fuse_notify_inval_entry_out.flags */
#define FUSE_EXPIRE_ONLY		(1U << 0)

/* fuse_poll_in.flags */
#define FUSE_POLL_SCHEDULE_NOTIFY	(1U << 0)

/*
 * fuse_ioctl_in.flags / fuse_ioctl_out.flags.  The kernel calls these
 * FUSE_IOCTL_*; libfuse's fuse_common.h defines several of those names
 * itself, so they carry the engine's prefix here.  Same values.
 */
#define FE_IOCTL_COMPAT			(1U << 0)
#define FE_IOCTL_UNRESTRICTED		(1U << 1)
#define FE_IOCTL_RETRY			(1U << 2)
#define FE_IOCTL_32BIT			(1U << 3)
#define FE_IOCTL_DIR			(1U << 4)
#define FE_IOCTL_COMPAT_X32		(1U << 5)
#define FE_IOCTL_MAX_IOV		256

/* ------------------------------------------------------------------ */
/* Opcodes and notification codes                                      */
/* ------------------------------------------------------------------ */

enum fuse_opcode {
	FUSE_LOOKUP		= 1,
	FUSE_FORGET		= 2,	/* no reply */
	FUSE_GETATTR		= 3,
	FUSE_SETATTR		= 4,
	FUSE_READLINK		= 5,
	FUSE_SYMLINK		= 6,
	FUSE_MKNOD		= 8,
	FUSE_MKDIR		= 9,
	FUSE_UNLINK		= 10,
	FUSE_RMDIR		= 11,
	FUSE_RENAME		= 12,
	FUSE_LINK		= 13,
	FUSE_OPEN		= 14,
	FUSE_READ		= 15,
	FUSE_WRITE		= 16,
	FUSE_STATFS		= 17,
	FUSE_RELEASE		= 18,
	FUSE_FSYNC		= 20,
	FUSE_SETXATTR		= 21,
	FUSE_GETXATTR		= 22,
	FUSE_LISTXATTR		= 23,
	FUSE_REMOVEXATTR	= 24,
	FUSE_FLUSH		= 25,
	FUSE_INIT		= 26,
	FUSE_OPENDIR		= 27,
	FUSE_READDIR		= 28,
	FUSE_RELEASEDIR		= 29,
	FUSE_FSYNCDIR		= 30,
	FUSE_GETLK		= 31,
	FUSE_SETLK		= 32,
	FUSE_SETLKW		= 33,
	FUSE_ACCESS		= 34,
	FUSE_CREATE		= 35,
	FUSE_INTERRUPT		= 36,
	FUSE_BMAP		= 37,
	FUSE_DESTROY		= 38,
	FUSE_IOCTL		= 39,
	FUSE_POLL		= 40,
	FUSE_NOTIFY_REPLY	= 41,	/* no reply */
	FUSE_BATCH_FORGET	= 42,	/* no reply */
	FUSE_FALLOCATE		= 43,
	FUSE_READDIRPLUS	= 44,
	FUSE_RENAME2		= 45,
	FUSE_LSEEK		= 46,
	FUSE_COPY_FILE_RANGE	= 47,
	FUSE_SETUPMAPPING	= 48,
	FUSE_REMOVEMAPPING	= 49,
	FUSE_SYNCFS		= 50,
	FUSE_TMPFILE		= 51,
	FUSE_STATX		= 52,
	FUSE_COPY_FILE_RANGE_64	= 53,

	/* iomap tree */
	FUSE_FREEZE_FS		= 4089,
	FUSE_UNFREEZE_FS	= 4090,
	FUSE_SHUTDOWN_FS	= 4091,
	FUSE_IOMAP_CONFIG	= 4092,
	FUSE_IOMAP_IOEND	= 4093,
	FUSE_IOMAP_BEGIN	= 4094,
	FUSE_IOMAP_END		= 4095,

	CUSE_INIT		= 4096,

	/* Byte-swapped INIT opcodes, seen only on an endianness mismatch. */
	CUSE_INIT_BSWAP_RESERVED = 1048576,	/* CUSE_INIT << 8 */
	FUSE_INIT_BSWAP_RESERVED = 436207616,	/* FUSE_INIT << 24 */
};

/* out_header.error of a notification (out_header.unique == 0). */
enum fuse_notify_code {
	FUSE_NOTIFY_POLL		= 1,
	FUSE_NOTIFY_INVAL_INODE		= 2,
	FUSE_NOTIFY_INVAL_ENTRY		= 3,
	FUSE_NOTIFY_STORE		= 4,
	FUSE_NOTIFY_RETRIEVE		= 5,
	FUSE_NOTIFY_DELETE		= 6,
	FUSE_NOTIFY_RESEND		= 7,
	FUSE_NOTIFY_INC_EPOCH		= 8,
	FUSE_NOTIFY_PRUNE		= 9,
	/* iomap tree */
	FUSE_NOTIFY_IOMAP_DEV_INVAL	= 99,
	FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS = 100,
	FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS = 101,
};

/* ------------------------------------------------------------------ */
/* Headers                                                             */
/* ------------------------------------------------------------------ */

struct fuse_in_header {
	uint32_t len;		/* whole request, extensions included */
	uint32_t opcode;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t uid;
	uint32_t gid;
	uint32_t pid;
	uint16_t total_extlen;	/* trailing extensions, in 8-byte units */
	uint16_t padding;
};

struct fuse_out_header {
	uint32_t len;
	int32_t error;		/* -errno, or the notify code when unique == 0 */
	uint64_t unique;
};

/* ------------------------------------------------------------------ */
/* Request extensions (create-type ops)                                */
/* ------------------------------------------------------------------ */

/* fuse_ext_header.type: 0..FUSE_MAX_NR_SECCTX is the security context. */
enum fuse_ext_type {
	FUSE_MAX_NR_SECCTX	= 31,
	FUSE_EXT_GROUPS		= 32,
};

struct fuse_ext_header {
	uint32_t size;		/* includes this header; multiple of 8 */
	uint32_t type;
};

struct fuse_supp_groups {
	uint32_t nr_groups;
	uint32_t groups[];
};

struct fuse_secctx_header {
	uint32_t size;
	uint32_t nr_secctx;
};

/* Followed by name\0 and the context value. */
struct fuse_secctx {
	uint32_t size;
	uint32_t padding;
};

/* ------------------------------------------------------------------ */
/* Attributes                                                          */
/* ------------------------------------------------------------------ */

struct fuse_attr {
	uint64_t ino;
	uint64_t size;
	uint64_t blocks;
	uint64_t atime;
	uint64_t mtime;
	uint64_t ctime;
	uint32_t atimensec;
	uint32_t mtimensec;
	uint32_t ctimensec;
	uint32_t mode;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint32_t rdev;
	uint32_t blksize;
	uint32_t flags;		/* FUSE_ATTR_* */
};

struct fuse_sx_time {
	int64_t tv_sec;
	uint32_t tv_nsec;
	int32_t __reserved;
};

/*
 * Upstream has __spare2[14] from offset 144; the iomap tree gives that
 * space names.  A stock kernel ignores the tail.
 */
struct fuse_statx {
	uint32_t mask;
	uint32_t blksize;
	uint64_t attributes;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint16_t mode;
	uint16_t __spare0[1];
	uint64_t ino;
	uint64_t size;
	uint64_t blocks;
	uint64_t attributes_mask;
	struct fuse_sx_time atime;
	struct fuse_sx_time btime;
	struct fuse_sx_time ctime;
	struct fuse_sx_time mtime;
	uint32_t rdev_major;
	uint32_t rdev_minor;
	uint32_t dev_major;
	uint32_t dev_minor;
	/* iomap tree from here on */
	uint64_t mnt_id;
	uint32_t dio_mem_align;
	uint32_t dio_offset_align;
	uint64_t subvol;
	uint32_t atomic_write_unit_min;
	uint32_t atomic_write_unit_max;
	uint32_t atomic_write_segments_max;
	uint32_t dio_read_offset_align;
	uint32_t atomic_write_unit_max_opt;
	uint32_t __spare2[1];
	uint64_t __spare3[8];
};

struct fuse_kstatfs {
	uint64_t blocks;
	uint64_t bfree;
	uint64_t bavail;
	uint64_t files;
	uint64_t ffree;
	uint32_t bsize;
	uint32_t namelen;
	uint32_t frsize;
	uint32_t padding;
	uint32_t spare[6];
};

struct fuse_file_lock {
	uint64_t start;
	uint64_t end;
	uint32_t type;
	uint32_t pid;		/* tgid */
};

/* ------------------------------------------------------------------ */
/* Request and reply bodies                                            */
/* ------------------------------------------------------------------ */

struct fuse_entry_out {
	uint64_t nodeid;	/* 0 with entry_valid set: negative entry */
	uint64_t generation;
	uint64_t entry_valid;	/* seconds */
	uint64_t attr_valid;	/* seconds */
	uint32_t entry_valid_nsec;
	uint32_t attr_valid_nsec;
	struct fuse_attr attr;
};

struct fuse_forget_in {
	uint64_t nlookup;
};

struct fuse_forget_one {
	uint64_t nodeid;
	uint64_t nlookup;
};

struct fuse_batch_forget_in {
	uint32_t count;
	uint32_t dummy;
};

struct fuse_getattr_in {
	uint32_t getattr_flags;
	uint32_t dummy;
	uint64_t fh;
};

struct fuse_attr_out {
	uint64_t attr_valid;	/* seconds */
	uint32_t attr_valid_nsec;
	uint32_t dummy;
	struct fuse_attr attr;
};

struct fuse_statx_in {
	uint32_t getattr_flags;
	uint32_t reserved;
	uint64_t fh;
	uint32_t sx_flags;
	uint32_t sx_mask;
};

struct fuse_statx_out {
	uint64_t attr_valid;
	uint32_t attr_valid_nsec;
	uint32_t flags;
	uint64_t spare[2];
	struct fuse_statx stat;
};

struct fuse_mknod_in {
	uint32_t mode;
	uint32_t rdev;
	uint32_t umask;
	uint32_t padding;
};

struct fuse_mkdir_in {
	uint32_t mode;
	uint32_t umask;
};

struct fuse_rename_in {
	uint64_t newdir;
};

struct fuse_rename2_in {
	uint64_t newdir;
	uint32_t flags;
	uint32_t padding;
};

struct fuse_link_in {
	uint64_t oldnodeid;
};

struct fuse_setattr_in {
	uint32_t valid;		/* FATTR_* */
	uint32_t padding;
	uint64_t fh;
	uint64_t size;
	uint64_t lock_owner;
	uint64_t atime;
	uint64_t mtime;
	uint64_t ctime;
	uint32_t atimensec;
	uint32_t mtimensec;
	uint32_t ctimensec;
	uint32_t mode;
	uint32_t unused4;
	uint32_t uid;
	uint32_t gid;
	uint32_t unused5;
};

struct fuse_open_in {
	uint32_t flags;
	uint32_t open_flags;	/* FUSE_OPEN_* */
};

struct fuse_create_in {
	uint32_t flags;
	uint32_t mode;
	uint32_t umask;
	uint32_t open_flags;
};

struct fuse_open_out {
	uint64_t fh;
	uint32_t open_flags;	/* FOPEN_* */
	int32_t backing_id;	/* with FOPEN_PASSTHROUGH */
};

struct fuse_release_in {
	uint64_t fh;
	uint32_t flags;
	uint32_t release_flags;
	uint64_t lock_owner;
};

struct fuse_flush_in {
	uint64_t fh;
	uint32_t unused;
	uint32_t padding;
	uint64_t lock_owner;
};

struct fuse_read_in {
	uint64_t fh;
	uint64_t offset;
	uint32_t size;
	uint32_t read_flags;
	uint64_t lock_owner;
	uint32_t flags;
	uint32_t padding;
};

struct fuse_write_in {
	uint64_t fh;
	uint64_t offset;
	uint32_t size;
	uint32_t write_flags;
	uint64_t lock_owner;
	uint32_t flags;
	uint32_t padding;
};

struct fuse_write_out {
	uint32_t size;
	uint32_t padding;
};

struct fuse_statfs_out {
	struct fuse_kstatfs st;
};

struct fuse_fsync_in {
	uint64_t fh;
	uint32_t fsync_flags;
	uint32_t padding;
};

/* Only the first 8 bytes travel unless FUSE_SETXATTR_EXT was agreed. */
struct fuse_setxattr_in {
	uint32_t size;
	uint32_t flags;
	uint32_t setxattr_flags;
	uint32_t padding;
};

struct fuse_getxattr_in {
	uint32_t size;
	uint32_t padding;
};

struct fuse_getxattr_out {
	uint32_t size;
	uint32_t padding;
};

struct fuse_lk_in {
	uint64_t fh;
	uint64_t owner;
	struct fuse_file_lock lk;
	uint32_t lk_flags;
	uint32_t padding;
};

struct fuse_lk_out {
	struct fuse_file_lock lk;
};

struct fuse_access_in {
	uint32_t mask;
	uint32_t padding;
};

struct fuse_init_in {
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;		/* INIT bits 0..31 */
	uint32_t flags2;	/* INIT bits 32..63 */
	uint32_t unused[11];
};

struct fuse_init_out {
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint16_t max_background;
	uint16_t congestion_threshold;
	uint32_t max_write;
	uint32_t time_gran;
	uint16_t max_pages;
	uint16_t map_alignment;
	uint32_t flags2;	/* read only if flags has FUSE_INIT_EXT */
	uint32_t max_stack_depth;
	uint16_t request_timeout;
	uint16_t unused[11];
};

struct fuse_interrupt_in {
	uint64_t unique;
};

struct fuse_bmap_in {
	uint64_t block;
	uint32_t blocksize;
	uint32_t padding;
};

struct fuse_bmap_out {
	uint64_t block;
};

struct fuse_ioctl_in {
	uint64_t fh;
	uint32_t flags;		/* FE_IOCTL_* */
	uint32_t cmd;
	uint64_t arg;
	uint32_t in_size;
	uint32_t out_size;
};

struct fuse_ioctl_iovec {
	uint64_t base;
	uint64_t len;
};

struct fuse_ioctl_out {
	int32_t result;
	uint32_t flags;
	uint32_t in_iovs;
	uint32_t out_iovs;
};

struct fuse_poll_in {
	uint64_t fh;
	uint64_t kh;
	uint32_t flags;
	uint32_t events;
};

struct fuse_poll_out {
	uint32_t revents;
	uint32_t padding;
};

struct fuse_fallocate_in {
	uint64_t fh;
	uint64_t offset;
	uint64_t length;
	uint32_t mode;
	uint32_t padding;
};

struct fuse_lseek_in {
	uint64_t fh;
	uint64_t offset;
	uint32_t whence;
	uint32_t padding;
};

struct fuse_lseek_out {
	uint64_t offset;
};

struct fuse_copy_file_range_in {
	uint64_t fh_in;
	uint64_t off_in;
	uint64_t nodeid_out;
	uint64_t fh_out;
	uint64_t off_out;
	uint64_t len;
	uint64_t flags;
};

struct fuse_copy_file_range_out {
	uint64_t bytes_copied;
};

struct fuse_syncfs_in {
	uint64_t padding;
};

/* ------------------------------------------------------------------ */
/* Directory records                                                   */
/* ------------------------------------------------------------------ */

struct fuse_dirent {
	uint64_t ino;
	uint64_t off;		/* cookie of the next entry */
	uint32_t namelen;
	uint32_t type;		/* DT_* */
	char name[];
};

struct fuse_direntplus {
	struct fuse_entry_out entry_out;
	struct fuse_dirent dirent;
};

/* Records are padded to 8 bytes; the padding must be zero. */
#define FUSE_REC_ALIGN(x) \
	(((x) + sizeof(uint64_t) - 1) & ~(sizeof(uint64_t) - 1))
#define FUSE_DIRENT_ALIGN(x)		FUSE_REC_ALIGN(x)
#define FUSE_NAME_OFFSET		offsetof(struct fuse_dirent, name)
#define FUSE_DIRENT_SIZE(d) \
	FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + (d)->namelen)
#define FUSE_NAME_OFFSET_DIRENTPLUS \
	offsetof(struct fuse_direntplus, dirent.name)
#define FUSE_DIRENTPLUS_SIZE(d) \
	FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + (d)->dirent.namelen)

/* ------------------------------------------------------------------ */
/* Notification bodies (server -> kernel, unique 0)                    */
/* ------------------------------------------------------------------ */

struct fuse_notify_poll_wakeup_out {
	uint64_t kh;
};

struct fuse_notify_inval_inode_out {
	uint64_t ino;
	int64_t off;		/* < 0: attributes only */
	int64_t len;		/* <= 0: to end of file */
};

/* Followed by name and '\0'; total body 16 + namelen + 1. */
struct fuse_notify_inval_entry_out {
	uint64_t parent;
	uint32_t namelen;
	uint32_t flags;		/* FUSE_EXPIRE_ONLY */
};

/* Followed by name and '\0'. */
struct fuse_notify_delete_out {
	uint64_t parent;
	uint64_t child;
	uint32_t namelen;
	uint32_t padding;
};

/* Followed by `size` bytes of data. */
struct fuse_notify_store_out {
	uint64_t nodeid;
	uint64_t offset;
	uint32_t size;
	uint32_t padding;
};

struct fuse_notify_retrieve_out {
	uint64_t notify_unique;
	uint64_t nodeid;
	uint64_t offset;
	uint32_t size;
	uint32_t padding;
};

/* Body of FUSE_NOTIFY_REPLY (kernel -> server); followed by the data. */
struct fuse_notify_retrieve_in {
	uint64_t dummy1;
	uint64_t offset;
	uint32_t size;
	uint32_t dummy2;
	uint64_t dummy3;
	uint64_t dummy4;
};

/* Followed by count node ids (uint64_t). */
struct fuse_notify_prune_out {
	uint32_t count;
	uint32_t padding;
	uint64_t spare;
};

/* ------------------------------------------------------------------ */
/* Backing files and devices (passthrough, iomap)                      */
/* ------------------------------------------------------------------ */

#define FUSE_BACKING_TYPE_PASSTHROUGH	0
#define FUSE_BACKING_TYPE_IOMAP		1	/* iomap tree */
#define FUSE_BACKING_MAX_TYPE		FUSE_BACKING_TYPE_IOMAP
#define FUSE_BACKING_TYPE_MASK		0xFFU

struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;		/* FUSE_BACKING_TYPE_*; 0 on stock kernels */
	uint64_t padding;	/* must be 0 */
};

/* ------------------------------------------------------------------ */
/* iomap (iomap tree only)                                             */
/* ------------------------------------------------------------------ */

/* fuse_iomap_support.flags, from FUSE_DEV_IOC_IOMAP_SUPPORT */
#define FUSE_IOMAP_SUPPORT_FILEIO	(1ULL << 0)
#define FUSE_IOMAP_SUPPORT_ATOMIC	(1ULL << 1)

struct fuse_iomap_support {
	uint64_t flags;
	uint64_t padding;
};

struct fuse_iomap_backing_info {
	uint32_t backing_id;
	uint32_t blocksize;
};

/* fuse_iomap_io.type */
#define FUSE_IOMAP_TYPE_HOLE		0
#define FUSE_IOMAP_TYPE_DELALLOC	1
#define FUSE_IOMAP_TYPE_MAPPED		2
#define FUSE_IOMAP_TYPE_UNWRITTEN	3
#define FUSE_IOMAP_TYPE_INLINE		4
#define FUSE_IOMAP_TYPE_NOCACHE		253	/* upsert only */
#define FUSE_IOMAP_TYPE_RETRY_CACHE	254	/* BEGIN reply only */
#define FUSE_IOMAP_TYPE_PURE_OVERWRITE	255	/* write mapping only */

/* fuse_iomap_io.flags; the kernel accepts bits 0..7 from the server. */
#define FUSE_IOMAP_F_NEW		(1U << 0)
#define FUSE_IOMAP_F_DIRTY		(1U << 1)
#define FUSE_IOMAP_F_SHARED		(1U << 2)
#define FUSE_IOMAP_F_MERGED		(1U << 3)
#define FUSE_IOMAP_F_BOUNDARY		(1U << 4)
#define FUSE_IOMAP_F_ANON_WRITE		(1U << 5)
#define FUSE_IOMAP_F_ATOMIC_BIO		(1U << 6)
#define FUSE_IOMAP_F_WANT_IOMAP_END	(1U << 7)
#define FUSE_IOMAP_F_SIZE_CHANGED	(1U << 8)	/* kernel -> server */
#define FUSE_IOMAP_F_STALE		(1U << 9)	/* kernel -> server */

/* begin_in/end_in.opflags */
#define FUSE_IOMAP_OP_WRITE		(1U << 0)
#define FUSE_IOMAP_OP_ZERO		(1U << 1)
#define FUSE_IOMAP_OP_REPORT		(1U << 2)
#define FUSE_IOMAP_OP_FAULT		(1U << 3)
#define FUSE_IOMAP_OP_DIRECT		(1U << 4)
#define FUSE_IOMAP_OP_NOWAIT		(1U << 5)
#define FUSE_IOMAP_OP_OVERWRITE_ONLY	(1U << 6)
#define FUSE_IOMAP_OP_UNSHARE		(1U << 7)
#define FUSE_IOMAP_OP_DAX		(1U << 8)
#define FUSE_IOMAP_OP_ATOMIC		(1U << 9)
#define FUSE_IOMAP_OP_DONTCACHE		(1U << 10)
#define FUSE_IOMAP_OP_SWAPFILE		(1U << 30)
#define FUSE_IOMAP_OP_WRITEBACK		(1U << 31)

/* fuse_iomap_ioend_in.flags */
#define FUSE_IOMAP_IOEND_SHARED		(1U << 0)
#define FUSE_IOMAP_IOEND_UNWRITTEN	(1U << 1)
#define FUSE_IOMAP_IOEND_BOUNDARY	(1U << 2)
#define FUSE_IOMAP_IOEND_DIRECT		(1U << 3)
#define FUSE_IOMAP_IOEND_APPEND		(1U << 4)
#define FUSE_IOMAP_IOEND_WRITEBACK	(1U << 5)
#define FUSE_IOMAP_IOEND_SWAPOFF	(1U << 6)

#define FUSE_IOMAP_NULL_ADDR		UINT64_MAX	/* no address */
#define FUSE_IOMAP_DEV_NULL		0U		/* no device */
#define FUSE_IOMAP_INVAL_TO_EOF		UINT64_MAX

/* fuse_iomap_config_in/out.flags */
#define FUSE_IOMAP_CONFIG_SID		(1ULL << 0)
#define FUSE_IOMAP_CONFIG_UUID		(1ULL << 1)
#define FUSE_IOMAP_CONFIG_BLOCKSIZE	(1ULL << 2)
#define FUSE_IOMAP_CONFIG_MAX_LINKS	(1ULL << 3)
#define FUSE_IOMAP_CONFIG_TIME		(1ULL << 4)
#define FUSE_IOMAP_CONFIG_MAXBYTES	(1ULL << 5)
#define FUSE_IOMAP_CONFIG_CACHE_MAXBYTES (1ULL << 6)
#define FUSE_IOMAP_CONFIG_ALL		0x7FULL

/* One mapping.  offset/length are block-aligned bytes. */
struct fuse_iomap_io {
	uint64_t offset;
	uint64_t length;
	uint64_t addr;		/* device byte offset or FUSE_IOMAP_NULL_ADDR */
	uint16_t type;		/* FUSE_IOMAP_TYPE_* */
	uint16_t flags;		/* FUSE_IOMAP_F_* */
	uint32_t dev;		/* backing id or FUSE_IOMAP_DEV_NULL */
};

struct fuse_iomap_begin_in {
	uint32_t opflags;
	uint32_t reserved;
	uint64_t attr_ino;
	uint64_t pos;
	uint64_t count;
};

/* Must be replied with exactly this size. */
struct fuse_iomap_begin_out {
	struct fuse_iomap_io read;
	struct fuse_iomap_io write;
};

struct fuse_iomap_end_in {
	uint32_t opflags;
	uint32_t reserved;
	uint64_t attr_ino;
	uint64_t pos;
	uint64_t count;
	int64_t written;
	struct fuse_iomap_io map;
};

struct fuse_iomap_ioend_in {
	uint32_t flags;		/* FUSE_IOMAP_IOEND_* */
	int32_t error;		/* 0 or -errno */
	uint64_t attr_ino;
	uint64_t pos;
	uint64_t new_addr;	/* informational; see the ABI notes */
	uint64_t written;
	uint32_t dev;
	uint32_t pad;
};

/* Must be replied with exactly this size. */
struct fuse_iomap_ioend_out {
	uint64_t newsize;	/* on-disk size after the update */
};

struct fuse_iomap_config_in {
	uint64_t flags;		/* what the kernel accepts */
	int64_t maxbytes;
	uint32_t cache_maxbytes;
	uint32_t zero;
	uint64_t padding[5];
};

/*
 * The kernel accepts a reply shorter than its own struct (it zero-fills the
 * rest) but refuses a longer one.  Revisions of the series before the
 * mapping cache end the struct at s_maxbytes (96 bytes), so a reply that
 * stops there suits every revision; cache_maxbytes needs the full 104.
 */
#define FUSE_IOMAP_CONFIG_OUT_NOCACHE_SIZE	96

struct fuse_iomap_config_out {
	uint64_t flags;		/* which fields are valid */
	char s_id[32];
	char s_uuid[16];
	uint8_t s_uuid_len;
	uint8_t s_pad[3];
	uint32_t s_blocksize;
	uint32_t s_max_links;
	uint32_t s_time_gran;
	int64_t s_time_min;
	int64_t s_time_max;
	int64_t s_maxbytes;
	uint32_t cache_maxbytes;
};

struct fuse_range {
	uint64_t offset;
	uint64_t length;
};

struct fuse_iomap_dev_inval_out {
	uint32_t dev;
	uint32_t reserved;	/* must be 0 */
	struct fuse_range range;
};

struct fuse_iomap_inval_mappings_out {
	uint64_t nodeid;
	uint64_t attr_ino;
	struct fuse_range read;
	struct fuse_range write;
};

struct fuse_iomap_upsert_mappings_out {
	uint64_t nodeid;
	uint64_t attr_ino;
	struct fuse_iomap_io read;
	struct fuse_iomap_io write;
};

struct fuse_freezefs_in {
	uint64_t unlinked;
};

struct fuse_shutdownfs_in {
	uint64_t flags;
};

/* ------------------------------------------------------------------ */
/* /dev/fuse ioctls                                                    */
/* ------------------------------------------------------------------ */

#define FUSE_DEV_IOC_MAGIC		229
#define FUSE_DEV_IOC_CLONE		_IOR(FUSE_DEV_IOC_MAGIC, 0, uint32_t)
#define FUSE_DEV_IOC_BACKING_OPEN \
	_IOW(FUSE_DEV_IOC_MAGIC, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE	_IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#define FUSE_DEV_IOC_SYNC_INIT		_IO(FUSE_DEV_IOC_MAGIC, 3)
/* iomap tree */
#define FUSE_DEV_IOC_IOMAP_SUPPORT \
	_IOR(FUSE_DEV_IOC_MAGIC, 99, struct fuse_iomap_support)
#define FUSE_DEV_IOC_SET_NOFS		_IOW(FUSE_DEV_IOC_MAGIC, 100, uint32_t)
#define FUSE_DEV_IOC_ADD_IOMAP		_IO(FUSE_DEV_IOC_MAGIC, 101)
#define FUSE_DEV_IOC_IOMAP_SET_BLOCKSIZE \
	_IOW(FUSE_DEV_IOC_MAGIC, 102, struct fuse_iomap_backing_info)

/* ------------------------------------------------------------------ */
/* FUSE over io_uring                                                  */
/* ------------------------------------------------------------------ */

#define FUSE_URING_IN_OUT_HEADER_SZ	128
#define FUSE_URING_OP_IN_OUT_SZ		128

struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;	/* the request's unique; echo it on commit */
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

/* Lives in the entry's first iovec. */
struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_HEADER_SZ];	/* in/out header */
	char op_in[FUSE_URING_OP_IN_OUT_SZ];		/* first argument */
	struct fuse_uring_ent_in_out ring_ent_in_out;
};

enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID		= 0,
	FUSE_IO_URING_CMD_REGISTER		= 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH	= 2,
};

/* In sqe->cmd of an IORING_OP_URING_CMD. */
struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

/* ------------------------------------------------------------------ */
/* Layout checks against the reference ABI (LP64 Linux)                */
/* ------------------------------------------------------------------ */

#define FUSE_ABI_SIZE(type, size) \
	_Static_assert(sizeof(struct type) == (size), \
		       "struct " #type " must be " #size " bytes")
#define FUSE_ABI_OFF(type, field, off) \
	_Static_assert(offsetof(struct type, field) == (off), \
		       "struct " #type "." #field " must be at " #off)

FUSE_ABI_SIZE(fuse_in_header, 40);
FUSE_ABI_OFF(fuse_in_header, opcode, 4);
FUSE_ABI_OFF(fuse_in_header, unique, 8);
FUSE_ABI_OFF(fuse_in_header, nodeid, 16);
FUSE_ABI_OFF(fuse_in_header, uid, 24);
FUSE_ABI_OFF(fuse_in_header, gid, 28);
FUSE_ABI_OFF(fuse_in_header, pid, 32);
FUSE_ABI_OFF(fuse_in_header, total_extlen, 36);
FUSE_ABI_SIZE(fuse_out_header, 16);
FUSE_ABI_OFF(fuse_out_header, error, 4);
FUSE_ABI_OFF(fuse_out_header, unique, 8);

FUSE_ABI_SIZE(fuse_ext_header, 8);
FUSE_ABI_SIZE(fuse_supp_groups, 4);
FUSE_ABI_OFF(fuse_supp_groups, groups, 4);
FUSE_ABI_SIZE(fuse_secctx_header, 8);
FUSE_ABI_SIZE(fuse_secctx, 8);

FUSE_ABI_SIZE(fuse_init_in, 64);
FUSE_ABI_OFF(fuse_init_in, max_readahead, 8);
FUSE_ABI_OFF(fuse_init_in, flags, 12);
FUSE_ABI_OFF(fuse_init_in, flags2, 16);
FUSE_ABI_OFF(fuse_init_in, unused, 20);
FUSE_ABI_SIZE(fuse_init_out, 64);
FUSE_ABI_OFF(fuse_init_out, flags, 12);
FUSE_ABI_OFF(fuse_init_out, max_background, 16);
FUSE_ABI_OFF(fuse_init_out, congestion_threshold, 18);
FUSE_ABI_OFF(fuse_init_out, max_write, 20);
FUSE_ABI_OFF(fuse_init_out, time_gran, 24);
FUSE_ABI_OFF(fuse_init_out, max_pages, 28);
FUSE_ABI_OFF(fuse_init_out, map_alignment, 30);
FUSE_ABI_OFF(fuse_init_out, flags2, 32);
FUSE_ABI_OFF(fuse_init_out, max_stack_depth, 36);
FUSE_ABI_OFF(fuse_init_out, request_timeout, 40);
FUSE_ABI_OFF(fuse_init_out, unused, 42);

FUSE_ABI_SIZE(fuse_attr, 88);
FUSE_ABI_OFF(fuse_attr, atime, 24);
FUSE_ABI_OFF(fuse_attr, atimensec, 48);
FUSE_ABI_OFF(fuse_attr, mode, 60);
FUSE_ABI_OFF(fuse_attr, nlink, 64);
FUSE_ABI_OFF(fuse_attr, rdev, 76);
FUSE_ABI_OFF(fuse_attr, blksize, 80);
FUSE_ABI_OFF(fuse_attr, flags, 84);
FUSE_ABI_SIZE(fuse_sx_time, 16);
FUSE_ABI_OFF(fuse_sx_time, tv_nsec, 8);
FUSE_ABI_SIZE(fuse_statx, 256);
FUSE_ABI_OFF(fuse_statx, nlink, 16);
FUSE_ABI_OFF(fuse_statx, mode, 28);
FUSE_ABI_OFF(fuse_statx, ino, 32);
FUSE_ABI_OFF(fuse_statx, attributes_mask, 56);
FUSE_ABI_OFF(fuse_statx, atime, 64);
FUSE_ABI_OFF(fuse_statx, btime, 80);
FUSE_ABI_OFF(fuse_statx, ctime, 96);
FUSE_ABI_OFF(fuse_statx, mtime, 112);
FUSE_ABI_OFF(fuse_statx, rdev_major, 128);
FUSE_ABI_OFF(fuse_statx, dev_minor, 140);
FUSE_ABI_OFF(fuse_statx, mnt_id, 144);
FUSE_ABI_OFF(fuse_statx, dio_mem_align, 152);
FUSE_ABI_OFF(fuse_statx, dio_offset_align, 156);
FUSE_ABI_OFF(fuse_statx, subvol, 160);
FUSE_ABI_OFF(fuse_statx, atomic_write_unit_min, 168);
FUSE_ABI_OFF(fuse_statx, atomic_write_unit_max, 172);
FUSE_ABI_OFF(fuse_statx, atomic_write_segments_max, 176);
FUSE_ABI_OFF(fuse_statx, dio_read_offset_align, 180);
FUSE_ABI_OFF(fuse_statx, atomic_write_unit_max_opt, 184);
FUSE_ABI_OFF(fuse_statx, __spare2, 188);
FUSE_ABI_OFF(fuse_statx, __spare3, 192);
FUSE_ABI_SIZE(fuse_kstatfs, 80);
FUSE_ABI_OFF(fuse_kstatfs, bsize, 40);
FUSE_ABI_OFF(fuse_kstatfs, frsize, 48);
FUSE_ABI_OFF(fuse_kstatfs, spare, 56);
FUSE_ABI_SIZE(fuse_file_lock, 24);
FUSE_ABI_OFF(fuse_file_lock, type, 16);

FUSE_ABI_SIZE(fuse_entry_out, 128);
FUSE_ABI_OFF(fuse_entry_out, entry_valid, 16);
FUSE_ABI_OFF(fuse_entry_out, entry_valid_nsec, 32);
FUSE_ABI_OFF(fuse_entry_out, attr, 40);
FUSE_ABI_SIZE(fuse_forget_in, 8);
FUSE_ABI_SIZE(fuse_forget_one, 16);
FUSE_ABI_SIZE(fuse_batch_forget_in, 8);
FUSE_ABI_SIZE(fuse_getattr_in, 16);
FUSE_ABI_OFF(fuse_getattr_in, fh, 8);
FUSE_ABI_SIZE(fuse_attr_out, 104);
FUSE_ABI_OFF(fuse_attr_out, attr, 16);
FUSE_ABI_SIZE(fuse_statx_in, 24);
FUSE_ABI_OFF(fuse_statx_in, sx_flags, 16);
FUSE_ABI_OFF(fuse_statx_in, sx_mask, 20);
FUSE_ABI_SIZE(fuse_statx_out, 288);
FUSE_ABI_OFF(fuse_statx_out, flags, 12);
FUSE_ABI_OFF(fuse_statx_out, stat, 32);
FUSE_ABI_SIZE(fuse_mknod_in, 16);
FUSE_ABI_OFF(fuse_mknod_in, umask, 8);
FUSE_ABI_SIZE(fuse_mkdir_in, 8);
FUSE_ABI_SIZE(fuse_rename_in, 8);
FUSE_ABI_SIZE(fuse_rename2_in, 16);
FUSE_ABI_OFF(fuse_rename2_in, flags, 8);
FUSE_ABI_SIZE(fuse_link_in, 8);
FUSE_ABI_SIZE(fuse_setattr_in, 88);
FUSE_ABI_OFF(fuse_setattr_in, size, 16);
FUSE_ABI_OFF(fuse_setattr_in, lock_owner, 24);
FUSE_ABI_OFF(fuse_setattr_in, atime, 32);
FUSE_ABI_OFF(fuse_setattr_in, ctime, 48);
FUSE_ABI_OFF(fuse_setattr_in, atimensec, 56);
FUSE_ABI_OFF(fuse_setattr_in, mode, 68);
FUSE_ABI_OFF(fuse_setattr_in, uid, 76);
FUSE_ABI_OFF(fuse_setattr_in, gid, 80);
FUSE_ABI_SIZE(fuse_open_in, 8);
FUSE_ABI_SIZE(fuse_create_in, 16);
FUSE_ABI_OFF(fuse_create_in, open_flags, 12);
FUSE_ABI_SIZE(fuse_open_out, 16);
FUSE_ABI_OFF(fuse_open_out, open_flags, 8);
FUSE_ABI_OFF(fuse_open_out, backing_id, 12);
FUSE_ABI_SIZE(fuse_release_in, 24);
FUSE_ABI_OFF(fuse_release_in, lock_owner, 16);
FUSE_ABI_SIZE(fuse_flush_in, 24);
FUSE_ABI_OFF(fuse_flush_in, lock_owner, 16);
FUSE_ABI_SIZE(fuse_read_in, 40);
FUSE_ABI_OFF(fuse_read_in, size, 16);
FUSE_ABI_OFF(fuse_read_in, lock_owner, 24);
FUSE_ABI_OFF(fuse_read_in, flags, 32);
FUSE_ABI_SIZE(fuse_write_in, 40);
FUSE_ABI_OFF(fuse_write_in, size, 16);
FUSE_ABI_OFF(fuse_write_in, write_flags, 20);
FUSE_ABI_OFF(fuse_write_in, flags, 32);
FUSE_ABI_SIZE(fuse_write_out, 8);
FUSE_ABI_SIZE(fuse_statfs_out, 80);
FUSE_ABI_SIZE(fuse_fsync_in, 16);
FUSE_ABI_SIZE(fuse_setxattr_in, 16);
FUSE_ABI_OFF(fuse_setxattr_in, setxattr_flags, 8);
FUSE_ABI_SIZE(fuse_getxattr_in, 8);
FUSE_ABI_SIZE(fuse_getxattr_out, 8);
FUSE_ABI_SIZE(fuse_lk_in, 48);
FUSE_ABI_OFF(fuse_lk_in, lk, 16);
FUSE_ABI_OFF(fuse_lk_in, lk_flags, 40);
FUSE_ABI_SIZE(fuse_lk_out, 24);
FUSE_ABI_SIZE(fuse_access_in, 8);
FUSE_ABI_SIZE(fuse_interrupt_in, 8);
FUSE_ABI_SIZE(fuse_bmap_in, 16);
FUSE_ABI_OFF(fuse_bmap_in, blocksize, 8);
FUSE_ABI_SIZE(fuse_bmap_out, 8);
FUSE_ABI_SIZE(fuse_ioctl_in, 32);
FUSE_ABI_OFF(fuse_ioctl_in, cmd, 12);
FUSE_ABI_OFF(fuse_ioctl_in, arg, 16);
FUSE_ABI_OFF(fuse_ioctl_in, in_size, 24);
FUSE_ABI_OFF(fuse_ioctl_in, out_size, 28);
FUSE_ABI_SIZE(fuse_ioctl_iovec, 16);
FUSE_ABI_SIZE(fuse_ioctl_out, 16);
FUSE_ABI_OFF(fuse_ioctl_out, out_iovs, 12);
FUSE_ABI_SIZE(fuse_poll_in, 24);
FUSE_ABI_OFF(fuse_poll_in, events, 20);
FUSE_ABI_SIZE(fuse_poll_out, 8);
FUSE_ABI_SIZE(fuse_fallocate_in, 32);
FUSE_ABI_OFF(fuse_fallocate_in, length, 16);
FUSE_ABI_OFF(fuse_fallocate_in, mode, 24);
FUSE_ABI_SIZE(fuse_lseek_in, 24);
FUSE_ABI_OFF(fuse_lseek_in, whence, 16);
FUSE_ABI_SIZE(fuse_lseek_out, 8);
FUSE_ABI_SIZE(fuse_copy_file_range_in, 56);
FUSE_ABI_OFF(fuse_copy_file_range_in, nodeid_out, 16);
FUSE_ABI_OFF(fuse_copy_file_range_in, len, 40);
FUSE_ABI_OFF(fuse_copy_file_range_in, flags, 48);
FUSE_ABI_SIZE(fuse_copy_file_range_out, 8);
FUSE_ABI_SIZE(fuse_syncfs_in, 8);

FUSE_ABI_SIZE(fuse_dirent, 24);
FUSE_ABI_OFF(fuse_dirent, namelen, 16);
FUSE_ABI_OFF(fuse_dirent, type, 20);
FUSE_ABI_OFF(fuse_dirent, name, 24);
FUSE_ABI_SIZE(fuse_direntplus, 152);
FUSE_ABI_OFF(fuse_direntplus, dirent, 128);
_Static_assert(FUSE_NAME_OFFSET == 24, "FUSE_NAME_OFFSET must be 24");
_Static_assert(FUSE_NAME_OFFSET_DIRENTPLUS == 152,
	       "FUSE_NAME_OFFSET_DIRENTPLUS must be 152");

FUSE_ABI_SIZE(fuse_notify_poll_wakeup_out, 8);
FUSE_ABI_SIZE(fuse_notify_inval_inode_out, 24);
FUSE_ABI_SIZE(fuse_notify_inval_entry_out, 16);
FUSE_ABI_OFF(fuse_notify_inval_entry_out, flags, 12);
FUSE_ABI_SIZE(fuse_notify_delete_out, 24);
FUSE_ABI_OFF(fuse_notify_delete_out, namelen, 16);
FUSE_ABI_SIZE(fuse_notify_store_out, 24);
FUSE_ABI_SIZE(fuse_notify_retrieve_out, 32);
FUSE_ABI_OFF(fuse_notify_retrieve_out, size, 24);
FUSE_ABI_SIZE(fuse_notify_retrieve_in, 40);
FUSE_ABI_OFF(fuse_notify_retrieve_in, size, 16);
FUSE_ABI_SIZE(fuse_notify_prune_out, 16);

FUSE_ABI_SIZE(fuse_backing_map, 16);
FUSE_ABI_OFF(fuse_backing_map, flags, 4);
FUSE_ABI_OFF(fuse_backing_map, padding, 8);

FUSE_ABI_SIZE(fuse_iomap_support, 16);
FUSE_ABI_SIZE(fuse_iomap_backing_info, 8);
FUSE_ABI_SIZE(fuse_iomap_io, 32);
FUSE_ABI_OFF(fuse_iomap_io, addr, 16);
FUSE_ABI_OFF(fuse_iomap_io, type, 24);
FUSE_ABI_OFF(fuse_iomap_io, flags, 26);
FUSE_ABI_OFF(fuse_iomap_io, dev, 28);
FUSE_ABI_SIZE(fuse_iomap_begin_in, 32);
FUSE_ABI_OFF(fuse_iomap_begin_in, attr_ino, 8);
FUSE_ABI_OFF(fuse_iomap_begin_in, pos, 16);
FUSE_ABI_OFF(fuse_iomap_begin_in, count, 24);
FUSE_ABI_SIZE(fuse_iomap_begin_out, 64);
FUSE_ABI_OFF(fuse_iomap_begin_out, write, 32);
FUSE_ABI_SIZE(fuse_iomap_end_in, 72);
FUSE_ABI_OFF(fuse_iomap_end_in, written, 32);
FUSE_ABI_OFF(fuse_iomap_end_in, map, 40);
FUSE_ABI_SIZE(fuse_iomap_ioend_in, 48);
FUSE_ABI_OFF(fuse_iomap_ioend_in, error, 4);
FUSE_ABI_OFF(fuse_iomap_ioend_in, pos, 16);
FUSE_ABI_OFF(fuse_iomap_ioend_in, new_addr, 24);
FUSE_ABI_OFF(fuse_iomap_ioend_in, written, 32);
FUSE_ABI_OFF(fuse_iomap_ioend_in, dev, 40);
FUSE_ABI_SIZE(fuse_iomap_ioend_out, 8);
FUSE_ABI_SIZE(fuse_iomap_config_in, 64);
FUSE_ABI_OFF(fuse_iomap_config_in, cache_maxbytes, 16);
FUSE_ABI_OFF(fuse_iomap_config_in, padding, 24);
FUSE_ABI_SIZE(fuse_iomap_config_out, 104);
FUSE_ABI_OFF(fuse_iomap_config_out, s_id, 8);
FUSE_ABI_OFF(fuse_iomap_config_out, s_uuid, 40);
FUSE_ABI_OFF(fuse_iomap_config_out, s_uuid_len, 56);
FUSE_ABI_OFF(fuse_iomap_config_out, s_pad, 57);
FUSE_ABI_OFF(fuse_iomap_config_out, s_blocksize, 60);
FUSE_ABI_OFF(fuse_iomap_config_out, s_max_links, 64);
FUSE_ABI_OFF(fuse_iomap_config_out, s_time_gran, 68);
FUSE_ABI_OFF(fuse_iomap_config_out, s_time_min, 72);
FUSE_ABI_OFF(fuse_iomap_config_out, s_time_max, 80);
FUSE_ABI_OFF(fuse_iomap_config_out, s_maxbytes, 88);
FUSE_ABI_OFF(fuse_iomap_config_out, cache_maxbytes, 96);
_Static_assert(FUSE_IOMAP_CONFIG_OUT_NOCACHE_SIZE ==
	       offsetof(struct fuse_iomap_config_out, cache_maxbytes),
	       "FUSE_IOMAP_CONFIG_OUT_NOCACHE_SIZE must end at s_maxbytes");
FUSE_ABI_SIZE(fuse_range, 16);
FUSE_ABI_SIZE(fuse_iomap_dev_inval_out, 24);
FUSE_ABI_OFF(fuse_iomap_dev_inval_out, range, 8);
FUSE_ABI_SIZE(fuse_iomap_inval_mappings_out, 48);
FUSE_ABI_OFF(fuse_iomap_inval_mappings_out, read, 16);
FUSE_ABI_OFF(fuse_iomap_inval_mappings_out, write, 32);
FUSE_ABI_SIZE(fuse_iomap_upsert_mappings_out, 80);
FUSE_ABI_OFF(fuse_iomap_upsert_mappings_out, read, 16);
FUSE_ABI_OFF(fuse_iomap_upsert_mappings_out, write, 48);
FUSE_ABI_SIZE(fuse_freezefs_in, 8);
FUSE_ABI_SIZE(fuse_shutdownfs_in, 8);

FUSE_ABI_SIZE(fuse_uring_ent_in_out, 32);
FUSE_ABI_OFF(fuse_uring_ent_in_out, commit_id, 8);
FUSE_ABI_OFF(fuse_uring_ent_in_out, payload_sz, 16);
FUSE_ABI_OFF(fuse_uring_ent_in_out, reserved, 24);
FUSE_ABI_SIZE(fuse_uring_req_header, 288);
FUSE_ABI_OFF(fuse_uring_req_header, op_in, 128);
FUSE_ABI_OFF(fuse_uring_req_header, ring_ent_in_out, 256);
FUSE_ABI_SIZE(fuse_uring_cmd_req, 24);
FUSE_ABI_OFF(fuse_uring_cmd_req, qid, 16);
FUSE_ABI_OFF(fuse_uring_cmd_req, padding, 18);

/* The ioctl numbers as the reference kernel computes them. */
_Static_assert(FUSE_DEV_IOC_CLONE == 0x8004E500, "FUSE_DEV_IOC_CLONE");
_Static_assert(FUSE_DEV_IOC_BACKING_OPEN == 0x4010E501,
	       "FUSE_DEV_IOC_BACKING_OPEN");
_Static_assert(FUSE_DEV_IOC_BACKING_CLOSE == 0x4004E502,
	       "FUSE_DEV_IOC_BACKING_CLOSE");
_Static_assert(FUSE_DEV_IOC_SYNC_INIT == 0x0000E503, "FUSE_DEV_IOC_SYNC_INIT");
_Static_assert(FUSE_DEV_IOC_IOMAP_SUPPORT == 0x8010E563,
	       "FUSE_DEV_IOC_IOMAP_SUPPORT");
_Static_assert(FUSE_DEV_IOC_SET_NOFS == 0x4004E564, "FUSE_DEV_IOC_SET_NOFS");
_Static_assert(FUSE_DEV_IOC_ADD_IOMAP == 0x0000E565, "FUSE_DEV_IOC_ADD_IOMAP");
_Static_assert(FUSE_DEV_IOC_IOMAP_SET_BLOCKSIZE == 0x4008E566,
	       "FUSE_DEV_IOC_IOMAP_SET_BLOCKSIZE");

#undef FUSE_ABI_SIZE
#undef FUSE_ABI_OFF

#endif /* FUSE4FS_FUSE_ABI_H */
