/* io/atomicfile.h — files that appear whole or not at all: data goes to
 * "<path>.partial", is fsynced, then renamed over path, and the folder is
 * fsynced (best effort). Shared by the checkpoint, PEFT, safetensors and
 * Hugging Face config writers; failures are one sentence naming the file (a full disk is
 * said so). */
#ifndef TT_ATOMICFILE_H
#define TT_ATOMICFILE_H

#include <stddef.h>
#include <stdint.h>

/* write(2) of n bytes, retried on EINTR and short writes. Returns 0 or an
 * errno value (EIO for a zero-byte write). */
int atomic_write_all(int fd, const void *buf, uint64_t n);

/* Sets the message for errno value err while doing `what` ("writing",
 * "syncing", ...) to path; returns -err. */
int atomic_write_fail(const char *path, int err, const char *what);

/* Where a write of path lands (its folder; for a folder, is_dir, itself),
 * or the nearest folder above that exists (the writer makes the rest): that
 * file system's free bytes for an unprivileged writer (*avail) and device
 * (*dev). 0, or -1 where it cannot tell (then the write itself will say). */
int atomic_fs_room(const char *path, int is_dir, uint64_t *avail, uint64_t *dev);

/* fsync of the folder holding path, so a rename in it is durable (best effort). */
void atomic_sync_dir_of(const char *path);

/* A file being written under its temporary name "<path>.partial": fd open
 * and locked against other writers (tt_partial_open), tmp malloc'ed naming it.
 * The lock holds until atomic_commit has renamed it into place (or
 * atomic_partial_drop has removed it). */
typedef struct {
    int fd;
    char *tmp;
} atomic_partial;

/* Creates "<path>.partial" into *p: 0, or -errno with a message (another
 * process writing path: -EBUSY, its file untouched); *p is then empty. */
int atomic_partial_open(const char *path, atomic_partial *p);
/* Removes the partial file, then closes it (in this order: the lock covers
 * the unlink) and frees its name; *p emptied. Nothing when p is empty. */
void atomic_partial_drop(atomic_partial *p);

/* Writes nparts buffers, one after the other, to "<path>.partial" and fsyncs
 * it; *p holds it, open and locked, for atomic_commit. Nothing is left behind
 * on failure. Returns 0 or -errno with a message. */
int atomic_write_partial_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts,
                               atomic_partial *p);
/* The same for one buffer. */
int atomic_write_partial(const char *path, const void *data, size_t len, atomic_partial *p);

/* fsyncs p's file, renames it over path, closes it (after the rename: the
 * lock covers the file until it has left its temporary name) and syncs the
 * folder; on failure removes it. *p emptied. Returns 0 or -errno with a
 * message. */
int atomic_commit(atomic_partial *p, const char *path);

/* atomic_write_partial(_parts) + atomic_commit. */
int atomic_write_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts);
int atomic_write_file(const char *path, const void *data, size_t len);

#endif
