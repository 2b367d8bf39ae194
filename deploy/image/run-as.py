#!/usr/bin/env python3
"""Runs a program inside an image's root filesystem the way the DaemonSet's securityContext does.

Usage: run-as.py ROOT UID GID ENV_FILE -- PROGRAM [ARGS...]

chroot(ROOT), working directory /, supplementary groups cleared, GID and UID set, no_new_privs
(allowPrivilegeEscalation: false), and every capability gone (capabilities: drop: [ALL]): the
bounding, inheritable and ambient sets are emptied before the exec, so that even uid 0 execs
with no effective or permitted capability, as a container started with `drop: [ALL]` does.
The environment is exactly ENV_FILE's KEY=VALUE lines (the image's config Env) plus HOME=/.
Everything that needs the host's files (ctypes, libc) is loaded before the chroot.
"""
import ctypes
import os
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def check(libc, rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        sys.exit(f"run-as: {what}: {os.strerror(err)}")


def main():
    if len(sys.argv) < 7 or sys.argv[5] != "--":
        sys.exit(__doc__)
    root, uid, gid, env_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    argv = sys.argv[6:]
    env = {"HOME": "/"}
    with open(env_file) as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                key, _, value = line.partition("=")
                env[key] = value
    libc = ctypes.CDLL(None, use_errno=True)
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())

    os.chroot(root)
    os.chdir("/")
    # Still root here: drop the bounding set (needs CAP_SETPCAP), then the identity.
    for cap in range(last_cap + 1):
        check(libc, libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    check(libc, libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    # Empty every set: for uid 0 an exec would otherwise keep the inheritable set.
    hdr = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    check(libc, libc.capset(ctypes.byref(hdr), ctypes.byref(data)), "capset")
    check(libc, libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
