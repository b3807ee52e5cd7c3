"""Task identifiers."""

from __future__ import annotations

import base64
import os
import re

# The characters a task id or idempotency key may use: safe in URLs, shell
# arguments and log lines without quoting.
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_ID_LENGTH = 128


def new_task_id() -> str:
    """22 characters of URL-safe base64 over 128 random bits, never starting
    with "-": `conveyor get -0abc...` would read the id as an option."""
    while True:
        task_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
        if task_id[0] != "-":
            return task_id
