/*
 * The FUSE protocol engine.  See fuse_engine.h for the contract.
 *
 * Structure: fe_session_serve() starts the worker threads and then only
 * supervises them.  Each worker owns one channel fd (its own clone of
 * /dev/fuse where possible) and one request buffer, and handles one request
 * at a time from read() to reply.  Operations therefore answer before they
 * return; a request an operation forgets to answer is answered with EIO so
 * the caller in the kernel is never left hanging.
 */
#define _GNU_SOURCE
#include "fe_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FE_DEFAULT_MAX_WRITE	(1024U * 1024U)
/* Kernels older than this lack fields and flags the engine relies on
 * (7.31 is Linux 5.8). */
#define FE_MIN_KERNEL_MINOR	31
/* How often the supervisor re-sends the wake-up signal while stopping: a
 * signal that lands between the stop check and read() is otherwise lost. */
#define FE_WAKE_INTERVAL_NS	(50 * 1000 * 1000L)

/* ------------------------------------------------------------------ */
/* Opcode table                                                        */
/* ------------------------------------------------------------------ */

enum {
	OPF_NOREPLY	= 1 << 0,	/* the kernel expects no answer */
	OPF_DATA	= 1 << 1,	/* opaque bytes follow the names */
};

struct fe_opdesc {
	const char *name;
	uint16_t argsize;	/* fixed argument struct, 0 if none */
	uint8_t nnames;		/* NUL-terminated strings after it */
	uint8_t flags;
};

static const struct fe_opdesc fe_ops_std[] = {
	[FUSE_LOOKUP]		= { "LOOKUP", 0, 1, 0 },
	[FUSE_FORGET]		= { "FORGET", sizeof(struct fuse_forget_in), 0,
				    OPF_NOREPLY },
	[FUSE_GETATTR]		= { "GETATTR", sizeof(struct fuse_getattr_in), 0, 0 },
	[FUSE_SETATTR]		= { "SETATTR", sizeof(struct fuse_setattr_in), 0, 0 },
	[FUSE_READLINK]		= { "READLINK", 0, 0, 0 },
	[FUSE_SYMLINK]		= { "SYMLINK", 0, 2, 0 },
	[FUSE_MKNOD]		= { "MKNOD", sizeof(struct fuse_mknod_in), 1, 0 },
	[FUSE_MKDIR]		= { "MKDIR", sizeof(struct fuse_mkdir_in), 1, 0 },
	[FUSE_UNLINK]		= { "UNLINK", 0, 1, 0 },
	[FUSE_RMDIR]		= { "RMDIR", 0, 1, 0 },
	[FUSE_RENAME]		= { "RENAME", sizeof(struct fuse_rename_in), 2, 0 },
	[FUSE_LINK]		= { "LINK", sizeof(struct fuse_link_in), 1, 0 },
	[FUSE_OPEN]		= { "OPEN", sizeof(struct fuse_open_in), 0, 0 },
	[FUSE_READ]		= { "READ", sizeof(struct fuse_read_in), 0, 0 },
	[FUSE_WRITE]		= { "WRITE", sizeof(struct fuse_write_in), 0,
				    OPF_DATA },
	[FUSE_STATFS]		= { "STATFS", 0, 0, 0 },
	[FUSE_RELEASE]		= { "RELEASE", sizeof(struct fuse_release_in), 0, 0 },
	[FUSE_FSYNC]		= { "FSYNC", sizeof(struct fuse_fsync_in), 0, 0 },
	/* argsize depends on FUSE_SETXATTR_EXT; see fe_argsize(). */
	[FUSE_SETXATTR]		= { "SETXATTR", sizeof(struct fuse_setxattr_in), 1,
				    OPF_DATA },
	[FUSE_GETXATTR]		= { "GETXATTR", sizeof(struct fuse_getxattr_in), 1, 0 },
	[FUSE_LISTXATTR]	= { "LISTXATTR", sizeof(struct fuse_getxattr_in), 0, 0 },
	[FUSE_REMOVEXATTR]	= { "REMOVEXATTR", 0, 1, 0 },
	[FUSE_FLUSH]		= { "FLUSH", sizeof(struct fuse_flush_in), 0, 0 },
	/* Kernels before 7.36 send only the first 16 bytes of fuse_init_in,
	 * and a future major may send less still: major/minor suffice. */
	[FUSE_INIT]		= { "INIT", 8, 0, OPF_DATA },
	[FUSE_OPENDIR]		= { "OPENDIR", sizeof(struct fuse_open_in), 0, 0 },
	[FUSE_READDIR]		= { "READDIR", sizeof(struct fuse_read_in), 0, 0 },
	[FUSE_RELEASEDIR]	= { "RELEASEDIR", sizeof(struct fuse_release_in), 0, 0 },
	[FUSE_FSYNCDIR]		= { "FSYNCDIR", sizeof(struct fuse_fsync_in), 0, 0 },
	[FUSE_GETLK]		= { "GETLK", sizeof(struct fuse_lk_in), 0, 0 },
	[FUSE_SETLK]		= { "SETLK", sizeof(struct fuse_lk_in), 0, 0 },
	[FUSE_SETLKW]		= { "SETLKW", sizeof(struct fuse_lk_in), 0, 0 },
	[FUSE_ACCESS]		= { "ACCESS", sizeof(struct fuse_access_in), 0, 0 },
	[FUSE_CREATE]		= { "CREATE", sizeof(struct fuse_create_in), 1, 0 },
	[FUSE_INTERRUPT]	= { "INTERRUPT", sizeof(struct fuse_interrupt_in), 0, 0 },
	[FUSE_BMAP]		= { "BMAP", sizeof(struct fuse_bmap_in), 0, 0 },
	[FUSE_DESTROY]		= { "DESTROY", 0, 0, 0 },
	[FUSE_IOCTL]		= { "IOCTL", sizeof(struct fuse_ioctl_in), 0, OPF_DATA },
	[FUSE_POLL]		= { "POLL", sizeof(struct fuse_poll_in), 0, 0 },
	[FUSE_NOTIFY_REPLY]	= { "NOTIFY_REPLY",
				    sizeof(struct fuse_notify_retrieve_in), 0,
				    OPF_NOREPLY | OPF_DATA },
	[FUSE_BATCH_FORGET]	= { "BATCH_FORGET",
				    sizeof(struct fuse_batch_forget_in), 0,
				    OPF_NOREPLY | OPF_DATA },
	[FUSE_FALLOCATE]	= { "FALLOCATE", sizeof(struct fuse_fallocate_in), 0, 0 },
	[FUSE_READDIRPLUS]	= { "READDIRPLUS", sizeof(struct fuse_read_in), 0, 0 },
	[FUSE_RENAME2]		= { "RENAME2", sizeof(struct fuse_rename2_in), 2, 0 },
	[FUSE_LSEEK]		= { "LSEEK", sizeof(struct fuse_lseek_in), 0, 0 },
	[FUSE_COPY_FILE_RANGE]	= { "COPY_FILE_RANGE",
				    sizeof(struct fuse_copy_file_range_in), 0, 0 },
	/* DAX only; the engine does not know their layout and answers ENOSYS. */
	[FUSE_SETUPMAPPING]	= { "SETUPMAPPING", 0, 0, OPF_DATA },
	[FUSE_REMOVEMAPPING]	= { "REMOVEMAPPING", 0, 0, OPF_DATA },
	[FUSE_SYNCFS]		= { "SYNCFS", sizeof(struct fuse_syncfs_in), 0, 0 },
	/* The kernel sends the dentry name, which carries no meaning here. */
	[FUSE_TMPFILE]		= { "TMPFILE", sizeof(struct fuse_create_in), 1, 0 },
	[FUSE_STATX]		= { "STATX", sizeof(struct fuse_statx_in), 0, 0 },
	[FUSE_COPY_FILE_RANGE_64] = { "COPY_FILE_RANGE_64",
				    sizeof(struct fuse_copy_file_range_in), 0, 0 },
};

#define FE_IOMAP_FIRST	FUSE_FREEZE_FS
static const struct fe_opdesc fe_ops_iomap[] = {
	[FUSE_FREEZE_FS - FE_IOMAP_FIRST]	= { "FREEZE_FS",
					sizeof(struct fuse_freezefs_in), 0, 0 },
	[FUSE_UNFREEZE_FS - FE_IOMAP_FIRST]	= { "UNFREEZE_FS", 0, 0, 0 },
	[FUSE_SHUTDOWN_FS - FE_IOMAP_FIRST]	= { "SHUTDOWN_FS",
					sizeof(struct fuse_shutdownfs_in), 0, 0 },
	[FUSE_IOMAP_CONFIG - FE_IOMAP_FIRST]	= { "IOMAP_CONFIG",
					sizeof(struct fuse_iomap_config_in), 0, 0 },
	[FUSE_IOMAP_IOEND - FE_IOMAP_FIRST]	= { "IOMAP_IOEND",
					sizeof(struct fuse_iomap_ioend_in), 0, 0 },
	[FUSE_IOMAP_BEGIN - FE_IOMAP_FIRST]	= { "IOMAP_BEGIN",
					sizeof(struct fuse_iomap_begin_in), 0, 0 },
	[FUSE_IOMAP_END - FE_IOMAP_FIRST]	= { "IOMAP_END",
					sizeof(struct fuse_iomap_end_in), 0, 0 },
	[CUSE_INIT - FE_IOMAP_FIRST]		= { "CUSE_INIT", 0, 0, OPF_DATA },
};

static const struct fe_opdesc *fe_opdesc(uint32_t opcode)
{
	const struct fe_opdesc *d = NULL;

	if (opcode < sizeof(fe_ops_std) / sizeof(fe_ops_std[0]))
		d = &fe_ops_std[opcode];
	else if (opcode >= FE_IOMAP_FIRST &&
		 opcode - FE_IOMAP_FIRST <
		 sizeof(fe_ops_iomap) / sizeof(fe_ops_iomap[0]))
		d = &fe_ops_iomap[opcode - FE_IOMAP_FIRST];
	/* Holes in the tables (opcodes 0, 7, 19) have no name. */
	return d && d->name ? d : NULL;
}

const char *fe_opcode_name(uint32_t opcode)
{
	const struct fe_opdesc *d = fe_opdesc(opcode);

	return d ? d->name : "UNKNOWN";
}

/* ------------------------------------------------------------------ */
/* Session state                                                       */
/* ------------------------------------------------------------------ */

void fe_log(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	/* One fprintf per line keeps lines whole with several workers. */
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", program_invocation_short_name, line);
}

long fe_gettid(void)
{
	return (long)syscall(SYS_gettid);
}

bool fe_stopping(struct fe_session *se)
{
	return __atomic_load_n(&se->stop, __ATOMIC_ACQUIRE);
}

void fe_request_stop(struct fe_session *se, int error)
{
	pthread_mutex_lock(&se->lock);
	if (error && !se->error)
		se->error = error;
	__atomic_store_n(&se->stop, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&se->cond);
	pthread_mutex_unlock(&se->lock);
}

struct fe_session *fe_session_new(const struct fe_ops *ops, void *fs,
				  const struct fe_config *cfg)
{
	struct fe_session *se;
	size_t max_write;

	se = calloc(1, sizeof(*se));
	if (!se)
		return NULL;
	se->ops = ops;
	se->fs = fs;
	se->nthreads = cfg && cfg->nthreads ? cfg->nthreads : 1;
	se->debug = cfg && cfg->debug;
	se->want_uring = cfg && cfg->io_uring;
	max_write = cfg && cfg->max_write ? cfg->max_write : FE_DEFAULT_MAX_WRITE;
	/* The kernel never uses less than 4 KiB, and max_write travels as u32. */
	if (max_write < 4096)
		max_write = 4096;
	if (max_write > UINT32_MAX - 2 * 4096)
		max_write = UINT32_MAX - 2 * 4096;
	se->max_write = (uint32_t)max_write;
	/* The kernel refuses reads smaller than in_header + write_in +
	 * max_write, or than 8 KiB; 4 KiB of headroom covers the headers. */
	se->bufsize = max_write + 4096;
	if (se->bufsize < FUSE_MIN_READ_BUFFER)
		se->bufsize = FUSE_MIN_READ_BUFFER;
	se->fd = -1;
	se->inflight.next = se->inflight.prev = &se->inflight;
	pthread_mutex_init(&se->lock, NULL);
	pthread_cond_init(&se->cond, NULL);
	return se;
}

void fe_session_free(struct fe_session *se)
{
	if (!se)
		return;
	pthread_cond_destroy(&se->cond);
	pthread_mutex_destroy(&se->lock);
	free(se);
}

void fe_session_stop(struct fe_session *se)
{
	fe_request_stop(se, 0);
}

const struct fe_conn *fe_session_conn(const struct fe_session *se)
{
	if (__atomic_load_n(&se->init_state, __ATOMIC_ACQUIRE) != FE_INIT_DONE)
		return NULL;
	return &se->conn;
}

void *fe_req_fs(const struct fe_req *req)
{
	return req->se->fs;
}

bool fe_req_interrupted(const struct fe_req *req)
{
	return __atomic_load_n(&req->interrupted, __ATOMIC_ACQUIRE) != 0;
}

/* ------------------------------------------------------------------ */
/* Tracing of iomap requests and replies (-d)                          */
/* ------------------------------------------------------------------ */

struct fe_flagname {
	uint64_t bit;
	const char *name;
};

#define FE_FLAG(prefix, name) { prefix##name, #name }

static const struct fe_flagname fe_iomap_opflags[] = {
	FE_FLAG(FUSE_IOMAP_OP_, WRITE), FE_FLAG(FUSE_IOMAP_OP_, ZERO),
	FE_FLAG(FUSE_IOMAP_OP_, REPORT), FE_FLAG(FUSE_IOMAP_OP_, FAULT),
	FE_FLAG(FUSE_IOMAP_OP_, DIRECT), FE_FLAG(FUSE_IOMAP_OP_, NOWAIT),
	FE_FLAG(FUSE_IOMAP_OP_, OVERWRITE_ONLY),
	FE_FLAG(FUSE_IOMAP_OP_, UNSHARE), FE_FLAG(FUSE_IOMAP_OP_, DAX),
	FE_FLAG(FUSE_IOMAP_OP_, ATOMIC), FE_FLAG(FUSE_IOMAP_OP_, DONTCACHE),
	FE_FLAG(FUSE_IOMAP_OP_, SWAPFILE), FE_FLAG(FUSE_IOMAP_OP_, WRITEBACK),
	{ 0, NULL },
};

static const struct fe_flagname fe_iomap_mapflags[] = {
	FE_FLAG(FUSE_IOMAP_F_, NEW), FE_FLAG(FUSE_IOMAP_F_, DIRTY),
	FE_FLAG(FUSE_IOMAP_F_, SHARED), FE_FLAG(FUSE_IOMAP_F_, MERGED),
	FE_FLAG(FUSE_IOMAP_F_, BOUNDARY), FE_FLAG(FUSE_IOMAP_F_, ANON_WRITE),
	FE_FLAG(FUSE_IOMAP_F_, ATOMIC_BIO),
	FE_FLAG(FUSE_IOMAP_F_, WANT_IOMAP_END),
	FE_FLAG(FUSE_IOMAP_F_, SIZE_CHANGED), FE_FLAG(FUSE_IOMAP_F_, STALE),
	{ 0, NULL },
};

static const struct fe_flagname fe_iomap_ioendflags[] = {
	FE_FLAG(FUSE_IOMAP_IOEND_, SHARED), FE_FLAG(FUSE_IOMAP_IOEND_, UNWRITTEN),
	FE_FLAG(FUSE_IOMAP_IOEND_, BOUNDARY), FE_FLAG(FUSE_IOMAP_IOEND_, DIRECT),
	FE_FLAG(FUSE_IOMAP_IOEND_, APPEND), FE_FLAG(FUSE_IOMAP_IOEND_, WRITEBACK),
	FE_FLAG(FUSE_IOMAP_IOEND_, SWAPOFF),
	{ 0, NULL },
};

static const struct fe_flagname fe_iomap_configflags[] = {
	FE_FLAG(FUSE_IOMAP_CONFIG_, SID), FE_FLAG(FUSE_IOMAP_CONFIG_, UUID),
	FE_FLAG(FUSE_IOMAP_CONFIG_, BLOCKSIZE),
	FE_FLAG(FUSE_IOMAP_CONFIG_, MAX_LINKS),
	FE_FLAG(FUSE_IOMAP_CONFIG_, TIME), FE_FLAG(FUSE_IOMAP_CONFIG_, MAXBYTES),
	FE_FLAG(FUSE_IOMAP_CONFIG_, CACHE_MAXBYTES),
	{ 0, NULL },
};

/* "0x11(WRITE|DIRECT)"; bits without a name are shown as a number. */
static const char *fe_flag_str(char *buf, size_t size, uint64_t v,
			       const struct fe_flagname *t)
{
	uint64_t rest = v;
	size_t len;
	char sep = '(';

	len = (size_t)snprintf(buf, size, "%#llx", (unsigned long long)v);
	for (; t->name && len < size; t++) {
		if (!(v & t->bit))
			continue;
		rest &= ~t->bit;
		len += (size_t)snprintf(buf + len, size - len, "%c%s", sep,
					t->name);
		sep = '|';
	}
	if (rest && sep == '|' && len < size)
		len += (size_t)snprintf(buf + len, size - len, "|%#llx",
					(unsigned long long)rest);
	if (sep == '|' && len < size)
		snprintf(buf + len, size - len, ")");
	return buf;
}

static const char *fe_iomap_type_name(uint16_t type, char *buf, size_t size)
{
	static const char *const names[] = {
		[FUSE_IOMAP_TYPE_HOLE] = "HOLE",
		[FUSE_IOMAP_TYPE_DELALLOC] = "DELALLOC",
		[FUSE_IOMAP_TYPE_MAPPED] = "MAPPED",
		[FUSE_IOMAP_TYPE_UNWRITTEN] = "UNWRITTEN",
		[FUSE_IOMAP_TYPE_INLINE] = "INLINE",
	};

	if (type < sizeof(names) / sizeof(names[0]))
		return names[type];
	switch (type) {
	case FUSE_IOMAP_TYPE_NOCACHE:
		return "NOCACHE";
	case FUSE_IOMAP_TYPE_RETRY_CACHE:
		return "RETRY_CACHE";
	case FUSE_IOMAP_TYPE_PURE_OVERWRITE:
		return "PURE_OVERWRITE";
	}
	snprintf(buf, size, "%u", type);
	return buf;
}

/* "{offset=0 length=4096 type=MAPPED flags=0 dev=1 addr=1048576}" */
static const char *fe_iomap_io_str(char *buf, size_t size,
				   const struct fuse_iomap_io *m)
{
	char type[8], flags[128], addr[24];

	if (m->addr == FUSE_IOMAP_NULL_ADDR)
		snprintf(addr, sizeof(addr), "null");
	else
		snprintf(addr, sizeof(addr), "%llu",
			 (unsigned long long)m->addr);
	snprintf(buf, size, "{offset=%llu length=%llu type=%s flags=%s dev=%u "
		 "addr=%s}", (unsigned long long)m->offset,
		 (unsigned long long)m->length,
		 fe_iomap_type_name(m->type, type, sizeof(type)),
		 fe_flag_str(flags, sizeof(flags), m->flags, fe_iomap_mapflags),
		 m->dev, addr);
	return buf;
}

static void fe_trace_iomap_config_out(const struct fuse_iomap_config_out *o,
				      size_t len)
{
	char flags[160];

	fprintf(stderr, "fe[%ld]    iomap config flags=%s blocksize=%u "
		"max_links=%u time_gran=%u time=%lld..%lld maxbytes=%lld "
		"cache_maxbytes=%u (%zu bytes)\n", fe_gettid(),
		fe_flag_str(flags, sizeof(flags), o->flags, fe_iomap_configflags),
		o->s_blocksize, o->s_max_links, o->s_time_gran,
		(long long)o->s_time_min, (long long)o->s_time_max,
		(long long)o->s_maxbytes,
		len > offsetof(struct fuse_iomap_config_out, cache_maxbytes) ?
		o->cache_maxbytes : 0, len);
}

/* The arguments of an iomap request, after its length was checked. */
static void fe_trace_iomap_request(uint32_t opcode, const void *arg)
{
	char f[200], m[256];
	long tid = fe_gettid();

	switch (opcode) {
	case FUSE_IOMAP_BEGIN: {
		const struct fuse_iomap_begin_in *b = arg;

		fprintf(stderr, "fe[%ld]    opflags=%s attr_ino=%llu pos=%llu "
			"count=%llu\n", tid,
			fe_flag_str(f, sizeof(f), b->opflags, fe_iomap_opflags),
			(unsigned long long)b->attr_ino,
			(unsigned long long)b->pos,
			(unsigned long long)b->count);
		break;
	}
	case FUSE_IOMAP_END: {
		const struct fuse_iomap_end_in *e = arg;

		fprintf(stderr, "fe[%ld]    opflags=%s attr_ino=%llu pos=%llu "
			"count=%llu written=%lld map=%s\n", tid,
			fe_flag_str(f, sizeof(f), e->opflags, fe_iomap_opflags),
			(unsigned long long)e->attr_ino,
			(unsigned long long)e->pos,
			(unsigned long long)e->count, (long long)e->written,
			fe_iomap_io_str(m, sizeof(m), &e->map));
		break;
	}
	case FUSE_IOMAP_IOEND: {
		const struct fuse_iomap_ioend_in *e = arg;

		fprintf(stderr, "fe[%ld]    flags=%s error=%d attr_ino=%llu "
			"pos=%llu written=%llu dev=%u new_addr=%#llx\n", tid,
			fe_flag_str(f, sizeof(f), e->flags, fe_iomap_ioendflags),
			e->error, (unsigned long long)e->attr_ino,
			(unsigned long long)e->pos,
			(unsigned long long)e->written, e->dev,
			(unsigned long long)e->new_addr);
		break;
	}
	case FUSE_IOMAP_CONFIG: {
		const struct fuse_iomap_config_in *c = arg;

		fprintf(stderr, "fe[%ld]    flags=%s maxbytes=%lld "
			"cache_maxbytes=%u\n", tid,
			fe_flag_str(f, sizeof(f), c->flags, fe_iomap_configflags),
			(long long)c->maxbytes, c->cache_maxbytes);
		break;
	}
	case FUSE_FREEZE_FS: {
		const struct fuse_freezefs_in *fz = arg;

		fprintf(stderr, "fe[%ld]    unlinked=%llu\n", tid,
			(unsigned long long)fz->unlinked);
		break;
	}
	case FUSE_SHUTDOWN_FS: {
		const struct fuse_shutdownfs_in *sd = arg;

		fprintf(stderr, "fe[%ld]    flags=%#llx\n", tid,
			(unsigned long long)sd->flags);
		break;
	}
	default:
		break;
	}
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */
/* ------------------------------------------------------------------ */

/* Write one message (header in iov[0]) in a single call, so that replies
 * from several threads never interleave. */
static int fe_send_msg(struct fe_session *se, int fd, struct iovec *iov,
		       int iovcnt, size_t total)
{
	ssize_t n;

	if (se->is_socket) {
		struct msghdr msg = {
			.msg_iov = iov,
			.msg_iovlen = (size_t)iovcnt,
		};

		/* MSG_NOSIGNAL: a vanished peer is an error, not a SIGPIPE. */
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	} else {
		n = writev(fd, iov, iovcnt);
	}
	if (n < 0)
		return -errno;
	if ((size_t)n != total)
		return -EIO;
	return 0;
}

static void fe_unlist(struct fe_session *se, struct fe_ireq *ir)
{
	pthread_mutex_lock(&se->lock);
	if (ir->listed) {
		ir->prev->next = ir->next;
		ir->next->prev = ir->prev;
		ir->listed = false;
	}
	pthread_mutex_unlock(&se->lock);
}

static void fe_list(struct fe_session *se, struct fe_ireq *ir)
{
	pthread_mutex_lock(&se->lock);
	ir->next = &se->inflight;
	ir->prev = se->inflight.prev;
	ir->prev->next = ir;
	se->inflight.prev = ir;
	ir->listed = true;
	pthread_mutex_unlock(&se->lock);
}

/*
 * Send the reply of `req`: a header with `error` (0 or -errno) followed by
 * the iovecs.  Every fe_reply_* ends here.
 */
static int fe_send_reply(struct fe_req *req, int error,
			 const struct iovec *iov, int iovcnt)
{
	struct fe_ireq *ir = container_of(req, struct fe_ireq, req);
	struct fe_session *se = req->se;
	struct iovec small[8];
	struct iovec *v = small;
	struct fuse_out_header oh;
	size_t total = sizeof(oh);
	int i, ret;

	if (ir->replied) {
		fe_log("request %llu (%s) answered twice; second answer dropped",
		       (unsigned long long)req->unique,
		       fe_opcode_name(req->opcode));
		ret = -EINVAL;
		goto out;
	}
	ir->replied = true;
	/* An interrupt arriving from now on finds nothing to interrupt. */
	fe_unlist(se, ir);

	if (iovcnt < 0 || iovcnt >= IOV_MAX) {
		ret = -EINVAL;
		goto out;
	}
	for (i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (total > UINT32_MAX) {
		ret = -EINVAL;
		goto out;
	}

	if (se->debug) {
		if (error)
			fprintf(stderr, "fe[%ld]    reply unique=%llu error=%d (%s)\n",
				fe_gettid(), (unsigned long long)req->unique,
				error, strerror(-error));
		else
			fprintf(stderr, "fe[%ld]    reply unique=%llu len=%zu\n",
				fe_gettid(), (unsigned long long)req->unique,
				total);
	}

	/* A ring entry takes the arguments as they are; /dev/fuse wants the
	 * header in front of them in one message. */
	if (ir->ring) {
		ret = fe_ring_reply(ir->ring, error, req->unique, iov, iovcnt);
		goto out;
	}
	if ((size_t)iovcnt + 1 > sizeof(small) / sizeof(small[0])) {
		v = calloc((size_t)iovcnt + 1, sizeof(*v));
		if (!v) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (i = 0; i < iovcnt; i++)
		v[i + 1] = iov[i];
	oh.len = (uint32_t)total;
	oh.error = error;
	oh.unique = req->unique;
	v[0].iov_base = &oh;
	v[0].iov_len = sizeof(oh);
	ret = fe_send_msg(se, req->fd, v, iovcnt + 1, total);
	/* ENOENT: the kernel already gave up on the request (interrupted or
	 * aborted).  Nobody is waiting for this answer any more. */
	if (ret == -ENOENT)
		ret = 0;
	else if (ret < 0)
		fe_log("reply to request %llu (%s) failed: %s",
		       (unsigned long long)req->unique,
		       fe_opcode_name(req->opcode), strerror(-ret));
out:
	if (v != small)
		free(v);
	return ret;
}

int fe_reply_err(struct fe_req *req, int err)
{
	if (err <= 0 || err >= 512) {
		fe_log("request %llu (%s): invalid errno %d, answering EIO",
		       (unsigned long long)req->unique,
		       fe_opcode_name(req->opcode), err);
		err = EIO;
	}
	return fe_send_reply(req, -err, NULL, 0);
}

int fe_reply_ok(struct fe_req *req)
{
	return fe_send_reply(req, 0, NULL, 0);
}

int fe_reply_buf(struct fe_req *req, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return fe_send_reply(req, 0, &iov, len ? 1 : 0);
}

void *fe_reply_space(struct fe_req *req, size_t len)
{
	struct fe_ireq *ir = container_of(req, struct fe_ireq, req);

	return ir->ring ? fe_ring_space(ir->ring, len) : NULL;
}

int fe_reply_iov(struct fe_req *req, const struct iovec *iov, int iovcnt)
{
	return fe_send_reply(req, 0, iov, iovcnt);
}

int fe_reply_entry(struct fe_req *req, const struct fuse_entry_out *e)
{
	return fe_reply_buf(req, e, sizeof(*e));
}

int fe_reply_create(struct fe_req *req, const struct fuse_entry_out *e,
		    const struct fuse_open_out *o)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)e, .iov_len = sizeof(*e) },
		{ .iov_base = (void *)o, .iov_len = sizeof(*o) },
	};

	return fe_send_reply(req, 0, iov, 2);
}

int fe_reply_attr(struct fe_req *req, const struct fuse_attr_out *a)
{
	return fe_reply_buf(req, a, sizeof(*a));
}

int fe_reply_open(struct fe_req *req, const struct fuse_open_out *o)
{
	return fe_reply_buf(req, o, sizeof(*o));
}

int fe_reply_write(struct fe_req *req, uint32_t count)
{
	struct fuse_write_out o = { .size = count };

	return fe_reply_buf(req, &o, sizeof(o));
}

int fe_reply_statfs(struct fe_req *req, const struct fuse_kstatfs *st)
{
	return fe_reply_buf(req, st, sizeof(*st));
}

int fe_reply_xattr_size(struct fe_req *req, uint32_t size)
{
	struct fuse_getxattr_out o = { .size = size };

	return fe_reply_buf(req, &o, sizeof(o));
}

int fe_reply_lseek(struct fe_req *req, uint64_t offset)
{
	struct fuse_lseek_out o = { .offset = offset };

	return fe_reply_buf(req, &o, sizeof(o));
}

int fe_reply_statx(struct fe_req *req, const struct fuse_statx_out *sx)
{
	return fe_reply_buf(req, sx, sizeof(*sx));
}

int fe_reply_bmap(struct fe_req *req, uint64_t block)
{
	struct fuse_bmap_out o = { .block = block };

	return fe_reply_buf(req, &o, sizeof(o));
}

/*
 * IOMAP_CONFIG reply size.  The kernel zero-fills a short reply and refuses
 * one longer than its own struct, which is 96 bytes in revisions of the
 * series without the mapping cache and 104 bytes (+ cache_maxbytes) from v7
 * on.  So the engine sends 96 bytes, which every revision takes, unless the
 * filesystem set FUSE_IOMAP_CONFIG_CACHE_MAXBYTES: then it sends all 104.
 * Nothing is lost either way: without the flag the kernel ignores
 * cache_maxbytes, and a kernel that knows the flag (the filesystem should
 * only set flags offered in fuse_iomap_config_in.flags) has the 104-byte
 * struct.
 */
int fe_reply_iomap_config(struct fe_req *req,
			  const struct fuse_iomap_config_out *out)
{
	size_t len = FUSE_IOMAP_CONFIG_OUT_NOCACHE_SIZE;

	if (out->flags & FUSE_IOMAP_CONFIG_CACHE_MAXBYTES)
		len = sizeof(*out);
	if (req->se->debug)
		fe_trace_iomap_config_out(out, len);
	return fe_reply_buf(req, out, len);
}

/* The kernel takes exactly 64 bytes, or fails the I/O with EIO. */
int fe_reply_iomap_begin(struct fe_req *req,
			 const struct fuse_iomap_begin_out *out)
{
	if (req->se->debug) {
		char r[256], w[256];

		fprintf(stderr, "fe[%ld]    iomap read=%s write=%s\n",
			fe_gettid(), fe_iomap_io_str(r, sizeof(r), &out->read),
			fe_iomap_io_str(w, sizeof(w), &out->write));
	}
	return fe_reply_buf(req, out, sizeof(*out));
}

/* Exactly 8 bytes, like BEGIN. */
int fe_reply_iomap_ioend(struct fe_req *req, uint64_t newsize)
{
	struct fuse_iomap_ioend_out o = { .newsize = newsize };

	if (req->se->debug)
		fprintf(stderr, "fe[%ld]    ioend newsize=%llu\n", fe_gettid(),
			(unsigned long long)newsize);
	return fe_reply_buf(req, &o, sizeof(o));
}

/*
 * Answer a request the engine refuses before any operation sees it.  It is
 * not in the in-flight list and carries only the header fields.
 */
static void fe_reject(struct fe_worker *w, const struct fuse_in_header *ih,
		      int err)
{
	struct fe_ireq *ir = &w->ireq;

	memset(ir, 0, sizeof(*ir));
	ir->req.se = w->se;
	ir->req.unique = ih->unique;
	ir->req.opcode = ih->opcode;
	ir->req.nodeid = ih->nodeid;
	ir->req.fd = w->fd;
	ir->ring = w->ring;
	fe_reply_err(&ir->req, err);
}

/* ------------------------------------------------------------------ */
/* Directory records                                                   */
/* ------------------------------------------------------------------ */

size_t fe_add_dirent(char *buf, size_t size, size_t used, const char *name,
		     size_t namelen, uint64_t ino, uint32_t type, uint64_t off)
{
	struct fuse_dirent d;
	size_t reclen = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);

	if (used > size || reclen > size - used || namelen > UINT32_MAX)
		return used;
	d.ino = ino;
	d.off = off;
	d.namelen = (uint32_t)namelen;
	d.type = type;
	/* memcpy: buf need not be aligned for struct access. */
	memcpy(buf + used, &d, FUSE_NAME_OFFSET);
	memcpy(buf + used + FUSE_NAME_OFFSET, name, namelen);
	memset(buf + used + FUSE_NAME_OFFSET + namelen, 0,
	       reclen - FUSE_NAME_OFFSET - namelen);
	return used + reclen;
}

size_t fe_add_direntplus(char *buf, size_t size, size_t used,
			 const char *name, size_t namelen,
			 const struct fuse_entry_out *e, uint32_t type,
			 uint64_t off)
{
	struct fuse_dirent d;
	size_t reclen = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + namelen);
	char *p = buf + used;

	if (used > size || reclen > size - used || namelen > UINT32_MAX)
		return used;
	d.ino = e->attr.ino;
	d.off = off;
	d.namelen = (uint32_t)namelen;
	d.type = type;
	memcpy(p, e, sizeof(*e));
	memcpy(p + offsetof(struct fuse_direntplus, dirent), &d,
	       FUSE_NAME_OFFSET);
	memcpy(p + FUSE_NAME_OFFSET_DIRENTPLUS, name, namelen);
	memset(p + FUSE_NAME_OFFSET_DIRENTPLUS + namelen, 0,
	       reclen - FUSE_NAME_OFFSET_DIRENTPLUS - namelen);
	return used + reclen;
}

/* ------------------------------------------------------------------ */
/* Notifications                                                       */
/* ------------------------------------------------------------------ */

static int fe_notify(struct fe_session *se, int code, struct iovec *iov,
		     int iovcnt)
{
	struct fuse_out_header oh;
	size_t total = sizeof(oh);
	int i, ret;

	/* Before INIT, or outside serve, there is no channel to write to. */
	if (se->fd < 0 || !fe_session_conn(se))
		return -ENOTCONN;
	for (i = 1; i < iovcnt; i++)
		total += iov[i].iov_len;
	oh.len = (uint32_t)total;
	oh.error = code;
	oh.unique = 0;
	iov[0].iov_base = &oh;
	iov[0].iov_len = sizeof(oh);
	ret = fe_send_msg(se, se->fd, iov, iovcnt, total);
	if (se->debug)
		fprintf(stderr, "fe[%ld] notify code=%d len=%zu: %d\n",
			fe_gettid(), code, total, ret);
	return ret;
}

int fe_notify_inval_inode(struct fe_session *se, uint64_t nodeid,
			  int64_t off, int64_t len)
{
	struct fuse_notify_inval_inode_out o = {
		.ino = nodeid, .off = off, .len = len,
	};
	struct iovec iov[2] = { [1] = { .iov_base = &o, .iov_len = sizeof(o) } };

	return fe_notify(se, FUSE_NOTIFY_INVAL_INODE, iov, 2);
}

int fe_notify_inval_entry(struct fe_session *se, uint64_t parent,
			  const char *name, size_t namelen)
{
	struct fuse_notify_inval_entry_out o = {
		.parent = parent, .namelen = (uint32_t)namelen,
	};
	struct iovec iov[4] = {
		[1] = { .iov_base = &o, .iov_len = sizeof(o) },
		[2] = { .iov_base = (void *)name, .iov_len = namelen },
		[3] = { .iov_base = "", .iov_len = 1 },
	};

	if (namelen > UINT32_MAX)
		return -ENAMETOOLONG;
	return fe_notify(se, FUSE_NOTIFY_INVAL_ENTRY, iov, 4);
}

int fe_notify_delete(struct fe_session *se, uint64_t parent, uint64_t child,
		     const char *name, size_t namelen)
{
	struct fuse_notify_delete_out o = {
		.parent = parent, .child = child, .namelen = (uint32_t)namelen,
	};
	struct iovec iov[4] = {
		[1] = { .iov_base = &o, .iov_len = sizeof(o) },
		[2] = { .iov_base = (void *)name, .iov_len = namelen },
		[3] = { .iov_base = "", .iov_len = 1 },
	};

	if (namelen > UINT32_MAX)
		return -ENAMETOOLONG;
	return fe_notify(se, FUSE_NOTIFY_DELETE, iov, 4);
}

/*
 * The iomap notifications.  The kernel insists on the exact body size of
 * each (EINVAL otherwise), refuses them with EINVAL on a connection without
 * iomap, and reports its verdict as the result of the write.
 */
int fe_notify_iomap_dev_inval(struct fe_session *se, uint32_t dev,
			      uint64_t offset, uint64_t length)
{
	struct fuse_iomap_dev_inval_out o = {
		.dev = dev, .reserved = 0,
		.range = { .offset = offset, .length = length },
	};
	struct iovec iov[2] = { [1] = { .iov_base = &o, .iov_len = sizeof(o) } };

	return fe_notify(se, FUSE_NOTIFY_IOMAP_DEV_INVAL, iov, 2);
}

int fe_notify_iomap_upsert(struct fe_session *se,
			   const struct fuse_iomap_upsert_mappings_out *m)
{
	struct iovec iov[2] = {
		[1] = { .iov_base = (void *)m, .iov_len = sizeof(*m) },
	};

	return fe_notify(se, FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS, iov, 2);
}

int fe_notify_iomap_inval(struct fe_session *se,
			  const struct fuse_iomap_inval_mappings_out *m)
{
	struct iovec iov[2] = {
		[1] = { .iov_base = (void *)m, .iov_len = sizeof(*m) },
	};

	return fe_notify(se, FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS, iov, 2);
}

/* ------------------------------------------------------------------ */
/* iomap device ioctls                                                 */
/* ------------------------------------------------------------------ */

int fe_iomap_probe(int fd, uint64_t *flags)
{
	struct fuse_iomap_support s;

	memset(&s, 0, sizeof(s));
	/* A kernel without the extension (and anything that is not
	 * /dev/fuse) answers ENOTTY. */
	if (ioctl(fd, FUSE_DEV_IOC_IOMAP_SUPPORT, &s) < 0)
		return -errno;
	if (flags)
		*flags = s.flags;
	return 0;
}

int fe_backing_open_iomap(struct fe_session *se, int devfd)
{
	struct fuse_backing_map map;
	int id;

	/* Outside serve there is no channel; before INIT the kernel has no
	 * iomap connection to register with (EPERM). */
	if (se->fd < 0 || !fe_session_conn(se))
		return -ENOTCONN;
	memset(&map, 0, sizeof(map));
	map.fd = devfd;
	map.flags = FUSE_BACKING_TYPE_IOMAP;
	map.padding = 0;
	id = ioctl(se->fd, FUSE_DEV_IOC_BACKING_OPEN, &map);
	if (id < 0)
		return -errno;
	/* Ids start at 1; 0 would be FUSE_IOMAP_DEV_NULL in a mapping. */
	if (id == 0)
		return -EPROTO;
	if (se->debug)
		fprintf(stderr, "fe[%ld] iomap device fd %d registered as %d\n",
			fe_gettid(), devfd, id);
	return id;
}

/* ------------------------------------------------------------------ */
/* INIT                                                                */
/* ------------------------------------------------------------------ */

static void fe_do_init(struct fe_worker *w, struct fe_req *req,
		       const void *arg, size_t arglen)
{
	struct fe_session *se = w->se;
	struct fuse_init_in in;
	struct fuse_init_out out;
	struct fe_conn c;
	uint32_t page = (uint32_t)sysconf(_SC_PAGESIZE);
	uint16_t default_pages;
	uint64_t flags;
	int err = 0;

	memset(&in, 0, sizeof(in));
	memcpy(&in, arg, arglen < sizeof(in) ? arglen : sizeof(in));
	memset(&out, 0, sizeof(out));

	pthread_mutex_lock(&se->lock);
	if (se->init_state != FE_INIT_NONE)
		err = EPROTO;
	else
		se->init_state = FE_INIT_BUSY;
	pthread_mutex_unlock(&se->lock);
	if (err) {
		fe_log("second INIT refused");
		fe_reply_err(req, err);
		return;
	}

	if (in.major < FUSE_KERNEL_VERSION) {
		fe_log("kernel protocol %u.%u is too old (need 7.%u)",
		       in.major, in.minor, FE_MIN_KERNEL_MINOR);
		err = EPROTO;
		goto fail;
	}
	if (in.major > FUSE_KERNEL_VERSION) {
		/* The protocol's downgrade dance: tell the kernel which major
		 * we speak; it answers with a new INIT if it can do that. */
		out.major = FUSE_KERNEL_VERSION;
		out.minor = FUSE_KERNEL_MINOR_VERSION;
		pthread_mutex_lock(&se->lock);
		se->init_state = FE_INIT_NONE;
		pthread_mutex_unlock(&se->lock);
		fe_reply_buf(req, &out, sizeof(out));
		return;
	}
	if (in.minor < FE_MIN_KERNEL_MINOR) {
		fe_log("kernel protocol 7.%u is too old (need 7.%u)",
		       in.minor, FE_MIN_KERNEL_MINOR);
		err = EPROTO;
		goto fail;
	}

	memset(&c, 0, sizeof(c));
	c.kernel_major = in.major;
	c.kernel_minor = in.minor;
	c.kernel_flags = in.flags;
	/* flags2 means something only when the kernel says so. */
	if (in.flags & FUSE_INIT_EXT)
		c.kernel_flags |= (uint64_t)in.flags2 << 32;
	/* FUSE_IOMAP belongs to the 7.99 protocol; on any other minor the
	 * bit would be a stray. */
	if (in.minor < FUSE_IOMAP_MINOR_VERSION)
		c.kernel_flags &= ~FUSE_IOMAP;
	c.major = FUSE_KERNEL_VERSION;
	c.minor = in.minor < FUSE_KERNEL_MINOR_VERSION ?
		  in.minor : FUSE_KERNEL_MINOR_VERSION;
	c.max_readahead = in.max_readahead;
	c.max_write = se->max_write;
	default_pages = (uint16_t)((se->max_write + page - 1) / page >
				   UINT16_MAX ? UINT16_MAX :
				   (se->max_write + page - 1) / page);
	c.max_pages = default_pages;
	c.time_gran = 1;

	if (se->ops->init)
		se->ops->init(se->fs, &c);

	/* The transport is the engine's business, not the filesystem's. */
	flags = c.want & c.kernel_flags & ~FUSE_OVER_IO_URING;
	if (c.kernel_flags & FUSE_OVER_IO_URING)
		flags |= FUSE_OVER_IO_URING;
	if (c.kernel_flags & FUSE_INIT_EXT)
		flags |= FUSE_INIT_EXT;
	if (c.kernel_flags & FUSE_MAX_PAGES)
		flags |= FUSE_MAX_PAGES;
	if (!(flags & FUSE_INIT_EXT))
		flags &= UINT32_MAX;
	c.flags = flags;
	/* The kernel stores our minor; iomap (and FUSE_ATTR_EXCLUSIVE)
	 * work only if it is 99. */
	if (flags & FUSE_IOMAP)
		c.minor = FUSE_IOMAP_MINOR_VERSION;

	/* The buffers were sized for se->max_write before INIT; the
	 * filesystem may lower the limit but not raise it. */
	if (c.max_write > se->max_write || c.max_write < 4096) {
		fe_log("max_write %u out of range, using %u", c.max_write,
		       se->max_write);
		c.max_write = se->max_write;
	}
	if (c.max_pages == default_pages || c.max_pages == 0) {
		uint32_t pages = (c.max_write + page - 1) / page;

		c.max_pages = (uint16_t)(pages > UINT16_MAX ? UINT16_MAX : pages);
	}
	if (c.max_readahead > in.max_readahead)
		c.max_readahead = in.max_readahead;
	if ((flags & FUSE_OVER_IO_URING) && !fe_ring_can_serve(se, &c)) {
		flags &= ~FUSE_OVER_IO_URING;
		c.flags = flags;
	}
	if (c.time_gran < 1 || c.time_gran > 1000000000)
		c.time_gran = 1;

	out.major = c.major;
	out.minor = c.minor;
	out.max_readahead = c.max_readahead;
	out.flags = (uint32_t)flags;
	out.flags2 = (uint32_t)(flags >> 32);
	out.max_background = c.max_background;
	out.congestion_threshold = c.congestion_threshold;
	out.max_write = c.max_write;
	out.time_gran = c.time_gran;
	out.max_pages = c.max_pages;

	if (se->debug)
		fprintf(stderr,
			"fe[%ld] INIT kernel %u.%u flags %#llx -> %u.%u flags %#llx "
			"max_write %u max_pages %u\n", fe_gettid(),
			in.major, in.minor, (unsigned long long)c.kernel_flags,
			c.major, c.minor, (unsigned long long)flags,
			c.max_write, c.max_pages);

	/* Publish before replying: the kernel's next request may reach
	 * another worker the moment the reply is written. */
	pthread_mutex_lock(&se->lock);
	se->conn = c;
	__atomic_store_n(&se->init_state, FE_INIT_DONE, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&se->lock);
	fe_reply_buf(req, &out, sizeof(out));
	/* Registering is refused until the kernel has processed the reply,
	 * and on an iomap connection until IOMAP_CONFIG is answered too. */
	if (!(flags & FUSE_OVER_IO_URING))
		fe_ring_set_state(se, FE_RING_OFF);
	else if (!(flags & FUSE_IOMAP))
		fe_ring_set_state(se, FE_RING_GO);
	return;

fail:
	pthread_mutex_lock(&se->lock);
	se->init_state = FE_INIT_NONE;
	pthread_mutex_unlock(&se->lock);
	fe_reply_err(req, err);
}

/* ------------------------------------------------------------------ */
/* Request parsing and dispatch                                        */
/* ------------------------------------------------------------------ */

struct fe_args {
	const void *arg;	/* fixed argument struct */
	const char *name[2];
	const char *data;	/* bytes after arg and names */
	size_t datalen;
};

static size_t fe_argsize(struct fe_session *se, uint32_t opcode,
			 const struct fe_opdesc *d)
{
	const struct fe_conn *c = fe_session_conn(se);

	/* Before INIT nothing was agreed (and the request will be refused). */
	if (opcode == FUSE_SETXATTR && !(c && (c->flags & FUSE_SETXATTR_EXT)))
		return FUSE_COMPAT_SETXATTR_IN_SIZE;
	return d->argsize;
}

/*
 * Extensions sit in the last total_extlen * 8 bytes of the request.  Only
 * supplementary groups are used; other types are skipped.  Returns 0 or a
 * positive errno.
 */
static int fe_parse_ext(struct fe_req *req, const char *ext, size_t len)
{
	while (len > 0) {
		struct fuse_ext_header eh;

		if (len < sizeof(eh))
			return EINVAL;
		memcpy(&eh, ext, sizeof(eh));
		if (eh.size < sizeof(eh) || eh.size > len || eh.size % 8)
			return EINVAL;
		if (eh.type == FUSE_EXT_GROUPS) {
			const struct fuse_supp_groups *sg =
				(const void *)(ext + sizeof(eh));
			size_t room = eh.size - sizeof(eh);

			if (room < sizeof(*sg) ||
			    sg->nr_groups > (room - sizeof(*sg)) / sizeof(uint32_t))
				return EINVAL;
			req->ngroups = sg->nr_groups;
			req->groups = sg->groups;
		}
		ext += eh.size;
		len -= eh.size;
	}
	return 0;
}

/*
 * Check a request's body against its opcode and locate its parts.  `body`
 * is the part after the in_header and before any extensions.  Returns 0 or
 * a positive errno.
 */
static int fe_parse_args(struct fe_session *se, const struct fuse_in_header *ih,
			 const struct fe_opdesc *d, const char *body,
			 size_t len, struct fe_args *a)
{
	size_t argsize = fe_argsize(se, ih->opcode, d);
	const char *p, *end = body + len;
	unsigned int i;

	memset(a, 0, sizeof(*a));
	if (len < argsize)
		return EINVAL;
	a->arg = argsize ? body : NULL;
	p = body + argsize;
	for (i = 0; i < d->nnames; i++) {
		const char *nul = memchr(p, '\0', (size_t)(end - p));

		if (!nul)
			return EINVAL;
		a->name[i] = p;
		p = nul + 1;
	}
	a->data = p;
	a->datalen = (size_t)(end - p);

	switch (ih->opcode) {
	case FUSE_WRITE: {
		const struct fuse_write_in *wi = a->arg;

		if (wi->size > a->datalen)
			return EINVAL;
		break;
	}
	case FUSE_SETXATTR: {
		const struct fuse_setxattr_in *si = a->arg;

		if (si->size > a->datalen)
			return EINVAL;
		break;
	}
	case FUSE_IOCTL: {
		const struct fuse_ioctl_in *ii = a->arg;

		if (ii->in_size > a->datalen)
			return EINVAL;
		break;
	}
	case FUSE_BATCH_FORGET: {
		const struct fuse_batch_forget_in *bf = a->arg;

		if (bf->count > a->datalen / sizeof(struct fuse_forget_one))
			return EINVAL;
		break;
	}
	default:
		break;
	}
	return 0;
}

/* Both FORGET flavours: never answered, whatever happens. */
static void fe_do_forget(struct fe_session *se, const struct fuse_in_header *ih,
			 const struct fe_args *a)
{
	void (*forget)(void *, uint64_t, uint64_t) = se->ops->forget;

	if (ih->opcode == FUSE_FORGET) {
		const struct fuse_forget_in *fi = a->arg;

		if (forget)
			forget(se->fs, ih->nodeid, fi->nlookup);
	} else {
		const struct fuse_batch_forget_in *bf = a->arg;
		uint32_t i;

		for (i = 0; forget && i < bf->count; i++) {
			struct fuse_forget_one one;

			memcpy(&one, a->data + i * sizeof(one), sizeof(one));
			forget(se->fs, one.nodeid, one.nlookup);
		}
	}
}

static void fe_do_interrupt(struct fe_worker *w, struct fe_req *req,
			    const struct fuse_interrupt_in *ii)
{
	struct fe_session *se = w->se;
	struct fe_ireq *ir;
	bool found = false;

	pthread_mutex_lock(&se->lock);
	for (ir = se->inflight.next; ir != &se->inflight; ir = ir->next) {
		if (ir->req.unique == ii->unique) {
			/* Atomic: the operation polls the flag without a lock. */
			__atomic_store_n(&ir->req.interrupted, 1, __ATOMIC_RELEASE);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&se->lock);
	/* Not (yet) here: the victim may still be on its way to another
	 * worker.  EAGAIN makes the kernel send the interrupt again later;
	 * once the victim is answered the kernel stops asking. */
	if (!found)
		fe_reply_err(req, EAGAIN);
}

static void fe_do_destroy(struct fe_session *se, struct fe_req *req)
{
	bool call;

	pthread_mutex_lock(&se->lock);
	call = !se->destroyed;
	__atomic_store_n(&se->destroyed, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&se->lock);
	if (call && se->ops->destroy)
		se->ops->destroy(se->fs);
	fe_reply_ok(req);
	/* After DESTROY the kernel sends nothing more. */
	fe_request_stop(se, 0);
}

static bool fe_is_iomap_opcode(uint32_t opcode)
{
	return opcode >= FUSE_FREEZE_FS && opcode <= FUSE_IOMAP_END;
}

/* Whether FUSE_IOMAP was agreed in INIT. */
static bool fe_iomap_agreed(struct fe_session *se)
{
	const struct fe_conn *c = fe_session_conn(se);

	return c && (c->flags & FUSE_IOMAP);
}

/* Call the operation for a checked request.  Returns false if there is no
 * operation for it. */
static bool fe_call_op(struct fe_session *se, struct fe_req *req,
		       const struct fe_args *a)
{
	const struct fe_ops *o = se->ops;
	uint64_t n = req->nodeid;

	/* Only an iomap connection carries the iomap tree's opcodes; from any
	 * other peer they are refused before the filesystem sees them. */
	if (fe_is_iomap_opcode(req->opcode) && !fe_iomap_agreed(se))
		return false;

#define CALL(fn, ...) do { if (!o->fn) return false; o->fn(__VA_ARGS__); } while (0)
	switch (req->opcode) {
	case FUSE_LOOKUP:
		CALL(lookup, req, n, a->name[0]);
		break;
	case FUSE_GETATTR:
		CALL(getattr, req, n, a->arg);
		break;
	case FUSE_SETATTR:
		CALL(setattr, req, n, a->arg);
		break;
	case FUSE_READLINK:
		CALL(readlink, req, n);
		break;
	case FUSE_SYMLINK:
		CALL(symlink, req, n, a->name[0], a->name[1]);
		break;
	case FUSE_MKNOD:
		CALL(mknod, req, n, a->name[0], a->arg);
		break;
	case FUSE_MKDIR:
		CALL(mkdir, req, n, a->name[0], a->arg);
		break;
	case FUSE_UNLINK:
		CALL(unlink, req, n, a->name[0]);
		break;
	case FUSE_RMDIR:
		CALL(rmdir, req, n, a->name[0]);
		break;
	case FUSE_RENAME: {
		const struct fuse_rename_in *ri = a->arg;

		CALL(rename, req, n, a->name[0], ri->newdir, a->name[1], 0);
		break;
	}
	case FUSE_RENAME2: {
		const struct fuse_rename2_in *ri = a->arg;

		CALL(rename, req, n, a->name[0], ri->newdir, a->name[1],
		     ri->flags);
		break;
	}
	case FUSE_LINK: {
		const struct fuse_link_in *li = a->arg;

		CALL(link, req, li->oldnodeid, n, a->name[0]);
		break;
	}
	case FUSE_OPEN:
		CALL(open, req, n, a->arg);
		break;
	case FUSE_READ:
		CALL(read, req, n, a->arg);
		break;
	case FUSE_WRITE:
		CALL(write, req, n, a->arg, a->data);
		break;
	case FUSE_STATFS:
		CALL(statfs, req, n);
		break;
	case FUSE_RELEASE:
		CALL(release, req, n, a->arg);
		break;
	case FUSE_FSYNC:
		CALL(fsync, req, n, a->arg);
		break;
	case FUSE_SETXATTR: {
		struct fuse_setxattr_in si;

		/* Without SETXATTR_EXT only size and flags travel. */
		memset(&si, 0, sizeof(si));
		memcpy(&si, a->arg, fe_argsize(se, FUSE_SETXATTR,
					       fe_opdesc(FUSE_SETXATTR)));
		CALL(setxattr, req, n, a->name[0], a->data, si.size, si.flags,
		     si.setxattr_flags);
		break;
	}
	case FUSE_GETXATTR: {
		const struct fuse_getxattr_in *gi = a->arg;

		CALL(getxattr, req, n, a->name[0], gi->size);
		break;
	}
	case FUSE_LISTXATTR: {
		const struct fuse_getxattr_in *gi = a->arg;

		CALL(listxattr, req, n, gi->size);
		break;
	}
	case FUSE_REMOVEXATTR:
		CALL(removexattr, req, n, a->name[0]);
		break;
	case FUSE_FLUSH:
		CALL(flush, req, n, a->arg);
		break;
	case FUSE_OPENDIR:
		CALL(opendir, req, n, a->arg);
		break;
	case FUSE_READDIR:
		CALL(readdir, req, n, a->arg);
		break;
	case FUSE_READDIRPLUS:
		CALL(readdirplus, req, n, a->arg);
		break;
	case FUSE_RELEASEDIR:
		CALL(releasedir, req, n, a->arg);
		break;
	case FUSE_FSYNCDIR:
		CALL(fsyncdir, req, n, a->arg);
		break;
	case FUSE_ACCESS:
		CALL(access, req, n, a->arg);
		break;
	case FUSE_CREATE:
		CALL(create, req, n, a->name[0], a->arg);
		break;
	case FUSE_TMPFILE:
		CALL(tmpfile, req, n, a->arg);
		break;
	case FUSE_FALLOCATE:
		CALL(fallocate, req, n, a->arg);
		break;
	case FUSE_LSEEK:
		CALL(lseek, req, n, a->arg);
		break;
	case FUSE_COPY_FILE_RANGE:
		CALL(copy_file_range, req, n, a->arg);
		break;
	case FUSE_SYNCFS:
		CALL(syncfs, req, n);
		break;
	case FUSE_STATX:
		CALL(statx, req, n, a->arg);
		break;
	case FUSE_IOCTL:
		CALL(ioctl, req, n, a->arg, a->data);
		break;
	case FUSE_BMAP:
		CALL(bmap, req, n, a->arg);
		break;
	/*
	 * iomap.  ENOSYS (a NULL operation) means to the kernel: for
	 * IOMAP_CONFIG, keep the defaults; for BEGIN, fall back (direct I/O
	 * becomes buffered); for END and IOEND, never send them again; for
	 * FREEZE_FS, freezing is not supported (EOPNOTSUPP).
	 */
	case FUSE_IOMAP_CONFIG:
		CALL(iomap_config, req, a->arg);
		break;
	case FUSE_IOMAP_BEGIN:
		CALL(iomap_begin, req, n, a->arg);
		break;
	case FUSE_IOMAP_END:
		CALL(iomap_end, req, n, a->arg);
		break;
	case FUSE_IOMAP_IOEND:
		CALL(iomap_ioend, req, n, a->arg);
		break;
	case FUSE_FREEZE_FS:
		CALL(freezefs, req, n, a->arg);
		break;
	case FUSE_UNFREEZE_FS:
		CALL(unfreezefs, req, n);
		break;
	case FUSE_SHUTDOWN_FS:
		CALL(shutdownfs, req, n, a->arg);
		break;
	default:
		return false;
	}
#undef CALL
	return true;
}

static void fe_trace_request(struct fe_worker *w,
			     const struct fuse_in_header *ih, size_t n)
{
	fprintf(stderr,
		"fe[%ld] unique=%llu op=%s(%u) nodeid=%llu len=%zu uid=%u "
		"gid=%u pid=%u%s\n", w->tid, (unsigned long long)ih->unique,
		fe_opcode_name(ih->opcode), ih->opcode,
		(unsigned long long)ih->nodeid, n, ih->uid, ih->gid, ih->pid,
		w->ring ? " ring" : "");
}

/*
 * Handle one message of `n` bytes at msg (`n` may exceed the buffer on a
 * socket, where the message was truncated).
 */
void fe_handle(struct fe_worker *w, char *msg, size_t n)
{
	struct fe_session *se = w->se;
	struct fe_ireq *ir = &w->ireq;
	struct fe_req *req = &ir->req;
	const struct fe_opdesc *d;
	struct fuse_in_header ih;
	struct fe_args a;
	size_t extlen, bodylen;
	int err = 0;

	if (n < offsetof(struct fuse_in_header, nodeid)) {
		fe_log("dropping a %zu-byte message: too short to answer", n);
		return;
	}
	memset(&ih, 0, sizeof(ih));
	memcpy(&ih, msg, n < sizeof(ih) ? n : sizeof(ih));
	if (se->debug)
		fe_trace_request(w, &ih, n);
	d = fe_opdesc(ih.opcode);

	if (n > se->bufsize) {
		fe_log("request %llu (%s): %zu bytes exceed the %zu-byte buffer",
		       (unsigned long long)ih.unique, fe_opcode_name(ih.opcode),
		       n, se->bufsize);
		err = EIO;
		goto reject;
	}
	if (n < sizeof(ih) || ih.len != n) {
		fe_log("request %llu: read %zu bytes, header says %u",
		       (unsigned long long)ih.unique, n, ih.len);
		err = EINVAL;
		goto reject;
	}
	if (!d) {
		err = ENOSYS;
		goto reject;
	}

	extlen = (size_t)ih.total_extlen * 8;
	if (extlen > n - sizeof(ih)) {
		err = EINVAL;
		goto reject;
	}
	bodylen = n - sizeof(ih) - extlen;

	memset(ir, 0, sizeof(*ir));
	req->se = se;
	req->unique = ih.unique;
	req->nodeid = ih.nodeid;
	req->opcode = ih.opcode;
	req->uid = ih.uid;
	req->gid = ih.gid;
	req->pid = ih.pid;
	req->fd = w->fd;
	ir->ring = w->ring;

	if (extlen) {
		size_t off = sizeof(ih) + bodylen;
		size_t aligned = FUSE_REC_ALIGN(off);

		/* Names before the extensions leave them unaligned; move
		 * them (into the slack past the message) so req->groups is a
		 * properly aligned array. */
		if (aligned != off)
			memmove(msg + aligned, msg + off, extlen);
		err = fe_parse_ext(req, msg + aligned, extlen);
		if (err)
			goto reject;
	}

	err = fe_parse_args(se, &ih, d, msg + sizeof(ih), bodylen, &a);
	if (err)
		goto reject;
	if (se->debug && fe_is_iomap_opcode(ih.opcode))
		fe_trace_iomap_request(ih.opcode, a.arg);

	if (ih.opcode == FUSE_INIT) {
		fe_do_init(w, req, a.arg, bodylen);
		return;
	}
	if (__atomic_load_n(&se->init_state, __ATOMIC_ACQUIRE) != FE_INIT_DONE) {
		err = EIO;
		goto reject;
	}
	/* Only a peer that is not the kernel sends more after DESTROY; the
	 * filesystem is gone by then. */
	if (__atomic_load_n(&se->destroyed, __ATOMIC_ACQUIRE)) {
		err = EIO;
		goto reject;
	}

	switch (ih.opcode) {
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
		fe_do_forget(se, &ih, &a);
		return;
	case FUSE_NOTIFY_REPLY:
		/* The engine never asks for RETRIEVE; nothing to match. */
		return;
	case FUSE_INTERRUPT:
		fe_do_interrupt(w, req, a.arg);
		return;
	case FUSE_DESTROY:
		fe_do_destroy(se, req);
		return;
	default:
		break;
	}

	fe_list(se, ir);
	if (!fe_call_op(se, req, &a)) {
		fe_reply_err(req, ENOSYS);
	} else if (!ir->replied) {
		fe_log("operation %s returned without answering request %llu",
		       fe_opcode_name(ih.opcode), (unsigned long long)ih.unique);
		fe_reply_err(req, EIO);
	}
	fe_unlist(se, ir);
	/* On an iomap connection the rings may register only now. */
	if (ih.opcode == FUSE_IOMAP_CONFIG &&
	    (se->conn.flags & FUSE_OVER_IO_URING))
		fe_ring_set_state(se, FE_RING_GO);
	return;

reject:
	/* The kernel waits for no answer to these, and must not get one. */
	if (d && (d->flags & OPF_NOREPLY)) {
		fe_log("dropping %s request %llu: %s", d->name,
		       (unsigned long long)ih.unique, strerror(err));
		return;
	}
	fe_reject(w, &ih, err);
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

static void fe_wake_handler(int sig)
{
	(void)sig;
}

/*
 * iomap requests can come from memory reclaim and writeback: a worker that
 * allocated memory with filesystem reclaim allowed could end up waiting for
 * itself.  Once FUSE_IOMAP is agreed each worker asks the kernel, once, to
 * treat its allocations as GFP_NOFS.  A failure is not fatal; it is
 * reported once per session, except ENOTTY (a socket, or a kernel without
 * the ioctl, which then has no iomap either).
 */
void fe_worker_nofs(struct fe_worker *w)
{
	struct fe_session *se = w->se;
	uint32_t one = 1;
	int err;

	if (w->nofs_done || !fe_iomap_agreed(se))
		return;
	w->nofs_done = true;
	if (ioctl(w->fd, FUSE_DEV_IOC_SET_NOFS, &one) == 0) {
		if (se->debug)
			fprintf(stderr, "fe[%ld] SET_NOFS done\n", w->tid);
		return;
	}
	err = errno;
	if (err == ENOTTY)
		return;
	if (!__atomic_exchange_n(&se->nofs_logged, true, __ATOMIC_ACQ_REL))
		fe_log("FUSE_DEV_IOC_SET_NOFS failed: %s; a worker might "
		       "deadlock in memory reclaim", strerror(err));
}

/* Read one message.  Returns its size, 0 at end of channel, or -errno. */
static ssize_t fe_read_msg(struct fe_worker *w)
{
	struct fe_session *se = w->se;
	ssize_t n;

	if (se->is_socket)
		/* MSG_TRUNC: report the real size of an oversized message
		 * instead of silently cutting it. */
		n = recv(w->fd, w->buf, se->bufsize, MSG_TRUNC);
	else
		n = read(w->fd, w->buf, se->bufsize);
	return n < 0 ? -errno : n;
}

static void *fe_worker_main(void *arg)
{
	struct fe_worker *w = arg;
	struct fe_session *se = w->se;
	sigset_t wake;
	int error = 0;

	w->tid = fe_gettid();
	sigemptyset(&wake);
	sigaddset(&wake, FE_WAKE_SIGNAL);

	for (;;) {
		ssize_t n;

		/* Before reading: read() itself may allocate. */
		if (!fe_stopping(se))
			fe_worker_nofs(w);
		/* The wake-up signal is deliverable only around read(), so it
		 * never interrupts a system call inside an operation. */
		pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
		if (fe_stopping(se)) {
			pthread_sigmask(SIG_BLOCK, &wake, NULL);
			break;
		}
		n = fe_read_msg(w);
		pthread_sigmask(SIG_BLOCK, &wake, NULL);

		if (n > 0) {
			/* A worker that was already waiting in read() when
			 * INIT was answered catches up here. */
			fe_worker_nofs(w);
			fe_handle(w, w->buf, (size_t)n);
			continue;
		}
		if (n == 0 || n == -ENODEV) {
			/* Unmounted, aborted, or the peer closed the socket. */
			break;
		}
		if (n == -EINTR || n == -ENOENT)
			continue;	/* woken, or the request was withdrawn */
		if (n == -EAGAIN) {
			/* Non-blocking channel: wait for it, interruptibly. */
			struct pollfd pfd = { .fd = w->fd, .events = POLLIN };

			pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
			if (!fe_stopping(se))
				poll(&pfd, 1, -1);
			pthread_sigmask(SIG_BLOCK, &wake, NULL);
			continue;
		}
		fe_log("reading the FUSE channel: %s", strerror((int)-n));
		error = (int)n;
		break;
	}

	/* One worker seeing the end means all are done. */
	fe_request_stop(se, error);
	fe_worker_exit(w);
	return NULL;
}

void fe_worker_exit(struct fe_worker *w)
{
	struct fe_session *se = w->se;

	pthread_mutex_lock(&se->lock);
	w->running = false;
	se->nrunning--;
	pthread_cond_broadcast(&se->cond);
	pthread_mutex_unlock(&se->lock);
}

/*
 * A /dev/fuse worker's buffer is placed so that a WRITE's data, which
 * follows the in_header and fuse_write_in, starts on a page: the
 * filesystem may then hand it to O_DIRECT I/O without copying it.  The
 * returned pointer lies FE_WRITE_DATA_OFF bytes into a page-aligned
 * allocation (free it from there).
 */
#define FE_PAGE			4096
#define FE_WRITE_DATA_OFF	(FE_PAGE - sizeof(struct fuse_in_header) - \
				 sizeof(struct fuse_write_in))

static char *fe_worker_buf(size_t bufsize)
{
	char *base;

	if (posix_memalign((void **)&base, FE_PAGE,
			   FE_WRITE_DATA_OFF + bufsize + FE_BUF_SLACK))
		return NULL;
	return base + FE_WRITE_DATA_OFF;
}

/* Give worker `w` its own clone of the channel where the channel allows. */
static void fe_worker_open(struct fe_session *se, struct fe_worker *w, int fd)
{
	uint32_t src = (uint32_t)fd;
	int clone_fd;

	w->fd = fd;
	w->own_fd = false;
	if (w->index == 0 || se->is_socket)
		return;
	clone_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (clone_fd < 0)
		return;
	if (ioctl(clone_fd, FUSE_DEV_IOC_CLONE, &src) < 0) {
		/* Not a /dev/fuse channel, or an old kernel: share fd. */
		close(clone_fd);
		return;
	}
	w->fd = clone_fd;
	w->own_fd = true;
}

/* Signals for the application go to its own threads, not to workers. */
static void fe_worker_sigmask(sigset_t *set)
{
	static const int sync_signals[] = {
		SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS,
	};
	size_t i;

	sigfillset(set);
	for (i = 0; i < sizeof(sync_signals) / sizeof(sync_signals[0]); i++)
		sigdelset(set, sync_signals[i]);
}

int fe_session_serve(struct fe_session *se, int fd)
{
	struct sigaction sa, old_sa;
	sigset_t mask, old_mask;
	struct stat st;
	unsigned int i;
	bool destroy;
	int ret = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	se->is_socket = S_ISSOCK(st.st_mode);
	se->fd = fd;
	se->workers = calloc(se->nthreads, sizeof(*se->workers));
	if (!se->workers) {
		ret = -ENOMEM;
		goto out;
	}
	se->nworkers = se->nthreads;
	/* Rings only for the kernel's /dev/fuse; they add workers. */
	if (se->want_uring && !se->is_socket)
		fe_ring_setup(se);

	/* No SA_RESTART: the wake-up signal must make read() fail. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fe_wake_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(FE_WAKE_SIGNAL, &sa, &old_sa);

	/* Every channel and buffer exists before the first worker runs, so
	 * once any request is answered the whole pool is in place. */
	for (i = 0; i < se->nthreads; i++) {
		struct fe_worker *w = &se->workers[i];

		w->se = se;
		w->index = i;
		w->fd = fd;
		w->buf = fe_worker_buf(se->bufsize);
		if (!w->buf) {
			ret = -ENOMEM;
			break;
		}
		fe_worker_open(se, w, fd);
	}

	/* Threads start with everything blocked, so no signal can reach them
	 * before they set up their own mask. */
	fe_worker_sigmask(&mask);
	pthread_sigmask(SIG_SETMASK, &mask, &old_mask);
	for (i = 0; ret == 0 && i < se->nworkers; i++) {
		struct fe_worker *w = &se->workers[i];
		int err;

		pthread_mutex_lock(&se->lock);
		w->running = true;
		se->nrunning++;
		pthread_mutex_unlock(&se->lock);
		err = pthread_create(&w->thread, NULL,
				     w->ring ? fe_ring_main : fe_worker_main, w);
		if (err) {
			pthread_mutex_lock(&se->lock);
			w->running = false;
			se->nrunning--;
			pthread_mutex_unlock(&se->lock);
			ret = -err;
			break;
		}
		w->started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	if (ret < 0) {
		fe_log("starting workers: %s", strerror(-ret));
		fe_request_stop(se, ret);
	}

	/* Supervise: once stopping, keep waking workers until all are out. */
	pthread_mutex_lock(&se->lock);
	while (se->nrunning > 0) {
		if (se->stop) {
			struct timespec ts;

			for (i = 0; i < se->nworkers; i++)
				if (se->workers[i].running)
					pthread_kill(se->workers[i].thread,
						     FE_WAKE_SIGNAL);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += FE_WAKE_INTERVAL_NS;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&se->cond, &se->lock, &ts);
		} else {
			pthread_cond_wait(&se->cond, &se->lock);
		}
	}
	if (se->error && !ret)
		ret = se->error;
	destroy = !se->destroyed;
	se->destroyed = true;
	pthread_mutex_unlock(&se->lock);

	for (i = 0; i < se->nworkers; i++) {
		struct fe_worker *w = &se->workers[i];

		if (w->started)
			pthread_join(w->thread, NULL);
		if (w->own_fd)
			close(w->fd);
		if (!w->ring && w->buf)
			free(w->buf - FE_WRITE_DATA_OFF);
	}
	fe_ring_teardown(se);
	sigaction(FE_WAKE_SIGNAL, &old_sa, NULL);

	/* The channel ended without DESTROY (peer closed, unmount without
	 * DESTROY, stop): the filesystem still gets to clean up once. */
	if (destroy && se->ops->destroy)
		se->ops->destroy(se->fs);
out:
	free(se->workers);
	se->workers = NULL;
	se->nworkers = 0;
	se->fd = -1;
	return ret;
}
