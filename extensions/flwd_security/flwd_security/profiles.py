"""Security profiles: what a server requires of its callers and how its steps execute.

A profile is a YAML file `NAME.yaml` (see docs/security.md for every field). The three
built-in ones (`secure`, the default, `permissive`, `disabled`) ship in this package's
`profiles/` folder; an operator adds or overrides profiles in the server's profiles
directory (`--profiles-dir` / FLWD_PROFILES_DIR, else `profiles/` beside the jobs).

A job may name a profile of its own (`security_profile`); it must be at least as strict
as the server's, field by field (`looser_fields`), else the job is invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from flwd.errors import FlwdError
from flwd.settings import Settings
from flwd_security.policy import Limits, StepPolicy

BUILTIN_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "secure"


class ProfileError(FlwdError):
    """A profile cannot be used: unknown, unreadable or invalid (one line, for people)."""


class Auth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`required`: every route but the open ones needs a valid bearer token."""

    required: bool = True


class RateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Requests allowed per token and per anonymous client address, in the `limits`
    library's notation (`600/minute`, `10/second`, `1000 per hour`); None: unlimited."""

    per_token: str | None = None
    anonymous: str | None = None


class Profile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    auth: Auth = Auth()
    rate_limit: RateLimit = RateLimit()
    steps: StepPolicy = StepPolicy()
    #: the file it was read from (not a YAML field)
    source: str = ""


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(value: Any, field: str) -> int | None:
    """Bytes from `512MiB`, `2GiB`, `100MB`, `4096` (an int is bytes); None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ProfileError(f"{field}: '{value}' is not a size such as 512MiB or 4096")
    number, unit = int(match.group(1)), (match.group(2) or "").upper().removesuffix("B")
    if not unit:
        return number
    power = "KMGT".index(unit[0]) + 1
    base = 1024 if unit.endswith("I") else 1000
    return int(number * base**power)


def parse_umask(value: Any) -> int | None:
    """An octal string (`"077"`, quoted in YAML) or an int (an unquoted `077` is octal
    in YAML 1.1 already)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        if value is not None and not 0 <= value <= 0o777:
            raise ProfileError(f"steps.umask: {value:o} is not a umask")
        return value
    text = str(value).strip()
    if not re.fullmatch(r"0?[0-7]{1,3}", text):
        raise ProfileError(f"steps.umask: '{value}' is not an octal umask such as \"077\"")
    return int(text, 8)


def parse_profile(data: Any, name: str, source: str = "") -> Profile:
    """A profile from the YAML document of `NAME.yaml`; `ProfileError` says what is wrong."""
    if not isinstance(data, dict):
        raise ProfileError("a profile is a mapping with name, auth, rate_limit and steps")
    data = dict(data)
    if data.get("name", name) != name:
        raise ProfileError(f"name '{data.get('name')}' differs from the file's name '{name}'")
    data["name"] = name
    steps = data.get("steps")
    if isinstance(steps, dict):
        steps = dict(steps)
        if "umask" in steps:
            steps["umask"] = parse_umask(steps["umask"])
        if isinstance(steps.get("limits"), dict):
            lim = dict(steps["limits"])
            for key in ("memory", "file_size"):
                if key in lim:
                    lim[key] = parse_size(lim[key], f"steps.limits.{key}")
            steps["limits"] = lim
        data["steps"] = steps
    try:
        profile = msgspec.convert(data, Profile)
    except msgspec.ValidationError as exc:
        raise ProfileError(str(exc)) from None
    import limits  # here: `flwd` commands that read no profile need not load it

    for field in ("per_token", "anonymous"):
        text = getattr(profile.rate_limit, field)
        if text is not None:
            try:
                limits.parse(text)
            except ValueError:
                raise ProfileError(
                    f"rate_limit.{field}: '{text}' is not a rate such as 600/minute"
                ) from None
    for key in ("cpu_seconds", "memory", "open_files", "processes", "file_size"):
        value = getattr(profile.steps.limits, key)
        if value is not None and value <= 0:
            raise ProfileError(f"steps.limits.{key} must be positive (or null: no limit)")
    return msgspec.structs.replace(profile, source=source)


def read_profile(path: Path) -> Profile:
    """The profile in `path`; `ProfileError` names the file and what is wrong with it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).replace("\n", " ")
        raise ProfileError(f"profile {path}: cannot be read: {reason}") from None
    try:
        return parse_profile(data, path.stem, str(path))
    except ProfileError as exc:
        raise ProfileError(f"profile {path}: {exc.detail}") from None


def load_profiles(directory: Path | None) -> dict[str, Profile]:
    """The built-in profiles, then those of `directory` (when it exists) by name, each
    replacing a built-in one of the same name. Any broken file is a `ProfileError`."""
    found: dict[str, Profile] = {}
    folders = [BUILTIN_DIR]
    if directory is not None and directory.is_dir():
        folders.append(directory)
    for folder in folders:
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            found[path.stem] = read_profile(path)
    return found


@dataclass(frozen=True)
class ProfileSet:
    """The profiles a server knows and the one it runs under."""

    profiles: dict[str, Profile]
    server: Profile


_CACHE: dict[tuple[str, str], ProfileSet] = {}


def profiles_for(settings: Settings, *, fresh: bool = False) -> ProfileSet:
    """The profiles of `settings` (its profiles directory) and its server profile
    (`settings.profile`), cached per directory and name; `fresh` reads them again (at
    start-up). `ProfileError` for an unknown or broken profile."""
    key = (str(settings.profiles_path), settings.profile)
    if not fresh and key in _CACHE:
        return _CACHE[key]
    profiles = load_profiles(settings.profiles_path)
    if settings.profile not in profiles:
        raise ProfileError(
            f"unknown security profile '{settings.profile}' (known: {', '.join(sorted(profiles))}"
            f"; add {settings.profile}.yaml to {settings.profiles_path})"
        )
    loaded = ProfileSet(profiles=profiles, server=profiles[settings.profile])
    _CACHE[key] = loaded
    return loaded


def looser_fields(job: Profile, server: Profile) -> list[str]:
    """Where `job` allows more than `server` (empty: `job` is at least as strict). The
    comparison, field by field, is the table of docs/security.md."""
    looser: list[str] = []
    if server.auth.required and not job.auth.required:
        looser.append("auth.required is false where the server's is true")
    js, ss = job.steps, server.steps
    if ss.env_allow is not None:
        if js.env_allow is None:
            looser.append("steps.env_allow passes every variable where the server's lists some")
        else:
            extra = sorted(set(js.env_allow) - set(ss.env_allow))
            if extra:
                looser.append(f"steps.env_allow adds {', '.join(extra)}")
    if ss.umask is not None and (js.umask is None or js.umask & ss.umask != ss.umask):
        shown = "the server's umask" if js.umask is None else f"{js.umask:03o}"
        looser.append(f"steps.umask {shown} masks fewer bits than {ss.umask:03o}")
    if ss.no_new_privileges and not js.no_new_privileges:
        looser.append("steps.no_new_privileges is false where the server's is true")
    if ss.network == "none" and js.network != "none":
        looser.append("steps.network is host where the server's is none")
    if ss.run_as == "run-user" and js.run_as != "run-user":
        looser.append("steps.run_as is server where the server's is run-user")
    if ss.on_unavailable == "error" and js.on_unavailable != "error":
        looser.append("steps.on_unavailable is warn where the server's is error")
    for key in Limits.__struct_fields__:
        mine, theirs = getattr(js.limits, key), getattr(ss.limits, key)
        if theirs is not None and (mine is None or mine > theirs):
            shown = "unlimited" if mine is None else str(mine)
            looser.append(f"steps.limits.{key} {shown} is more than the server's {theirs}")
    return looser


def job_profile_problems(name: str, loaded: ProfileSet) -> list[str]:
    """Why a job's `security_profile: NAME` cannot run on this server (empty: it can)."""
    profile = loaded.profiles.get(name)
    if profile is None:
        known = ", ".join(sorted(loaded.profiles))
        return [f"security_profile '{name}' is not a known profile (known: {known})"]
    return [
        f"security_profile '{name}' is looser than the server's '{loaded.server.name}': {why}"
        for why in looser_fields(profile, loaded.server)
    ]
