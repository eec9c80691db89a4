/* tools/outputs.c — the output rule every command follows (tools.h): checked
 * before any work, so that nothing a user needs is overwritten and a long
 * run never fails at its end for a reason known at its start. */
#include "tools/tools.h"

#include "core/base/common.h"
#include "io/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int tool_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The directory holding path ("." for a bare name), into buf. */
static const char *dir_of(const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path);
    return dirname(buf);
}

/* 1 when out names the input in — the file, or any file directly inside a
 * directory input — with that file's path in hit (cap bytes). */
static int aliases_input(const char *out, const char *in, char *hit, size_t cap) {
    struct stat st;
    if (tool_same_file(out, in)) {
        snprintf(hit, cap, "%s", in);
        return 1;
    }
    if (stat(in, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    size_t n = strlen(in);
    const char *sep = n && in[n - 1] == '/' ? "" : "/", *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    if (snprintf(hit, cap, "%s%s%s", in, sep, base) < (int)cap && tool_same_file(out, hit)) return 1; /* by its own name */
    DIR *d = opendir(in);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) { /* or another name of the same file */
        if (snprintf(hit, cap, "%s%s%s", in, sep, e->d_name) >= (int)cap) continue;
        found = tool_same_file(out, hit);
    }
    closedir(d);
    return found;
}

/* 1 when out, or the "<out>.partial" it is first written as (truncated when the write starts), names one of
 * inputs (as aliases_input), with that input's path in hit; *partial says which of the two it was. */
static int hits_input(const char *out, const char *const *inputs, char *hit, size_t cap, int *partial) {
    char *tmp = tt_partial_path(out);
    int found = 0;
    for (int i = 0; !found && inputs && inputs[i]; i++) {
        if (!*inputs[i]) continue;
        *partial = 0;
        found = aliases_input(out, inputs[i], hit, cap);
        if (!found) *partial = 1, found = aliases_input(tmp, inputs[i], hit, cap);
    }
    free(tmp);
    return found;
}

/* "-" is the usual name of standard output, never meant as a file or folder named "-": 1 after the message. */
static int dash_refused(const char *cmd, const char *flag, const char *path, const char *kind) {
    if (strcmp(path, "-") != 0) return 0;
    fprintf(stderr, "tiertrain %s: %s - would be a %s named '-': this output is a %s; name it (./- if that is the "
                    "name)\n", cmd, flag, kind, kind);
    return 1;
}

/* Why access(W_OK) just failed, as the end of a sentence about a folder. */
static const char *unwritable(void) {
    return errno == EROFS ? "is on a read-only file system; write elsewhere" : "is not writable";
}

int tool_check_out(const char *cmd, const char *flag, const char *path, const char *const *inputs, int force) {
    if (!path || !*path) {
        fprintf(stderr, "tiertrain %s: %s is empty; name the file to write\n", cmd, flag);
        return 2;
    }
    if (dash_refused(cmd, flag, path, "file")) return 2;
    char hit[4096];
    int partial;
    if (hits_input(path, inputs, hit, sizeof hit, &partial)) {
        if (!partial)
            fprintf(stderr, "tiertrain %s: %s %s is the input %s; write the result to a new file\n", cmd, flag, path,
                    hit);
        else {
            char *tmp = tt_partial_path(path);
            fprintf(stderr, "tiertrain %s: %s %s is written as %s first, which is the input %s; write the result to "
                            "another name\n", cmd, flag, path, tmp, hit);
            free(tmp);
        }
        return 2;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "tiertrain %s: %s %s is a directory; name a file\n", cmd, flag, path);
            return 2;
        }
        struct stat to_st;
        if (stat(path, &to_st) == 0 && !S_ISREG(to_st.st_mode)) {
            fprintf(stderr, "tiertrain %s: %s %s exists and is not a regular file; name a file\n", cmd, flag, path);
            return 2;
        }
        if (!force) {
            fprintf(stderr, "tiertrain %s: %s %s exists; pass --force to replace it\n", cmd, flag, path);
            return 2;
        }
        /* written as every output is, to OUT.partial renamed onto OUT: the link goes, what it points to stays
         * (a file that others may share: a Hugging Face cache's blob, a second name of a store); said, since
         * a user with a folder of links to another disk may expect the write to go there */
        char to[4096];
        ssize_t n = S_ISLNK(st.st_mode) ? readlink(path, to, sizeof to - 1) : -1;
        if (n >= 0) {
            to[n] = 0;
            fprintf(stderr, "tiertrain %s: note: %s %s is a symbolic link (to %s); the new file replaces the link, "
                            "and what it points to is left as it is\n", cmd, flag, path, to);
        }
    }
    char buf[4096];
    const char *dir = dir_of(path, buf, sizeof buf);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "tiertrain %s: %s %s: the folder %s does not exist\n", cmd, flag, path, dir);
        return 2;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "tiertrain %s: %s %s: the folder %s %s\n", cmd, flag, path, dir, unwritable());
        return 2;
    }
    if (!force) tt_partial_new_only(path); /* absent now: another process writing it meanwhile is found at its write */
    return 0;
}

int tool_check_out_dir(const char *cmd, const char *flag, const char *dir, const char *what, const char *const *names,
                       const char *const *inputs, int force) {
    if (!dir || !*dir) {
        fprintf(stderr, "tiertrain %s: %s is empty; name the directory to write\n", cmd, flag);
        return 2;
    }
    if (dash_refused(cmd, flag, dir, "folder")) return 2;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "tiertrain %s: %s %s is a file, not a directory\n", cmd, flag, dir);
            return 2;
        }
        if (access(dir, W_OK | X_OK) != 0) {
            fprintf(stderr, "tiertrain %s: %s %s %s\n", cmd, flag, dir, unwritable());
            return 2;
        }
    } else {
        char buf[4096];
        const char *parent = dir_of(dir, buf, sizeof buf);
        if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "tiertrain %s: %s: cannot create %s: its parent directory does not exist\n", cmd, flag,
                    dir);
            return 2;
        }
        if (access(parent, W_OK | X_OK) != 0) {
            fprintf(stderr, "tiertrain %s: %s: cannot create %s: its parent directory %s\n", cmd, flag, dir,
                    unwritable());
            return 2;
        }
        return 0; /* nothing in it yet */
    }
    for (int i = 0; names && names[i]; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) {
            fprintf(stderr, "tiertrain %s: %s %s: the path is too long\n", cmd, flag, dir);
            return 2;
        }
        char hit[4096];
        int partial;
        if (hits_input(p, inputs, hit, sizeof hit, &partial)) {
            fprintf(stderr, "tiertrain %s: %s %s would replace the input %s; write the result to a new folder\n", cmd,
                    flag, dir, hit);
            return 2;
        }
        if (lstat(p, &st) == 0 && !force) {
            fprintf(stderr, "tiertrain %s: %s %s already holds %s (%s); pass --force to replace it\n", cmd, flag, dir,
                    what, names[i]);
            return 2;
        }
    }
    return 0;
}

int tool_holds_run(const char *dir) { return ckpt_exists(dir); }

/* The lock this process holds (one: train's --out), released at exit: its file is removed while still
 * held, so a process that opened the file meanwhile finds, once it gets the lock, that the file it locked is
 * gone (tool_lock_dir compares the two), and locks a new one. */
static char g_lock_path[4096];
static int g_lock_fd = -1;
void tool_unlock_dir(void) {
    if (g_lock_fd < 0) return;
    unlink(g_lock_path);
    close(g_lock_fd);
    g_lock_fd = -1;
}

/* Tests only (tests/test_outputs.sh): with TT_TEST_LOCK_PAUSE=FILE, the first try creates FILE between its open and
 * its lock and waits (up to 60 s) until FILE is removed, so that a test can change the lock file meanwhile. */
static void test_lock_pause(void) {
    const char *f = getenv("TT_TEST_LOCK_PAUSE");
    if (!f || !*f) return;
    int fd = open(f, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
    for (int i = 0; i < 6000 && access(f, F_OK) == 0; i++) usleep(10000);
}

int tool_lock_dir(const char *cmd, const char *dir) {
    TT_ASSERT(g_lock_fd < 0);
    char p[4096];
    if (snprintf(p, sizeof p, "%s/" TOOL_LOCK_FILE, dir) >= (int)sizeof p) {
        fprintf(stderr, "tiertrain %s: %s: the path is too long\n", cmd, dir);
        return -1;
    }
    int fd = -1;
    for (int tries = 0;; tries++) {
        fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "tiertrain %s: cannot create the lock %s: %s\n", cmd, p, strerror(errno));
            return -1;
        }
        if (tries == 0) test_lock_pause();
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            char who[32] = "";
            ssize_t n = pread(fd, who, sizeof who - 1, 0);
            who[n > 0 ? n : 0] = 0;
            who[strcspn(who, "\n")] = 0;
            char holder[64] = ""; /* empty while the holder is between its lock and its write of the pid */
            if (*who) snprintf(holder, sizeof holder, " (process %s)", who);
            fprintf(stderr, "tiertrain %s: another tiertrain%s is writing %s; wait for it or use another directory\n",
                    cmd, holder, dir);
            close(fd);
            return -1;
        }
        struct stat held, named;
        if (fstat(fd, &held) == 0 && stat(p, &named) == 0 && held.st_ino == named.st_ino && held.st_dev == named.st_dev)
            break; /* the file locked is the one the path names */
        close(fd); /* its holder removed it at exit between our open and our lock: lock the new one */
        if (tries == 16) {
            fprintf(stderr, "tiertrain %s: the lock %s keeps being replaced; is another tiertrain starting and "
                            "stopping on %s?\n", cmd, p, dir);
            return -1;
        }
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) { /* best effort: the lock is what counts */
    }
    snprintf(g_lock_path, sizeof g_lock_path, "%s", p);
    g_lock_fd = fd;
    tt_partial_note_held(p, fd); /* a signal that ends the process removes it too, while it is still this one */
    static int registered;
    if (!registered++) atexit(tool_unlock_dir);
    return fd; /* held until the process exits, which removes the file */
}
