"""How a profile says steps execute: the part of a profile the sandbox applies.

`flwd_security.profiles` reads it from a profile's `steps:` section;
`flwd_security.sandbox` applies it to each step (`prepare_step`).
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Resource limits of each step process (`None`: not limited). Sizes in bytes."""

    cpu_seconds: int | None = None
    memory: int | None = None
    open_files: int | None = None
    processes: int | None = None
    file_size: int | None = None


class StepPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a step may see and use.

    - `env_allow`: names of the server's environment variables a step receives (besides
      flwd's own `FLWD_*` and the job's `env`); `None` passes the server's environment.
    - `umask`: the steps' file-creation mask (`None`: the server's).
    - `no_new_privileges`: set-uid programs and file capabilities cannot raise privileges.
    - `network`: `none` runs steps in a network namespace of their own with no interface
      but loopback; `host` leaves them the server's network.
    - `run_as`: `run-user` runs each run's steps as an unprivileged user of their own when
      the server is root; `server` runs them as the server's user.
    - `on_unavailable`: what to do when the OS cannot apply a field (`error` fails the step,
      `warn` runs it with an event naming what was not applied).
    """

    env_allow: tuple[str, ...] | None = None
    umask: int | None = None
    no_new_privileges: bool = False
    network: Literal["host", "none"] = "host"
    run_as: Literal["server", "run-user"] = "server"
    limits: Limits = Limits()
    on_unavailable: Literal["error", "warn"] = "warn"
