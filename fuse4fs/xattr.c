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

	if (!f4_known_namespace(name)) {
		fe_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (f4_is_acl_name(name) && !f4->acl) {
		fe_reply_err(req, EOPNOTSUPP);
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
		fe_reply_err(req, ret);
	else if (size == 0)
		fe_reply_xattr_size(req, (uint32_t)len);
	else if (len > size)
		fe_reply_err(req, ERANGE);
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
		fe_reply_err(req, ret);
	else if (size == 0)
		fe_reply_xattr_size(req, (uint32_t)l.len);
	else if (l.len > size)
		fe_reply_err(req, ERANGE);
	else
		fe_reply_buf(req, l.buf, l.len);
	free(l.buf);
}
