/*
 * control.c - the trampoline's control messages (control.h), sent and
 * received in one place so their layout exists once.
 */
#include "vm/control.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

union control_cmsg {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
};

int ic_control_send(int sock, char tag, int32_t value, int fd)
{
    char body[IC_CONTROL_MSG_SIZE] = {tag};
    memcpy(body + 4, &value, sizeof(value));
    struct iovec iov = {.iov_base = body, .iov_len = sizeof(body)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    union control_cmsg ctl;
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

ssize_t ic_control_recv(int sock, int flags, struct ic_control_msg *m)
{
    char body[IC_CONTROL_MSG_SIZE] = {0};
    union control_cmsg ctl;
    struct iovec iov = {.iov_base = body, .iov_len = sizeof(body)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    m->fd = -1;
    ssize_t n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -errno;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(&m->fd, CMSG_DATA(c), sizeof(int));
    m->tag = body[0];
    memcpy(&m->value, body + 4, sizeof(m->value));
    return n;
}
