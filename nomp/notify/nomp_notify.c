/* nomp-notify: a coin daemon's -blocknotify, sent to a running pool's control port.
 *
 *   nomp-notify [-t SECONDS] [-k TOKEN_FILE] ADDRESS POOL BLOCKHASH
 *
 * ADDRESS is the control port: IP:PORT, [IPV6]:PORT, or the absolute path
 * of a unix socket (a control port listening on unix:PATH); a host name is
 * refused, so that no DNS lookup can hold up a notification. It sends the
 * one line "blocknotify POOL BLOCKHASH" and waits for the pool's one-line
 * answer, all within SECONDS (default 2). With TOKEN_FILE (the pool's
 * control.token_file), it first sends "auth TOKEN" and waits for
 * "ok authenticated"; the file is held to the pool's rules for secret files:
 * a regular file owned by this user, mode 0600 or 0400, checked on the
 * opened file.
 *
 * Exit status:
 *   0  the pool answered "ok" (nothing is printed)
 *   1  the pool answered something else: its answer is printed on stderr
 *   2  bad arguments, or a token file that cannot be used: nothing is sent
 *   3  the control port cannot be reached, or gave no answer in time
 *
 * It is C rather than Python because it runs once per block on the daemon's
 * side: an interpreter's start-up alone would cost more than the
 * notification itself. It uses only libc and exits as soon as the answer
 * line is in.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum {
    EXIT_OK = 0,
    EXIT_POOL_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_UNREACHABLE = 3,
};

#define DEFAULT_TIMEOUT 2.0
#define MAX_TIMEOUT 60.0
#define MAX_POOL_NAME 100 /* bytes: well within the control port's line limit */
#define BLOCK_HASH_DIGITS 64
#define MAX_ANSWER 4096 /* the control port's own line limit */
#define MIN_TOKEN 16   /* characters, as the pool requires of a token */
#define MAX_TOKEN 4096 /* bytes of a token file: the pool's limit for any secret file */
#define SHOWN 80        /* characters of a bad argument repeated in its error */
#define ADDRESS_FORMS "the control port's address is IP:PORT, [IPV6]:PORT or /path/of/unix/socket"

static const char USAGE[] =
    "usage: nomp-notify [-t SECONDS] [-k TOKEN_FILE] ADDRESS POOL BLOCKHASH\n"
    "  ADDRESS        the pool's control port: IP:PORT, [IPV6]:PORT or /path/of/unix/socket\n"
    "  POOL           the pool's name or its coin's\n"
    "  BLOCKHASH      the new block's hash, 64 hex digits (the daemon's %s)\n"
    "  -t SECONDS     give up after this long (default 2, at most 60)\n"
    "  -k TOKEN_FILE  the control port's token file (control.token_file), mode 0600 or 0400\n"
    "In litecoin.conf: blocknotify=/path/to/nomp-notify 127.0.0.1:17117 litecoin %s\n"
    "Exit status: 0 ok, 1 the pool's error answer, 2 bad arguments or token file, 3 the control port down or silent.\n";

static const char *address_text; /* ADDRESS as given, for the messages */
static struct timespec deadline;

static void print_shown(FILE *out, const char *text, size_t limit) {
    /* Arguments and answers are repeated on one line whatever bytes they hold. */
    size_t i;
    for (i = 0; text[i] != '\0' && i < limit; i++) {
        unsigned char c = (unsigned char)text[i];
        fputc(c < 0x20 || c == 0x7f ? '?' : c, out);
    }
    if (text[i] != '\0') {
        fputs("...", out);
    }
}

static int fail(int status, const char *format, ...) {
    va_list args;
    fputs("nomp-notify: ", stderr);
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    return status;
}

static int bad_argument(const char *what, const char *given) {
    fputs("nomp-notify: ", stderr);
    fputs(what, stderr);
    fputs(", not '", stderr);
    print_shown(stderr, given, SHOWN);
    fputs("'\n", stderr);
    return EXIT_USAGE;
}

static int milliseconds_left(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long left =
        (long long)(deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000;
    if (left < 0) {
        return 0;
    }
    return left > 1000000 ? 1000000 : (int)left;
}

/* 1 when fd is ready for events, 0 when time is up, -1 (errno set) on error. */
static int wait_ready(int fd, short events) {
    for (;;) {
        struct pollfd entry = {.fd = fd, .events = events};
        int left = milliseconds_left();
        if (left == 0) {
            return 0;
        }
        int ready = poll(&entry, 1, left);
        if (ready > 0) {
            return 1;
        }
        if (ready < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static int timed_out(void) {
    return fail(EXIT_UNREACHABLE, "no answer from the control port at %s in time", address_text);
}

/* A connected socket, or -1 with *error set to the errno that says why. */
static int connect_to(const struct sockaddr *address, socklen_t length, int *error) {
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *error = errno;
        return -1;
    }
    if (connect(fd, address, length) == 0) {
        return fd;
    }
    if (errno != EINPROGRESS) {
        *error = errno;
        close(fd);
        return -1;
    }
    int ready = wait_ready(fd, POLLOUT);
    if (ready <= 0) {
        *error = ready == 0 ? ETIMEDOUT : errno;
        close(fd);
        return -1;
    }
    int outcome = 0;
    socklen_t outcome_length = sizeof outcome;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &outcome, &outcome_length) != 0) {
        outcome = errno;
    }
    if (outcome != 0) {
        *error = outcome;
        close(fd);
        return -1;
    }
    return fd;
}

static int unreachable(int error) {
    if (error == ETIMEDOUT) {
        return fail(EXIT_UNREACHABLE, "the control port at %s did not take the connection in time",
                    address_text);
    }
    return fail(EXIT_UNREACHABLE, "cannot reach the control port at %s: %s", address_text, strerror(error));
}

/* The socket connected to ADDRESS, or -1 with *status set. */
static int open_control_port(const char *address, int *status) {
    int error = 0;
    int fd;
    if (address[0] == '/') {
        struct sockaddr_un local = {.sun_family = AF_UNIX};
        size_t length = strlen(address);
        if (length >= sizeof local.sun_path) {
            *status = bad_argument("a unix socket's path is at most 107 bytes", address);
            return -1;
        }
        memcpy(local.sun_path, address, length + 1);
        fd = connect_to((const struct sockaddr *)&local, sizeof local, &error);
        if (fd < 0) {
            *status = unreachable(error);
        }
        return fd;
    }

    const char *colon = strrchr(address, ':');
    const char *port = colon == NULL ? "" : colon + 1;
    size_t port_digits = strspn(port, "0123456789");
    int port_is_number = port_digits > 0 && port_digits <= 5 && port[port_digits] == '\0';
    long port_number = port_is_number ? strtol(port, NULL, 10) : 0;
    size_t host_length = colon == NULL ? 0 : (size_t)(colon - address);
    const char *host_start = address;
    if (host_length >= 2 && address[0] == '[' && address[host_length - 1] == ']') {
        host_start++;
        host_length -= 2;
    }
    char host[256];
    if (port_number < 1 || port_number > 65535 || host_length == 0 || host_length >= sizeof host) {
        *status = bad_argument(ADDRESS_FORMS, address);
        return -1;
    }
    memcpy(host, host_start, host_length);
    host[host_length] = '\0';

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *found;
    int lookup = getaddrinfo(host, port, &hints, &found);
    if (lookup == EAI_NONAME) {
        *status = bad_argument(ADDRESS_FORMS, address);
        return -1;
    }
    if (lookup != 0) {
        *status = fail(EXIT_UNREACHABLE, "cannot use the control port's address %s: %s", address,
                       lookup == EAI_SYSTEM ? strerror(errno) : gai_strerror(lookup));
        return -1;
    }
    fd = -1;
    for (struct addrinfo *each = found; each != NULL && fd < 0; each = each->ai_next) {
        fd = connect_to(each->ai_addr, each->ai_addrlen, &error);
        if (fd < 0 && error == ETIMEDOUT) {
            break;
        }
    }
    freeaddrinfo(found);
    if (fd < 0) {
        *status = unreachable(error);
    }
    return fd;
}

static int send_line(int fd, const char *line, size_t length) {
    size_t sent = 0;
    while (sent < length) {
        ssize_t written = send(fd, line + sent, length - sent, MSG_NOSIGNAL);
        if (written > 0) {
            sent += (size_t)written;
            continue;
        }
        if (written < 0 && errno == EINTR) {
            continue;
        }
        if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ready = wait_ready(fd, POLLOUT);
            if (ready == 0) {
                return timed_out();
            }
            if (ready > 0) {
                continue;
            }
        }
        return fail(EXIT_UNREACHABLE, "cannot send to the control port at %s: %s", address_text,
                    strerror(errno));
    }
    return EXIT_OK;
}

/* Reads the answer line into answer (without its line break). */
static int read_answer(int fd, char *answer, size_t size) {
    size_t have = 0;
    for (;;) {
        char *end = memchr(answer, '\n', have);
        if (end != NULL) {
            if (end > answer && end[-1] == '\r') {
                end--;
            }
            /* a NUL inside must not cut the answer short into a bare "ok" */
            for (char *each = answer; each < end; each++) {
                if (*each == '\0') {
                    *each = '?';
                }
            }
            *end = '\0';
            return EXIT_OK;
        }
        if (have == size) {
            return fail(EXIT_POOL_ERROR, "the control port at %s answered a line over %d bytes", address_text,
                        MAX_ANSWER);
        }
        ssize_t got = recv(fd, answer + have, size - have, 0);
        if (got > 0) {
            have += (size_t)got;
            continue;
        }
        if (got == 0) {
            return fail(EXIT_UNREACHABLE, "the control port at %s closed the connection %s", address_text,
                        have == 0 ? "without answering" : "in the middle of its answer");
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ready = wait_ready(fd, POLLIN);
            if (ready == 0) {
                return timed_out();
            }
            if (ready > 0) {
                continue;
            }
        }
        return fail(EXIT_UNREACHABLE, "cannot read from the control port at %s: %s", address_text,
                    strerror(errno));
    }
}

/* The token in path (its first line, blanks around it dropped) into token, or
 * EXIT_USAGE with the reason printed: the pool's own rules for its token file. */
static int read_token(const char *path, char *token, size_t size) {
    int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return fail(EXIT_USAGE, "cannot open the token file %s: %s", path, strerror(errno));
    }
    struct stat info;
    if (fstat(fd, &info) != 0) {
        int error = errno;
        close(fd);
        return fail(EXIT_USAGE, "cannot read the token file %s: %s", path, strerror(error));
    }
    mode_t mode = info.st_mode & 07777;
    const char *refused = NULL;
    if (!S_ISREG(info.st_mode)) {
        refused = "is not a regular file";
    } else if (info.st_uid != geteuid()) {
        refused = "is not owned by this user";
    } else if (mode != 0600 && mode != 0400) {
        refused = "must have mode 0600 or 0400 (chmod 600 it)";
    }
    if (refused != NULL) {
        close(fd);
        return fail(EXIT_USAGE, "the token file %s %s", path, refused);
    }
    static char data[MAX_TOKEN + 1];
    size_t have = 0;
    for (;;) {
        ssize_t got = read(fd, data + have, sizeof data - have);
        if (got > 0) {
            have += (size_t)got;
            if (have == sizeof data) {
                break;
            }
            continue;
        }
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            int error = errno;
            close(fd);
            return fail(EXIT_USAGE, "cannot read the token file %s: %s", path, strerror(error));
        }
        break;
    }
    close(fd);
    if (have > MAX_TOKEN) {
        return fail(EXIT_USAGE, "the token file %s is too long to hold one token", path);
    }
    size_t start = 0;
    size_t end = 0;
    while (end < have && data[end] != '\n' && data[end] != '\r') {
        end++;
    }
    while (start < end && (data[start] == ' ' || data[start] == '\t')) {
        start++;
    }
    while (end > start && (data[end - 1] == ' ' || data[end - 1] == '\t')) {
        end--;
    }
    size_t length = end - start;
    int blank = 0;
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)data[i];
        blank |= c <= 0x20 || c == 0x7f;
    }
    if (length < MIN_TOKEN || length >= size || blank) {
        return fail(EXIT_USAGE,
                    "the token file %s must hold one token of at least %d characters without blanks "
                    "on its first line",
                    path, MIN_TOKEN);
    }
    memcpy(token, data + start, length);
    token[length] = '\0';
    return EXIT_OK;
}

static int valid_pool_name(const char *name) {
    size_t length = strlen(name);
    if (length == 0 || length > MAX_POOL_NAME) {
        return 0;
    }
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

static int valid_block_hash(const char *hash) {
    return strlen(hash) == BLOCK_HASH_DIGITS && strspn(hash, "0123456789abcdefABCDEF") == BLOCK_HASH_DIGITS;
}

int main(int argc, char **argv) {
    double timeout = DEFAULT_TIMEOUT;
    const char *token_file = NULL;
    int first = 1;
    while (first < argc && argv[first][0] == '-') {
        const char *option = argv[first];
        if (strcmp(option, "--") == 0) {
            first++;
            break;
        }
        if (strcmp(option, "-h") == 0 || strcmp(option, "--help") == 0) {
            fputs(USAGE, stdout);
            return EXIT_OK;
        }
        if (strcmp(option, "-k") == 0) {
            if (first + 1 == argc) {
                fputs("nomp-notify: -k needs the token file's path\n", stderr);
                return EXIT_USAGE;
            }
            token_file = argv[first + 1];
            first += 2;
            continue;
        }
        if (strcmp(option, "-t") != 0) {
            bad_argument("unknown option", option);
            fputs(USAGE, stderr);
            return EXIT_USAGE;
        }
        if (first + 1 == argc) {
            fputs("nomp-notify: -t needs a number of seconds\n", stderr);
            return EXIT_USAGE;
        }
        char *end;
        timeout = strtod(argv[first + 1], &end);
        /* written so that NaN fails too */
        if (end == argv[first + 1] || *end != '\0' || !(timeout > 0 && timeout <= MAX_TIMEOUT)) {
            return bad_argument("-t takes a number of seconds above 0 and at most 60", argv[first + 1]);
        }
        first += 2;
    }
    if (argc - first != 3) {
        fputs(USAGE, stderr);
        return EXIT_USAGE;
    }
    const char *pool = argv[first + 1];
    const char *block_hash = argv[first + 2];
    address_text = argv[first];
    if (!valid_pool_name(pool)) {
        return bad_argument("a pool name is one word of 1 to 100 bytes, without spaces or control characters",
                            pool);
    }
    if (!valid_block_hash(block_hash)) {
        return bad_argument("a block hash is 64 hex digits", block_hash);
    }

    static char token[MAX_TOKEN + 1];
    if (token_file != NULL) {
        int read_status = read_token(token_file, token, sizeof token);
        if (read_status != EXIT_OK) {
            return read_status;
        }
    }

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    long long nanoseconds = (long long)(timeout * 1e9);
    deadline.tv_sec += (time_t)(nanoseconds / 1000000000);
    deadline.tv_nsec += (long)(nanoseconds % 1000000000);
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }

    int status = EXIT_OK;
    int fd = open_control_port(address_text, &status);
    if (fd < 0) {
        return status;
    }
    char line[sizeof "blocknotify " + MAX_POOL_NAME + 1 + BLOCK_HASH_DIGITS + 1];
    int length = snprintf(line, sizeof line, "blocknotify %s %s\n", pool, block_hash);
    static char answer[MAX_ANSWER + 1];
    if (token_file != NULL) {
        static char auth[sizeof "auth " + MAX_TOKEN + 1];
        int auth_length = snprintf(auth, sizeof auth, "auth %s\n", token);
        status = send_line(fd, auth, (size_t)auth_length);
        if (status == EXIT_OK) {
            status = read_answer(fd, answer, MAX_ANSWER);
        }
        if (status == EXIT_OK && strcmp(answer, "ok authenticated") != 0) {
            close(fd);
            fprintf(stderr, "nomp-notify: the pool at %s refused the token: ", address_text);
            print_shown(stderr, answer, MAX_ANSWER);
            fputc('\n', stderr);
            return EXIT_POOL_ERROR;
        }
    }
    if (status == EXIT_OK) {
        status = send_line(fd, line, (size_t)length);
    }
    if (status == EXIT_OK) {
        status = read_answer(fd, answer, MAX_ANSWER);
    }
    close(fd);
    if (status != EXIT_OK) {
        return status;
    }
    if (strcmp(answer, "ok") == 0 || strncmp(answer, "ok ", 3) == 0) {
        return EXIT_OK;
    }
    fprintf(stderr, "nomp-notify: the pool at %s answered: ", address_text);
    print_shown(stderr, answer, MAX_ANSWER);
    fputc('\n', stderr);
    return EXIT_POOL_ERROR;
}
