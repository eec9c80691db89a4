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

/* fsync of the folder holding path, so a rename in it is durable (best effort). */
void atomic_sync_dir_of(const char *path);

/* Creates (truncates) "<path>.partial" for writing: its fd, with *tmp_out
 * (malloc'ed) naming it, or -errno with a message. */
int atomic_partial_open(const char *path, char **tmp_out);
/* fsyncs and closes fd, the partial file tmp of path: 0 (tmp is then the
 * caller's, for atomic_commit), or -errno with a message, the file removed
 * and tmp freed. */
int atomic_partial_close(int fd, char *tmp, const char *path);

/* Writes nparts buffers, one after the other, to "<path>.partial" and fsyncs
 * it; *tmp_out (malloc'ed) names it for atomic_commit. Nothing is left behind
 * on failure. Returns 0 or -errno with a message. */
int atomic_write_partial_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts,
                               char **tmp_out);
/* The same for one buffer. */
int atomic_write_partial(const char *path, const void *data, size_t len, char **tmp_out);

/* Renames tmp over path and syncs the folder; frees tmp (and removes the file
 * on failure). Returns 0 or -errno with a message. */
int atomic_commit(char *tmp, const char *path);

/* atomic_write_partial(_parts) + atomic_commit. */
int atomic_write_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts);
int atomic_write_file(const char *path, const void *data, size_t len);

#endif
