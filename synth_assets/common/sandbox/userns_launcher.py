"""The `userns` backend's launcher: what bubblewrap does, written in Python.

`USERNS_LAUNCHER` is the source of a small program, started as the sandbox uid with an
empty environment, that calls `unshare(2)` for new user, mount, PID, network, IPC and
UTS namespaces (so it needs unprivileged user namespaces, as bwrap does), maps its own
uid, builds the root described in `filesystem` on a scratch mount point, chroots into it
and execs the interpreter in `SANDBOX_DIR` with PR_SET_NO_NEW_PRIVS. It stays behind as
the reaper: when the namespace's first process dies, the kernel kills everything in it.

It is run as `python -I -S -c USERNS_LAUNCHER ...`, so it may import nothing from this
package; the few values it shares with the host are substituted into its text here. If
it cannot build the sandbox it says why on stderr ("sandbox-setup: ...") and exits with
`SETUP_FAILED`.
"""

from __future__ import annotations

from synth_assets.common.sandbox.filesystem import SANDBOX_DIR


SETUP_FAILED = 125  # exit code of the userns launcher when it cannot build the sandbox


# The userns backend's launcher: what bwrap does, in Python. Runs as the sandbox uid;
# argv: [workdir_mb, newroot mount point, python, n_binds, *binds, n_links, *(link, target)] + command.
USERNS_LAUNCHER = r'''
import ctypes, os, sys
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
libc = ctypes.CDLL(None, use_errno=True)

def fail(what, err=None):
    err = ctypes.get_errno() if err is None else err
    os.write(2, ("sandbox-setup: %s failed: %s\n" % (what, os.strerror(err))).encode())
    os._exit(%(setup_failed)d)

def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        fail("mount %s" % target)

def locked_flags(path):
    # A remount inside a user namespace must keep the flags the host set.
    f = os.statvfs(path).f_flag
    return ((MS_NOEXEC if f & os.ST_NOEXEC else 0) | (MS_NOATIME if f & os.ST_NOATIME else 0)
            | (MS_NODIRATIME if f & os.ST_NODIRATIME else 0) | (MS_RELATIME if f & os.ST_RELATIME else 0))

def reap(child):
    _, status = os.waitpid(child, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))

args = sys.argv[1:]
workdir_mb, newroot, python = int(args[0]), args[1], args[2]
n_binds = int(args[3]); binds = args[4:4 + n_binds]; rest = args[4 + n_binds:]
n_links = int(rest[0]); links = rest[1:1 + 2 * n_links]; command = rest[1 + 2 * n_links:]
uid, gid = os.getuid(), os.getgid()
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
    fail("unshare(user, mount, pid, net, ipc, uts)")
try:
    for path, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
        with open("/proc/self/" + path, "w") as handle:
            handle.write(text)
except OSError as exc:
    fail("writing /proc/self/" + path, exc.errno)
init = os.fork()  # pid 1 of the new PID namespace; when it dies, everything in it dies
if init:
    reap(init)
libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
for path in binds:
    target = newroot + path
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(path, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(path))
for link, target in zip(links[::2], links[1::2]):
    os.symlink(target, newroot + link)
os.mkdir(newroot + "/dev")
for name in ("null", "zero", "full", "random", "urandom"):
    open(newroot + "/dev/" + name, "w").close()
    mount("/dev/" + name, newroot + "/dev/" + name, None, MS_BIND)
os.mkdir(newroot + %(workdir)r)
mount("tmpfs", newroot + %(workdir)r, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=0700" % workdir_mb)
mount(None, newroot, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
os.chroot(newroot)
os.chdir(%(workdir)r)
harness = os.fork()
if harness == 0:
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS; exec as a non-zero uid drops every capability
    os.execve(command[0], command, {})
reap(harness)
'''.replace("%(setup_failed)d", str(SETUP_FAILED)).replace("%(workdir)r", repr(SANDBOX_DIR))
