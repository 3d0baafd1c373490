/*
 * fe_toy: a tiny read-only in-memory filesystem served by the FUSE engine,
 * so that the engine can be tested without any ext4 code.
 *
 *   /        directory            (node 1)
 *   /hello   "hello world\n"      (node 2)
 *   /link    symlink -> "hello"   (node 3)
 *
 * Usage: fe_toy [-d] [-i] [-t THREADS] MOUNTPOINT
 *
 * -i adds a trivial iomap mode: the toy asks for FUSE_IOMAP in INIT, probes
 * the channel with FUSE_DEV_IOC_IOMAP_SUPPORT at startup, tries to register
 * a device when IOMAP_CONFIG arrives and answers it with a 4096-byte block
 * size, maps every IOMAP_BEGIN as a hole (write mapping: pure overwrite),
 * answers IOEND with the larger of the file size and pos + written after
 * sending one of each iomap notification, and logs FREEZE_FS, UNFREEZE_FS
 * and SHUTDOWN_FS.  The results of the ioctls and notifications and the
 * arguments of freeze/shutdown are logged to stderr as "fe_toy: ..." lines.
 *
 * MOUNTPOINT may be /dev/fd/N: libfuse then mounts nothing and the engine
 * serves fd N, which may be one end of a SOCK_SEQPACKET socketpair whose
 * other end plays the kernel.  Exit status: 0 when the session ended
 * normally, 1 on usage errors, 32 when mounting failed, 2 otherwise.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuse_engine.h"

#define TOY_HELLO	2
#define TOY_LINK	3
/* Not in the tree; GETATTR of it waits (up to 5 s) to be interrupted, so
 * the tests can interrupt a request in flight. */
#define TOY_SLEEPER	99

static const char hello_data[] = "hello world\n";
static const char link_target[] = "hello";

struct toy_node {
	uint64_t nodeid;
	const char *name;	/* in the root directory */
	uint32_t mode;
	uint32_t nlink;
	uint32_t dtype;
	uint64_t size;
};

static const struct toy_node toy_nodes[] = {
	{ FUSE_ROOT_ID, ".", S_IFDIR | 0755, 2, DT_DIR, 0 },
	{ TOY_HELLO, "hello", S_IFREG | 0444, 1, DT_REG, sizeof(hello_data) - 1 },
	{ TOY_LINK, "link", S_IFLNK | 0777, 1, DT_LNK, sizeof(link_target) - 1 },
};
#define TOY_NNODES (sizeof(toy_nodes) / sizeof(toy_nodes[0]))

/* Fixed timestamps make the attributes checkable by the tests. */
#define TOY_TIME	1700000000ULL

static const struct toy_node *toy_node(uint64_t nodeid)
{
	size_t i;

	for (i = 0; i < TOY_NNODES; i++)
		if (toy_nodes[i].nodeid == nodeid)
			return &toy_nodes[i];
	return NULL;
}

static void toy_attr(const struct toy_node *n, struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = n->nodeid;
	a->size = n->size;
	a->blocks = (n->size + 511) / 512;
	a->atime = a->mtime = a->ctime = TOY_TIME;
	a->mode = n->mode;
	a->nlink = n->nlink;
	a->uid = 0;
	a->gid = 0;
	a->blksize = 4096;
}

static void toy_entry(const struct toy_node *n, struct fuse_entry_out *e)
{
	memset(e, 0, sizeof(*e));
	e->nodeid = n->nodeid;
	e->entry_valid = 1;
	e->attr_valid = 1;
	toy_attr(n, &e->attr);
}

static bool toy_iomap;

static void toy_init(void *fs, struct fe_conn *conn)
{
	(void)fs;
	conn->want = FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS |
		     FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS |
		     FUSE_CACHE_SYMLINKS;
	if (toy_iomap)
		conn->want |= FUSE_IOMAP;
}

static void toy_destroy(void *fs)
{
	(void)fs;
	fprintf(stderr, "fe_toy: destroy\n");
}

static void toy_lookup(struct fe_req *req, uint64_t parent, const char *name)
{
	size_t i;

	if (parent != FUSE_ROOT_ID) {
		fe_reply_err(req, toy_node(parent) ? ENOTDIR : ENOENT);
		return;
	}
	for (i = 1; i < TOY_NNODES; i++) {
		if (strcmp(toy_nodes[i].name, name) == 0) {
			struct fuse_entry_out e;

			toy_entry(&toy_nodes[i], &e);
			fe_reply_entry(req, &e);
			return;
		}
	}
	fe_reply_err(req, ENOENT);
}

static void toy_forget(void *fs, uint64_t nodeid, uint64_t nlookup)
{
	(void)fs;
	(void)nodeid;
	(void)nlookup;
}

static void toy_getattr(struct fe_req *req, uint64_t nodeid,
			const struct fuse_getattr_in *arg)
{
	const struct toy_node *n = toy_node(nodeid);
	struct fuse_attr_out out;

	(void)arg;
	if (nodeid == TOY_SLEEPER) {
		int i;

		bool intr = false;

		/* Another worker sets the flag; read it atomically. */
		for (i = 0; i < 500 && !intr; i++) {
			intr = fe_req_interrupted(req);
			if (!intr)
				usleep(10000);
		}
		fe_reply_err(req, intr ? EINTR : ETIMEDOUT);
		return;
	}
	if (!n) {
		fe_reply_err(req, ENOENT);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.attr_valid = 1;
	toy_attr(n, &out.attr);
	fe_reply_attr(req, &out);
}

static void toy_readlink(struct fe_req *req, uint64_t nodeid)
{
	if (nodeid != TOY_LINK) {
		fe_reply_err(req, EINVAL);
		return;
	}
	fe_reply_buf(req, link_target, sizeof(link_target) - 1);
}

static void toy_open(struct fe_req *req, uint64_t nodeid,
		     const struct fuse_open_in *arg)
{
	struct fuse_open_out out;

	if (nodeid != TOY_HELLO) {
		fe_reply_err(req, toy_node(nodeid) ? EISDIR : ENOENT);
		return;
	}
	if ((arg->flags & O_ACCMODE) != O_RDONLY) {
		fe_reply_err(req, EROFS);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.open_flags = FOPEN_KEEP_CACHE;
	fe_reply_open(req, &out);
}

static void toy_read(struct fe_req *req, uint64_t nodeid,
		     const struct fuse_read_in *arg)
{
	size_t len = sizeof(hello_data) - 1;
	size_t n = 0;

	if (nodeid != TOY_HELLO) {
		fe_reply_err(req, EISDIR);
		return;
	}
	if (arg->offset < len) {
		n = len - arg->offset;
		if (n > arg->size)
			n = arg->size;
	}
	fe_reply_buf(req, hello_data + (n ? arg->offset : 0), n);
}

static void toy_statfs(struct fe_req *req, uint64_t nodeid)
{
	struct fuse_kstatfs st;

	(void)nodeid;
	memset(&st, 0, sizeof(st));
	st.blocks = 1;
	st.files = TOY_NNODES;
	st.bsize = 4096;
	st.frsize = 4096;
	st.namelen = 255;
	fe_reply_statfs(req, &st);
}

static void toy_release(struct fe_req *req, uint64_t nodeid,
			const struct fuse_release_in *arg)
{
	(void)nodeid;
	(void)arg;
	fe_reply_ok(req);
}

static void toy_opendir(struct fe_req *req, uint64_t nodeid,
			const struct fuse_open_in *arg)
{
	struct fuse_open_out out;

	(void)arg;
	if (nodeid != FUSE_ROOT_ID) {
		fe_reply_err(req, toy_node(nodeid) ? ENOTDIR : ENOENT);
		return;
	}
	memset(&out, 0, sizeof(out));
	fe_reply_open(req, &out);
}

/* Directory cookies: entry i of [".", "..", "hello", "link"] has offset i,
 * and each record carries the cookie of the next one. */
static void toy_readdir_common(struct fe_req *req, uint64_t nodeid,
			       const struct fuse_read_in *arg, bool plus)
{
	static const char *const names[] = { ".", "..", "hello", "link" };
	static const uint64_t ids[] = { FUSE_ROOT_ID, FUSE_ROOT_ID, TOY_HELLO,
					TOY_LINK };
	size_t size = arg->size < 65536 ? arg->size : 65536;
	char *buf;
	size_t used = 0;
	uint64_t i;

	if (nodeid != FUSE_ROOT_ID) {
		fe_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fe_reply_err(req, ENOMEM);
		return;
	}
	for (i = arg->offset; i < 4; i++) {
		const struct toy_node *n = toy_node(ids[i]);
		size_t next;

		if (plus) {
			struct fuse_entry_out e;

			/* "." and ".." are not looked up by the kernel. */
			toy_entry(n, &e);
			if (i < 2)
				e.nodeid = 0, e.entry_valid = 0;
			next = fe_add_direntplus(buf, size, used, names[i],
						 strlen(names[i]), &e,
						 n->dtype, i + 1);
		} else {
			next = fe_add_dirent(buf, size, used, names[i],
					     strlen(names[i]), n->nodeid,
					     n->dtype, i + 1);
		}
		if (next == used)
			break;
		used = next;
	}
	fe_reply_buf(req, buf, used);
	free(buf);
}

static void toy_readdir(struct fe_req *req, uint64_t nodeid,
			const struct fuse_read_in *arg)
{
	toy_readdir_common(req, nodeid, arg, false);
}

static void toy_readdirplus(struct fe_req *req, uint64_t nodeid,
			    const struct fuse_read_in *arg)
{
	toy_readdir_common(req, nodeid, arg, true);
}

/* Read-only, but shows what the engine parsed so tests can check the
 * supplementary-group extension. */
static bool toy_debug;

static void toy_mkdir(struct fe_req *req, uint64_t parent, const char *name,
		      const struct fuse_mkdir_in *arg)
{
	uint32_t i;

	(void)arg;
	if (toy_debug) {
		char line[256];
		int len = snprintf(line, sizeof(line), "fe_toy: mkdir %llu/%s groups=",
				   (unsigned long long)parent, name);

		for (i = 0; i < req->ngroups && len > 0 &&
		     (size_t)len < sizeof(line); i++)
			len += snprintf(line + len, sizeof(line) - (size_t)len,
					"%s%u", i ? "," : "", req->groups[i]);
		fprintf(stderr, "%s\n", line);
	}
	fe_reply_err(req, EROFS);
}

/* ---- the iomap mode (-i) ---- */

#define TOY_BLOCK	4096ULL
/* Mappings stay below this, far from any overflow. */
#define TOY_MAXBYTES	(1ULL << 62)

static void toy_iomap_config(struct fe_req *req,
			     const struct fuse_iomap_config_in *arg)
{
	struct fuse_iomap_config_out out;
	int devfd, id;

	/* There is no device; /dev/null stands in for one, so that the call
	 * and its failure (ENOTTY on a socket, ENODEV on an iomap kernel)
	 * can be observed. */
	devfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	id = fe_backing_open_iomap(req->se, devfd);
	fprintf(stderr, "fe_toy: backing_open %d\n", id);
	if (devfd >= 0)
		close(devfd);

	memset(&out, 0, sizeof(out));
	/* Only what the kernel said it understands. */
	out.flags = (FUSE_IOMAP_CONFIG_SID | FUSE_IOMAP_CONFIG_BLOCKSIZE |
		     FUSE_IOMAP_CONFIG_CACHE_MAXBYTES) & arg->flags;
	snprintf(out.s_id, sizeof(out.s_id), "fe_toy");
	out.s_blocksize = TOY_BLOCK;
	out.cache_maxbytes = 65536;
	fe_reply_iomap_config(req, &out);
}

/* The block-aligned range covering [pos, pos + count), at least one block. */
static void toy_hole(struct fuse_iomap_io *m, uint64_t pos, uint64_t count)
{
	uint64_t last = count ? pos + count - 1 : pos;

	if (last < pos || last >= TOY_MAXBYTES)
		last = TOY_MAXBYTES - 1;
	memset(m, 0, sizeof(*m));
	m->offset = pos & ~(TOY_BLOCK - 1);
	m->length = (last | (TOY_BLOCK - 1)) + 1 - m->offset;
	m->addr = FUSE_IOMAP_NULL_ADDR;
	m->type = FUSE_IOMAP_TYPE_HOLE;
	m->dev = FUSE_IOMAP_DEV_NULL;
}

static void toy_pure_overwrite(struct fuse_iomap_io *w,
			       const struct fuse_iomap_io *r)
{
	memset(w, 0, sizeof(*w));
	w->offset = r->offset;
	w->length = r->length;
	w->addr = FUSE_IOMAP_NULL_ADDR;
	w->type = FUSE_IOMAP_TYPE_PURE_OVERWRITE;
	w->dev = FUSE_IOMAP_DEV_NULL;
}

static void toy_iomap_begin(struct fe_req *req, uint64_t nodeid,
			    const struct fuse_iomap_begin_in *arg)
{
	struct fuse_iomap_begin_out out;

	if (nodeid != TOY_HELLO) {
		fe_reply_err(req, toy_node(nodeid) ? EINVAL : ENOENT);
		return;
	}
	if (arg->pos >= TOY_MAXBYTES) {
		fe_reply_err(req, EFBIG);
		return;
	}
	toy_hole(&out.read, arg->pos, arg->count);
	toy_pure_overwrite(&out.write, &out.read);
	fe_reply_iomap_begin(req, &out);
}

static void toy_iomap_end(struct fe_req *req, uint64_t nodeid,
			  const struct fuse_iomap_end_in *arg)
{
	(void)arg;
	if (nodeid != TOY_HELLO) {
		fe_reply_err(req, toy_node(nodeid) ? EINVAL : ENOENT);
		return;
	}
	fe_reply_ok(req);
}

static void toy_iomap_ioend(struct fe_req *req, uint64_t nodeid,
			    const struct fuse_iomap_ioend_in *arg)
{
	uint64_t size = toy_node(TOY_HELLO)->size;
	uint64_t end = arg->pos + arg->written;
	struct fuse_iomap_inval_mappings_out inval;
	struct fuse_iomap_upsert_mappings_out upsert;
	int r1, r2, r3;

	if (nodeid != TOY_HELLO) {
		fe_reply_err(req, toy_node(nodeid) ? EINVAL : ENOENT);
		return;
	}
	if (end < arg->pos)
		end = UINT64_MAX;
	if (arg->error == 0 && end > size)
		size = end;

	/* One of each notification, so the tests can check their bodies. */
	memset(&inval, 0, sizeof(inval));
	inval.nodeid = nodeid;
	inval.attr_ino = arg->attr_ino;
	inval.read.offset = inval.write.offset = arg->pos;
	inval.read.length = inval.write.length = arg->written;
	r1 = fe_notify_iomap_inval(req->se, &inval);
	memset(&upsert, 0, sizeof(upsert));
	upsert.nodeid = nodeid;
	upsert.attr_ino = arg->attr_ino;
	toy_hole(&upsert.read, arg->pos < TOY_MAXBYTES ? arg->pos : 0, 0);
	toy_pure_overwrite(&upsert.write, &upsert.read);
	r2 = fe_notify_iomap_upsert(req->se, &upsert);
	r3 = fe_notify_iomap_dev_inval(req->se, 1, arg->pos, arg->written);
	fprintf(stderr, "fe_toy: ioend notify %d %d %d\n", r1, r2, r3);

	fe_reply_iomap_ioend(req, size);
}

static void toy_freezefs(struct fe_req *req, uint64_t nodeid,
			 const struct fuse_freezefs_in *arg)
{
	fprintf(stderr, "fe_toy: freeze %llu unlinked=%llu\n",
		(unsigned long long)nodeid, (unsigned long long)arg->unlinked);
	fe_reply_ok(req);
}

static void toy_unfreezefs(struct fe_req *req, uint64_t nodeid)
{
	fprintf(stderr, "fe_toy: unfreeze %llu\n", (unsigned long long)nodeid);
	fe_reply_ok(req);
}

static void toy_shutdownfs(struct fe_req *req, uint64_t nodeid,
			   const struct fuse_shutdownfs_in *arg)
{
	fprintf(stderr, "fe_toy: shutdown %llu flags=%llu\n",
		(unsigned long long)nodeid, (unsigned long long)arg->flags);
	fe_reply_ok(req);
}

static struct fe_ops toy_ops = {
	.init = toy_init,
	.destroy = toy_destroy,
	.lookup = toy_lookup,
	.forget = toy_forget,
	.getattr = toy_getattr,
	.readlink = toy_readlink,
	.open = toy_open,
	.read = toy_read,
	.statfs = toy_statfs,
	.release = toy_release,
	.opendir = toy_opendir,
	.readdir = toy_readdir,
	.readdirplus = toy_readdirplus,
	.mkdir = toy_mkdir,
	.releasedir = toy_release,
};

/* Signals are taken synchronously by this thread, because stopping the
 * session is not async-signal-safe. */
static void *toy_signal_thread(void *arg)
{
	struct fe_session *se = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (sigwait(&set, &sig) == 0)
		fe_session_stop(se);
	return NULL;
}

static void usage(FILE *f, const char *prog)
{
	fprintf(f, "usage: %s [-d] [-i] [-t THREADS] MOUNTPOINT\n", prog);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_lowlevel_ops empty_ops;
	struct fe_config cfg = { .nthreads = 1 };
	struct fuse_session *fse = NULL;
	struct fe_session *se = NULL;
	pthread_t sigthread;
	bool have_sigthread = false;
	sigset_t set;
	int opt, ret = 2;

	while ((opt = getopt(argc, argv, "dit:h")) != -1) {
		switch (opt) {
		case 'd':
			cfg.debug = true;
			toy_debug = true;
			break;
		case 'i':
			toy_iomap = true;
			toy_ops.iomap_config = toy_iomap_config;
			toy_ops.iomap_begin = toy_iomap_begin;
			toy_ops.iomap_end = toy_iomap_end;
			toy_ops.iomap_ioend = toy_iomap_ioend;
			toy_ops.freezefs = toy_freezefs;
			toy_ops.unfreezefs = toy_unfreezefs;
			toy_ops.shutdownfs = toy_shutdownfs;
			break;
		case 't': {
			char *end;
			long t = strtol(optarg, &end, 10);

			if (*end || t < 1 || t > 64) {
				usage(stderr, argv[0]);
				return 1;
			}
			cfg.nthreads = (unsigned int)t;
			break;
		}
		case 'h':
			usage(stdout, argv[0]);
			return 0;
		default:
			usage(stderr, argv[0]);
			return 1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr, argv[0]);
		return 1;
	}

	/* Block before any thread exists so every thread inherits it. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	se = fe_session_new(&toy_ops, NULL, &cfg);
	if (!se) {
		fprintf(stderr, "fe_toy: out of memory\n");
		goto out;
	}
	if (pthread_create(&sigthread, NULL, toy_signal_thread, se) == 0)
		have_sigthread = true;

	memset(&empty_ops, 0, sizeof(empty_ops));
	if (fuse_opt_add_arg(&args, argv[0]) ||
	    fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, "ro,fsname=fe_toy,subtype=fe_toy")) {
		fprintf(stderr, "fe_toy: out of memory\n");
		goto out;
	}
	fse = fuse_session_new(&args, &empty_ops, sizeof(empty_ops), NULL);
	if (!fse)
		goto out;
	if (fuse_session_mount(fse, argv[optind]) != 0) {
		ret = 32;
		goto out;
	}

	if (toy_iomap) {
		uint64_t flags = 0;
		int r = fe_iomap_probe(fuse_session_fd(fse), &flags);

		fprintf(stderr, "fe_toy: iomap probe %d flags=%#llx\n", r,
			(unsigned long long)flags);
	}
	ret = fe_session_serve(se, fuse_session_fd(fse)) == 0 ? 0 : 2;
	fuse_session_unmount(fse);
out:
	if (have_sigthread) {
		pthread_cancel(sigthread);
		pthread_join(sigthread, NULL);
	}
	if (fse)
		fuse_session_destroy(fse);
	fuse_opt_free_args(&args);
	fe_session_free(se);
	return ret;
}
