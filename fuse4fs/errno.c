/*
 * The single translation from libext2fs error codes to errno values, and
 * the recording of filesystem errors found while serving.
 *
 * libext2fs returns either a com_err code from the ext2 table or, for I/O
 * failures in the unix I/O manager, a plain errno.  Corruption of any kind
 * becomes EUCLEAN (the kernel's EFSCORRUPTED) and checksum failures become
 * EBADMSG (the kernel's EFSBADCRC), as the in-kernel ext4 driver reports them.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "fuse4fs.h"

int f4_errno(errcode_t err)
{
	if (err == 0)
		return 0;
	/* Plain errno values from the I/O manager or the C library. */
	if (err > 0 && err < 4096)
		return (int)err;

	switch (err) {
	case EXT2_ET_NO_MEMORY:
	case EXT2_ET_TDB_ERR_OOM:
		return ENOMEM;
	case EXT2_ET_FILE_NOT_FOUND:
	case EXT2_ET_EA_KEY_NOT_FOUND:
		return err == EXT2_ET_FILE_NOT_FOUND ? ENOENT : ENODATA;
	case EXT2_ET_DIR_NO_SPACE:
	case EXT2_ET_BLOCK_ALLOC_FAIL:
	case EXT2_ET_INODE_ALLOC_FAIL:
	case EXT2_ET_EA_NO_SPACE:
	case EXT2_ET_INLINE_DATA_NO_SPACE:
	case EXT2_ET_DIR_NO_SPACE_FOR_CSUM:
	case EXT2_ET_TOO_MANY_INODES:
		return ENOSPC;
	case EXT2_ET_RO_FILSYS:
	case EXT2_ET_FILE_RO:
	case EXT2_ET_TDB_ERR_RDONLY:
		return EROFS;
	case EXT2_ET_FILE_TOO_BIG:
		return EFBIG;
	case EXT2_ET_NO_DIRECTORY:
		return ENOTDIR;
	case EXT2_ET_DIR_EXISTS:
	case EXT2_ET_FILE_EXISTS:
	case EXT2_ET_TDB_ERR_EXISTS:
		return EEXIST;
	case EXT2_ET_TOO_MANY_REFS:
		return EMLINK;
	case EXT2_ET_SYMLINK_LOOP:
		return ELOOP;
	case EXT2_ET_INVALID_ARGUMENT:
	case EXT2_ET_EA_BAD_NAME_LEN:
	case EXT2_ET_TDB_ERR_EINVAL:
		return EINVAL;
	case EXT2_ET_EA_BAD_VALUE_SIZE:
		return E2BIG;
	case EXT2_ET_UNIMPLEMENTED:
	case EXT2_ET_OP_NOT_SUPPORTED:
	case EXT2_ET_EXTENT_NOT_SUPPORTED:
	case EXT2_ET_UNSUPP_FEATURE:
	case EXT2_ET_RO_UNSUPP_FEATURE:
	case EXT2_ET_MISSING_EA_FEATURE:
	case EXT2_ET_EXTERNAL_JOURNAL_NOSUPP:
	case EXT2_ET_INLINE_DATA_CANT_ITERATE:
		return EOPNOTSUPP;
	case EXT2_ET_NO_INLINE_DATA:
		return ENODATA;
	case EXT2_ET_CANCEL_REQUESTED:
		return EINTR;
	case EXT2_ET_MMP_FAILED:
	case EXT2_ET_MMP_FSCK_ON:
	case EXT2_ET_MMP_UNKNOWN_SEQ:
	case EXT2_ET_MMP_CHANGE_ABORT:
	case EXT2_ET_TDB_ERR_LOCK:
	case EXT2_ET_TDB_ERR_NOLOCK:
		return EBUSY;
	case EXT2_ET_INODE_CSUM_INVALID:
	case EXT2_ET_INODE_BITMAP_CSUM_INVALID:
	case EXT2_ET_BLOCK_BITMAP_CSUM_INVALID:
	case EXT2_ET_EXTENT_CSUM_INVALID:
	case EXT2_ET_DIR_CSUM_INVALID:
	case EXT2_ET_EXT_ATTR_CSUM_INVALID:
	case EXT2_ET_SB_CSUM_INVALID:
	case EXT2_ET_MMP_CSUM_INVALID:
	case EXT2_ET_BAD_CRC:
		return EBADMSG;
	case EXT2_ET_SHORT_READ:
	case EXT2_ET_SHORT_WRITE:
	case EXT2_ET_LLSEEK_FAILED:
	case EXT2_ET_TDB_ERR_IO:
	case EXT2_ET_GDESC_READ:
	case EXT2_ET_GDESC_WRITE:
	case EXT2_ET_INODE_BITMAP_WRITE:
	case EXT2_ET_INODE_BITMAP_READ:
	case EXT2_ET_BLOCK_BITMAP_WRITE:
	case EXT2_ET_BLOCK_BITMAP_READ:
	case EXT2_ET_INODE_TABLE_WRITE:
	case EXT2_ET_INODE_TABLE_READ:
		return EIO;
	}

	/* Every other ext2 table code describes on-disk structures that do
	 * not make sense: bad magic numbers, block numbers, extent headers,
	 * directory entries, xattr headers, inodes. */
	if (err >= EXT2_ET_BASE && err <= EXT2_ET_EXTERNAL_JOURNAL_NOSUPP)
		return EUCLEAN;
	return EIO;
}

/* ext4's codes for s_first_error_errcode/s_last_error_errcode. */
#define F4_EXT4_ERR_EFSBADCRC		4
#define F4_EXT4_ERR_EFSCORRUPTED	5

/*
 * Corruption found while serving: log it and, on a writable filesystem,
 * record it in the superblock as the kernel does, so that e2fsck is
 * forced at the next check, then apply the errors= policy.  Caller does
 * not hold the filesystem lock.
 */
void f4_fs_error(struct f4fs *f4, ext2_ino_t ino, int err)
{
	struct ext2_super_block *sb;
	uint32_t now = (uint32_t)time(NULL);
	uint8_t code;

	if (err != EUCLEAN && err != EBADMSG)
		return;
	f4_log("%s: %s in inode %u", f4->opts.device,
	       err == EBADMSG ? "checksum error" : "corruption found", ino);
	if (f4->ro)
		return;
	code = err == EBADMSG ? F4_EXT4_ERR_EFSBADCRC : F4_EXT4_ERR_EFSCORRUPTED;
	f4_lock(f4);
	if (!f4->fs) {
		f4_unlock(f4);
		return;
	}
	sb = f4->fs->super;
	sb->s_state |= EXT2_ERROR_FS;
	sb->s_error_count++;
	if (!sb->s_first_error_time) {
		sb->s_first_error_time = now;
		sb->s_first_error_ino = ino;
		sb->s_first_error_errcode = code;
		snprintf((char *)sb->s_first_error_func,
			 sizeof(sb->s_first_error_func), "fuse4fs");
	}
	sb->s_last_error_time = now;
	sb->s_last_error_ino = ino;
	sb->s_last_error_errcode = code;
	snprintf((char *)sb->s_last_error_func, sizeof(sb->s_last_error_func),
		 "fuse4fs");
	ext2fs_mark_super_dirty(f4->fs);
	f4_unlock(f4);
	f4_flush(f4, true);
	switch (f4->opts.errors ? f4->opts.errors : sb->s_errors) {
	case EXT2_ERRORS_RO:
	case EXT2_ERRORS_PANIC:
		/* A server cannot panic the machine; stopping all writes is
		 * the closest it comes. */
		f4_log("%s: further writes refused (errors=%s)",
		       f4->opts.device, sb->s_errors == EXT2_ERRORS_PANIC ?
		       "panic" : "remount-ro");
		__atomic_store_n(&f4->ro, true, __ATOMIC_RELEASE);
		break;
	default:
		break;
	}
}

/* Answer a request with an error, recording corruption on the way. */
int f4_reply_err(struct fe_req *req, int err)
{
	f4_fs_error(fe_req_fs(req), f4_nodeid_to_ino(req->nodeid), err);
	return fe_reply_err(req, err);
}
