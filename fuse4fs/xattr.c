/*
 * Extended attributes: user.*, trusted.*, security.* and POSIX ACLs.
 *
 * libext2fs converts the ext4 on-disk ACL format to the kernel's
 * system.posix_acl_* xattr format on read.  The inline-data body stored as
 * "system.data" is an implementation detail the kernel never shows, and
 * trusted.* names are listed only for privileged callers, as ext4 does.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuse4fs.h"

#define F4_XATTR_ACL_ACCESS	"system.posix_acl_access"
#define F4_XATTR_ACL_DEFAULT	"system.posix_acl_default"

static bool f4_is_acl_name(const char *name)
{
	return strcmp(name, F4_XATTR_ACL_ACCESS) == 0 ||
	       strcmp(name, F4_XATTR_ACL_DEFAULT) == 0;
}

/* Names ext4 would accept at all: the namespaces it has handlers for. */
static bool f4_known_namespace(const char *name)
{
	return strncmp(name, "user.", 5) == 0 ||
	       strncmp(name, "trusted.", 8) == 0 ||
	       strncmp(name, "security.", 9) == 0 ||
	       f4_is_acl_name(name);
}

/*
 * Whether an xattr request may go on, as ext4 (with the VFS in front of
 * it) decides from the name alone: 0, or the errno to answer.  A bare
 * prefix ("user.") names nothing; the VFS refuses it and over-long names
 * for ext4 before the filesystem sees them, but passes them on to FUSE.
 */
static int f4_xattr_name_check(struct f4fs *f4, const char *name,
			       bool changes)
{
	if (changes && f4->ro)
		return EROFS;
	if (!f4_known_namespace(name) || (f4_is_acl_name(name) && !f4->acl))
		return EOPNOTSUPP;
	if (!strcmp(name, "user.") || !strcmp(name, "trusted.") ||
	    !strcmp(name, "security."))
		return EINVAL;
	if (strlen(name) > 255)
		return ERANGE;
	return 0;
}

static int f4_xattrs_load(struct f4fs *f4, ext2_ino_t ino,
			  struct ext2_xattr_handle **h)
{
	errcode_t err;

	err = ext2fs_xattrs_open(f4->fs, ino, h);
	if (err)
		return f4_errno(err);
	err = ext2fs_xattrs_read(*h);
	if (err) {
		ext2fs_xattrs_close(h);
		return f4_errno(err);
	}
	return 0;
}

void f4_getxattr(struct fe_req *req, uint64_t nodeid, const char *name,
		 uint32_t size)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_xattr_handle *h = NULL;
	struct ext2_inode_large inode;
	void *value = NULL;
	size_t len = 0;
	ext2_ino_t ino;
	errcode_t err;
	int ret;

	ret = f4_xattr_name_check(f4, name, false);
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if (!ext2fs_has_feature_xattr(f4->fs->super)) {
		ret = ENODATA;
		goto out;
	}
	ret = f4_xattrs_load(f4, ino, &h);
	if (ret)
		goto out;
	err = ext2fs_xattr_get(h, name, &value, &len);
	ret = f4_errno(err);
out:
	if (h)
		ext2fs_xattrs_close(&h);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else if (size == 0)
		fe_reply_xattr_size(req, (uint32_t)len);
	else if (len > size)
		f4_reply_err(req, ERANGE);
	else
		fe_reply_buf(req, value, len);
	if (value)
		ext2fs_free_mem(&value);
}

struct f4_xattr_list {
	struct f4fs *f4;
	bool privileged;
	char *buf;
	size_t len;
	size_t cap;
	int err;
};

static int f4_list_one(char *name, char *value, size_t value_len, void *data)
{
	struct f4_xattr_list *l = data;
	size_t n = strlen(name) + 1;

	(void)value;
	(void)value_len;
	if (!f4_known_namespace(name))
		return 0;
	if (strncmp(name, "trusted.", 8) == 0 && !l->privileged)
		return 0;
	if (f4_is_acl_name(name) && !l->f4->acl)
		return 0;
	if (l->len + n > l->cap) {
		size_t cap = (l->cap ? l->cap * 2 : 256) + n;
		char *p = realloc(l->buf, cap);

		if (!p) {
			l->err = ENOMEM;
			return XATTR_ABORT;
		}
		l->buf = p;
		l->cap = cap;
	}
	memcpy(l->buf + l->len, name, n);
	l->len += n;
	return 0;
}

void f4_listxattr(struct fe_req *req, uint64_t nodeid, uint32_t size)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_xattr_list l = { .f4 = f4, .privileged = req->uid == 0 };
	struct ext2_xattr_handle *h = NULL;
	struct ext2_inode_large inode;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret || !ext2fs_has_feature_xattr(f4->fs->super))
		goto out;
	ret = f4_xattrs_load(f4, ino, &h);
	if (ret)
		goto out;
	ret = f4_errno(ext2fs_xattrs_iterate(h, f4_list_one, &l));
	if (ret == 0)
		ret = l.err;
out:
	if (h)
		ext2fs_xattrs_close(&h);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else if (size == 0)
		fe_reply_xattr_size(req, (uint32_t)l.len);
	else if (l.len > size)
		f4_reply_err(req, ERANGE);
	else
		fe_reply_buf(req, l.buf, l.len);
	free(l.buf);
}

/* ---- changing xattrs ---- */

/* The kernel's xattr form of a POSIX ACL (what system.posix_acl_* carry). */
#define F4_ACL_VERSION		2
#define F4_ACL_USER_OBJ		0x01
#define F4_ACL_USER		0x02
#define F4_ACL_GROUP_OBJ	0x04
#define F4_ACL_GROUP		0x08
#define F4_ACL_MASK		0x10
#define F4_ACL_OTHER		0x20

struct f4_acl_entry {
	uint16_t tag;
	uint16_t perm;
	uint32_t id;
} __attribute__((packed));

struct f4_acl {
	size_t count;
	struct f4_acl_entry *e;	/* points into the xattr value */
};

static bool f4_acl_parse(void *value, size_t len, struct f4_acl *acl)
{
	uint32_t version;

	if (len < 4 || (len - 4) % sizeof(struct f4_acl_entry))
		return false;
	memcpy(&version, value, 4);
	if (ext2fs_le32_to_cpu(version) != F4_ACL_VERSION)
		return false;
	acl->count = (len - 4) / sizeof(struct f4_acl_entry);
	acl->e = (struct f4_acl_entry *)((char *)value + 4);
	return true;
}

/*
 * Mask an inherited ACL by the requested mode, as posix_acl_create()
 * does; returns true when the ACL says more than the mode bits can.
 */
static bool f4_acl_create_masq(struct f4_acl *acl, uint32_t *modep)
{
	struct f4_acl_entry *group_obj = NULL, *mask_obj = NULL;
	uint32_t mode = *modep;
	bool not_equiv = false;
	size_t i;

	for (i = 0; i < acl->count; i++) {
		struct f4_acl_entry *pa = &acl->e[i];
		uint16_t perm = ext2fs_le16_to_cpu(pa->perm);

		switch (ext2fs_le16_to_cpu(pa->tag)) {
		case F4_ACL_USER_OBJ:
			perm &= (mode >> 6) | ~0007;
			mode &= ((uint32_t)perm << 6) | ~0700;
			break;
		case F4_ACL_USER:
		case F4_ACL_GROUP:
			not_equiv = true;
			break;
		case F4_ACL_GROUP_OBJ:
			group_obj = pa;
			break;
		case F4_ACL_OTHER:
			perm &= mode | ~0007;
			mode &= perm | ~0007;
			break;
		case F4_ACL_MASK:
			mask_obj = pa;
			not_equiv = true;
			break;
		}
		pa->perm = ext2fs_cpu_to_le16(perm);
	}
	if (mask_obj || group_obj) {
		struct f4_acl_entry *pa = mask_obj ? mask_obj : group_obj;
		uint16_t perm = ext2fs_le16_to_cpu(pa->perm);

		perm &= (mode >> 3) | ~0007;
		mode &= ((uint32_t)perm << 3) | ~0070;
		pa->perm = ext2fs_cpu_to_le16(perm);
	}
	*modep = mode;
	return not_equiv;
}

/* The mode bits an access ACL implies; true when it needs storing. */
static bool f4_acl_equiv_mode(const struct f4_acl *acl, uint16_t *modep)
{
	uint16_t mode = 0, mask = 0;
	bool not_equiv = false, has_mask = false;
	size_t i;

	for (i = 0; i < acl->count; i++) {
		uint16_t perm = ext2fs_le16_to_cpu(acl->e[i].perm) & 7;

		switch (ext2fs_le16_to_cpu(acl->e[i].tag)) {
		case F4_ACL_USER_OBJ:
			mode |= perm << 6;
			break;
		case F4_ACL_GROUP_OBJ:
			mode |= perm << 3;
			break;
		case F4_ACL_OTHER:
			mode |= perm;
			break;
		case F4_ACL_MASK:
			mask = perm;
			has_mask = true;
			not_equiv = true;
			break;
		default:
			not_equiv = true;
			break;
		}
	}
	if (has_mask)
		mode = (mode & ~0070) | (mask << 3);
	*modep = (*modep & ~0777) | mode;
	return not_equiv;
}

static int f4_xattr_store(struct f4fs *f4, ext2_ino_t ino, const char *name,
			  const void *value, size_t len, bool remove)
{
	struct ext2_xattr_handle *h = NULL;
	void *old = NULL;
	size_t oldlen;
	errcode_t err;
	int ret;

	ret = f4_xattrs_load(f4, ino, &h);
	if (ret)
		return ret;
	if (remove) {
		/* Removing a missing name is ENODATA on ext4, except for an
		 * ACL, whose removal just means "no ACL". */
		err = ext2fs_xattr_get(h, name, &old, &oldlen);
		if (old)
			ext2fs_free_mem(&old);
		if (err == EXT2_ET_EA_KEY_NOT_FOUND && f4_is_acl_name(name))
			err = 0;
		else if (!err)
			err = ext2fs_xattr_remove(h, name);
	} else
		err = ext2fs_xattr_set(h, name, value, len);
	ext2fs_xattrs_close(&h);
	return f4_errno(err);
}

/*
 * Give a new inode the ACLs it inherits from its directory's default ACL
 * and its final permission bits: with a default ACL the umask does not
 * apply, as on ext4.  Caller holds the lock; inode has been written.
 */
int f4_acl_inherit(struct f4fs *f4, ext2_ino_t dir, ext2_ino_t ino,
		   struct ext2_inode_large *inode, uint32_t umask)
{
	struct ext2_xattr_handle *h = NULL;
	uint32_t mode = inode->i_mode & 07777;
	void *dflt = NULL, *access = NULL;
	size_t len = 0;
	struct f4_acl acl;
	errcode_t err = EXT2_ET_EA_KEY_NOT_FOUND;
	int ret = 0;

	if (f4->acl && f4_xattrs_load(f4, dir, &h) == 0) {
		err = ext2fs_xattr_get(h, F4_XATTR_ACL_DEFAULT, &dflt, &len);
		ext2fs_xattrs_close(&h);
	}
	if (err || !f4_acl_parse(dflt, len, &acl)) {
		inode->i_mode &= ~(umask & 0777);
		ret = f4_write_inode(f4, ino, inode);
		goto out;
	}
	if (LINUX_S_ISDIR(inode->i_mode)) {
		ret = f4_xattr_store(f4, ino, F4_XATTR_ACL_DEFAULT, dflt, len,
				     false);
		if (ret)
			goto out;
	}
	access = malloc(len);
	if (!access) {
		ret = ENOMEM;
		goto out;
	}
	memcpy(access, dflt, len);
	f4_acl_parse(access, len, &acl);
	if (f4_acl_create_masq(&acl, &mode)) {
		ret = f4_xattr_store(f4, ino, F4_XATTR_ACL_ACCESS, access, len,
				     false);
		if (ret)
			goto out;
	}
	ret = f4_read_inode(f4, ino, inode);
	if (ret)
		goto out;
	inode->i_mode = (uint16_t)((inode->i_mode & ~07777) | (mode & 07777));
	ret = f4_write_inode(f4, ino, inode);
out:
	if (dflt)
		ext2fs_free_mem(&dflt);
	free(access);
	return ret;
}

/* chmod rewrites the access ACL's owner, mask (or group) and other
 * entries, as posix_acl_chmod() does for ext4. */
int f4_acl_chmod(struct f4fs *f4, ext2_ino_t ino, uint16_t mode)
{
	struct ext2_xattr_handle *h = NULL;
	void *value = NULL;
	size_t len = 0, i;
	struct f4_acl acl;
	struct f4_acl_entry *group_obj = NULL, *mask_obj = NULL;
	errcode_t err;
	int ret;

	if (!f4->acl || LINUX_S_ISLNK(mode))
		return 0;
	ret = f4_xattrs_load(f4, ino, &h);
	if (ret)
		return ret;
	err = ext2fs_xattr_get(h, F4_XATTR_ACL_ACCESS, &value, &len);
	ext2fs_xattrs_close(&h);
	if (err == EXT2_ET_EA_KEY_NOT_FOUND)
		return 0;
	if (err)
		return f4_errno(err);
	if (!f4_acl_parse(value, len, &acl)) {
		ret = EUCLEAN;
		goto out;
	}
	for (i = 0; i < acl.count; i++) {
		struct f4_acl_entry *pa = &acl.e[i];

		switch (ext2fs_le16_to_cpu(pa->tag)) {
		case F4_ACL_USER_OBJ:
			pa->perm = ext2fs_cpu_to_le16((mode >> 6) & 7);
			break;
		case F4_ACL_GROUP_OBJ:
			group_obj = pa;
			break;
		case F4_ACL_MASK:
			mask_obj = pa;
			break;
		case F4_ACL_OTHER:
			pa->perm = ext2fs_cpu_to_le16(mode & 7);
			break;
		}
	}
	if (mask_obj || group_obj)
		(mask_obj ? mask_obj : group_obj)->perm =
			ext2fs_cpu_to_le16((mode >> 3) & 7);
	ret = f4_xattr_store(f4, ino, F4_XATTR_ACL_ACCESS, value, len, false);
out:
	ext2fs_free_mem(&value);
	return ret;
}

#define F4_XATTR_CREATE		1
#define F4_XATTR_REPLACE	2

void f4_setxattr(struct fe_req *req, uint64_t nodeid, const char *name,
		 const void *value, uint32_t size, uint32_t flags,
		 uint32_t setxattr_flags)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_xattr_handle *h = NULL;
	struct ext2_inode_large inode;
	void *old = NULL, *copy = NULL;
	size_t oldlen = 0;
	bool exists, acl_access = !strcmp(name, F4_XATTR_ACL_ACCESS);
	bool store = true;
	ext2_ino_t ino;
	errcode_t err;
	int ret;

	ret = f4_xattr_name_check(f4, name, true);
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	if (flags & ~(F4_XATTR_CREATE | F4_XATTR_REPLACE)) {
		f4_reply_err(req, EINVAL);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if (inode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL)) {
		ret = EPERM;
		goto out;
	}
	if (!ext2fs_has_feature_xattr(f4->fs->super)) {
		ret = EOPNOTSUPP;
		goto out;
	}
	ret = f4_xattrs_load(f4, ino, &h);
	if (ret)
		goto out;
	err = ext2fs_xattr_get(h, name, &old, &oldlen);
	exists = err == 0;
	if (err && err != EXT2_ET_EA_KEY_NOT_FOUND) {
		ret = f4_errno(err);
		goto out_close;
	}
	if ((flags & F4_XATTR_CREATE) && exists) {
		ret = EEXIST;
		goto out_close;
	}
	if ((flags & F4_XATTR_REPLACE) && !exists) {
		ret = ENODATA;
		goto out_close;
	}
	if (acl_access) {
		struct f4_acl acl;

		copy = malloc(size ? size : 1);
		if (!copy) {
			ret = ENOMEM;
			goto out_close;
		}
		memcpy(copy, value, size);
		if (!f4_acl_parse(copy, size, &acl)) {
			ret = EINVAL;
			goto out_close;
		}
		/* An ACL the mode bits can express is stored as the mode. */
		store = f4_acl_equiv_mode(&acl, &inode.i_mode);
		if (setxattr_flags & FUSE_SETXATTR_ACL_KILL_SGID)
			inode.i_mode &= ~LINUX_S_ISGID;
	}
	if (store)
		err = ext2fs_xattr_set(h, name, value, size);
	else
		err = exists ? ext2fs_xattr_remove(h, name) : 0;
	ret = f4_errno(err);
out_close:
	ext2fs_xattrs_close(&h);
	if (ret == 0) {
		uint16_t mode = inode.i_mode;

		/* The xattr write may have changed the inode on disk. */
		ret = f4_read_inode(f4, ino, &inode);
		if (ret == 0) {
			inode.i_mode = mode;
			f4_touch(f4, &inode, F4_CTIME, NULL);
			ret = f4_write_inode(f4, ino, &inode);
		}
	}
out:
	f4_unlock(f4);
	if (old)
		ext2fs_free_mem(&old);
	free(copy);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

void f4_removexattr(struct fe_req *req, uint64_t nodeid, const char *name)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	ext2_ino_t ino;
	int ret;

	ret = f4_xattr_name_check(f4, name, true);
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret == 0 && (inode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL)))
		ret = EPERM;
	if (ret == 0)
		ret = f4_xattr_store(f4, ino, name, NULL, 0, true);
	if (ret == 0)
		ret = f4_read_inode(f4, ino, &inode);
	if (ret == 0) {
		f4_touch(f4, &inode, F4_CTIME, NULL);
		ret = f4_write_inode(f4, ino, &inode);
	}
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}
