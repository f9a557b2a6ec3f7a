"""Whether a file holding a secret can be read by other users, and how to fix it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def exposure(path: Path) -> str | None:
    """Why `path` is not private to this server's user, or None when it is.

    Like ssh with a private key: any access for the group or the world is refused, with one
    exception, the layout Kubernetes gives a mounted Secret under `fsGroup` (owned by root,
    group-readable by the pod's own group only, nothing for the world): that group is the
    server's, and the file cannot be made private to it in any other way.
    """
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _OTHERS:
        return None
    platform_mounted = (
        st.st_uid == 0
        and os.geteuid() != 0
        and st.st_gid == os.getegid()
        and not mode & stat.S_IRWXO
    )
    if platform_mounted and not mode & (stat.S_IWGRP | stat.S_IXGRP):
        return None
    return (
        f"{path} is accessible to other users (mode {mode:o}); a secret others can read is "
        f"no longer a secret: run `chmod 600 {path}`"
    )


def world_readable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IROTH)
