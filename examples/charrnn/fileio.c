#define _POSIX_C_SOURCE 200809L
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory part of path ("." when there is none), for fsync after a rename. */
static void directory_of(const char *path, char *out, size_t out_len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, out_len, ".");
    else if (slash == path)
        snprintf(out, out_len, "/");
    else
        snprintf(out, out_len, "%.*s", (int)(slash - path), path);
}

int charrnn_write_file_atomic(const char *path, const void *data, size_t len, charrnn_error *err)
{
    size_t tmp_len = strlen(path) + 16;
    char *tmp = charrnn_xmalloc(tmp_len);
    snprintf(tmp, tmp_len, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return charrnn_fail(err, "cannot write %s: %s", path, strerror(e));
    }
    const unsigned char *p = data;
    size_t left = len;
    int e = 0;
    while (left > 0 && e == 0) {
        ssize_t wrote = write(fd, p, left);
        if (wrote < 0) {
            if (errno != EINTR) /* a signal (SIGINT) must not turn into a failed save */
                e = errno;
            continue;
        }
        p += wrote;
        left -= (size_t)wrote;
    }
    /* mkstemp makes the file 0600; a checkpoint or a plot is an ordinary file. */
    if (e == 0 && fchmod(fd, 0644) != 0)
        e = errno;
    if (e == 0 && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && e == 0)
        e = errno;
    if (e == 0 && rename(tmp, path) != 0)
        e = errno;
    if (e != 0) {
        unlink(tmp);
        free(tmp);
        return charrnn_fail(err, "cannot write %s: %s", path, strerror(e));
    }
    free(tmp);
    /* Make the rename itself durable. Failing to is no reason to fail the save. */
    char dir[4096];
    directory_of(path, dir, sizeof dir);
    int dir_fd = open(dir, O_RDONLY);
    if (dir_fd >= 0) {
        fsync(dir_fd);
        close(dir_fd);
    }
    return 0;
}

int charrnn_read_file(const char *path, unsigned char **data, size_t *len, charrnn_error *err)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return charrnn_fail(err, "cannot read %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return charrnn_fail(err, "cannot read %s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = charrnn_xmalloc(size);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : 0;
            close(fd);
            free(buf);
            return charrnn_fail(err, "cannot read %s: %s", path,
                                e ? strerror(e) : "the file shrank while it was read");
        }
        got += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = size;
    return 0;
}

uint64_t charrnn_crc64(uint64_t crc, const void *data, size_t len)
{
    static uint64_t table[256];
    static int table_ready = 0;
    if (!table_ready) {
        for (int i = 0; i < 256; i++) {
            uint64_t c = (uint64_t)i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? (c >> 1) ^ 0xC96C5795D7870F42ULL : c >> 1;
            table[i] = c;
        }
        table_ready = 1;
    }
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}
