/* Temporary: weak stand-ins until the engine's iomap calls land. */
#include "config.h"
#include "fuse4fs.h"
__attribute__((weak)) int fe_iomap_probe(int fd, uint64_t *flags)
{ (void)fd; *flags = 0; return -ENOTTY; }
__attribute__((weak)) int fe_backing_open_iomap(struct fe_session *se, int devfd)
{ (void)se; (void)devfd; return -EOPNOTSUPP; }
__attribute__((weak)) int fe_reply_iomap_config(struct fe_req *req, const struct fuse_iomap_config_out *out)
{ (void)out; return fe_reply_err(req, ENOSYS); }
__attribute__((weak)) int fe_reply_iomap_begin(struct fe_req *req, const struct fuse_iomap_begin_out *out)
{ (void)out; return fe_reply_err(req, ENOSYS); }
__attribute__((weak)) int fe_reply_iomap_ioend(struct fe_req *req, uint64_t newsize)
{ (void)newsize; return fe_reply_err(req, ENOSYS); }
__attribute__((weak)) int fe_notify_iomap_dev_inval(struct fe_session *se, uint32_t dev, uint64_t offset, uint64_t length)
{ (void)se; (void)dev; (void)offset; (void)length; return -ENOTTY; }
