/* One notification to many miners: the same bytes sent on each socket in a
 * C loop, with no Python (and no GIL) between the sends. Written for nomp.
 *
 * A job broadcast to ten thousand miners is ten thousand send() calls; on
 * loopback each costs several microseconds of kernel work, and the caller
 * can split the sockets across threads so the kernel work runs on every core. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "nomp_hash.h"

void nomp_send_each(const int *fds, size_t count, const unsigned char *data, size_t length, long *sent)
{
    for (size_t i = 0; i < count; i++) {
        ssize_t n;
        do {
            n = send(fds[i], data, length, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        sent[i] = n < 0 ? -(long)errno : (long)n;
    }
}
