"""Profiles: the built-in ones, operators' overrides, broken files, and the tighten-only
comparison a job's `security_profile` is held to."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from flwd_security.profiles import (
    ProfileError,
    job_profile_problems,
    looser_fields,
    parse_profile,
    parse_size,
    profiles_for,
)

from flwd.settings import Settings


def settings_in(tmp_path: Path, profile: str = "secure") -> Settings:
    return Settings(profile=profile, profiles_dir=str(tmp_path / "profiles"))


def test_builtin_profiles_load_and_secure_is_strict(tmp_path: Path) -> None:
    loaded = profiles_for(settings_in(tmp_path), fresh=True)
    assert {"secure", "permissive", "disabled"} <= set(loaded.profiles)
    secure = loaded.server
    assert secure.name == "secure" and secure.auth.required
    assert secure.rate_limit.per_token and secure.rate_limit.anonymous
    steps = secure.steps
    assert steps.umask == 0o077 and steps.no_new_privileges and steps.run_as == "run-user"
    assert steps.on_unavailable == "error" and "PATH" in (steps.env_allow or ())
    assert steps.limits.memory == 2 * 1024**3
    disabled = loaded.profiles["disabled"]
    assert not disabled.auth.required and disabled.rate_limit.per_token is None
    permissive = loaded.profiles["permissive"]
    assert permissive.auth.required and permissive.steps.env_allow is None


def test_unknown_profile_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="unknown security profile 'nonexistent'"):
        profiles_for(settings_in(tmp_path, "nonexistent"), fresh=True)


def test_operator_profile_overrides_and_adds(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "strict.yaml").write_text(
        "name: strict\nsteps:\n  umask: '027'\n  network: none\n"
        "  limits: {memory: 256MiB, cpu_seconds: 10}\n"
    )
    loaded = profiles_for(settings_in(tmp_path, "strict"), fresh=True)
    assert loaded.server.steps.network == "none"
    assert loaded.server.steps.umask == 0o027
    assert loaded.server.steps.limits.memory == 256 * 1024**2
    assert loaded.server.auth.required  # the default when the file says nothing


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: other\n", "differs from the file's name"),
        ("steps: {network: moon}\n", "network"),
        ("rate_limit: {per_token: lots}\n", "rate_limit.per_token"),
        ("steps: {umask: '999'}\n", "umask"),
        ("steps: {limits: {memory: huge}}\n", "memory"),
        ("auth: {required: true, extra: 1}\n", "extra"),
        ("[unclosed\n", "cannot be read"),
    ],
)
def test_broken_profile_names_the_file_and_the_fault(
    tmp_path: Path, text: str, reason: str
) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "bad.yaml").write_text(text)
    with pytest.raises(ProfileError) as caught:
        profiles_for(settings_in(tmp_path, "secure"), fresh=True)
    assert "bad.yaml" in caught.value.detail and reason in caught.value.detail
    assert "\n" not in caught.value.detail


def test_sizes() -> None:
    assert parse_size("512MiB", "x") == 512 * 1024**2
    assert parse_size("1GB", "x") == 10**9
    assert parse_size(4096, "x") == 4096


def _profile(**steps: object) -> object:
    return parse_profile({"name": "job", "steps": steps}, "job")


def test_tighter_profile_passes_and_each_looser_field_is_named(tmp_path: Path) -> None:
    server = profiles_for(settings_in(tmp_path), fresh=True).server
    tight = msgspec.structs.replace(
        server,
        name="tight",
        steps=msgspec.structs.replace(
            server.steps,
            env_allow=("PATH",),
            umask=0o077 | 0o700,
            network="none",
            limits=msgspec.structs.replace(server.steps.limits, memory=1024),
        ),
    )
    assert looser_fields(tight, server) == []
    loose_cases = {
        "steps.env_allow adds SECRET": {"env_allow": [*(server.steps.env_allow or ()), "SECRET"]},
        "steps.umask 022": {"umask": "022"},
        "steps.no_new_privileges": {"no_new_privileges": False},
        "steps.run_as is server": {"run_as": "server"},
        "steps.on_unavailable is warn": {"on_unavailable": "warn"},
        "steps.limits.memory": {"limits": {"memory": "4GiB"}},
    }
    base = msgspec.to_builtins(server.steps)
    base["umask"] = f"{server.steps.umask:03o}"
    for expected, change in loose_cases.items():
        steps = {**base, **change}
        if "limits" in change:
            steps["limits"] = {**base["limits"], **change["limits"]}  # type: ignore[dict-item]
        job = parse_profile({"name": "job", "steps": steps}, "job")
        found = looser_fields(job, server)
        assert any(line.startswith(expected) for line in found), (expected, found)
    no_auth = msgspec.structs.replace(
        tight, auth=msgspec.structs.replace(tight.auth, required=False)
    )
    assert looser_fields(no_auth, server) == ["auth.required is false where the server's is true"]


def test_job_profile_problems(tmp_path: Path) -> None:
    loaded = profiles_for(settings_in(tmp_path), fresh=True)
    assert job_profile_problems("secure", loaded) == []
    assert "not a known profile" in job_profile_problems("nope", loaded)[0]
    assert all(
        "looser than the server's 'secure'" in p for p in job_profile_problems("permissive", loaded)
    )
    assert job_profile_problems("permissive", loaded)
    # under permissive, secure is tighter: allowed
    loose = profiles_for(settings_in(tmp_path, "permissive"), fresh=True)
    assert job_profile_problems("secure", loose) == []


def test_validate_job_and_resolve_profile_hooks(tmp_path: Path) -> None:
    from flwd_security import plugin
    from flwd_security.runtime import install

    from tests.api_support import job

    settings = settings_in(tmp_path)
    assert plugin.validate_job(job("plain"), settings) == []
    assert plugin.validate_job(job("same", security_profile="secure"), settings) == []
    looser = plugin.validate_job(job("loose", security_profile="permissive"), settings)
    assert looser and all("looser than the server's 'secure'" in line for line in looser)
    unknown = plugin.validate_job(job("odd", security_profile="nope"), settings)
    assert unknown == [
        "security_profile 'nope' is not a known profile (known: disabled, permissive, secure)"
    ]
    security = install(settings)
    try:
        assert plugin.resolve_profile(job("plain"), settings).name == "secure"
        folder = tmp_path / "profiles"
        folder.mkdir()
        (folder / "offline.yaml").write_text(
            (Path(__file__).parents[2] / "profiles" / "README.md")
            .read_text()
            .split("```yaml\n")[1]
            .split("```")[0]
        )
        security = install(settings)  # profiles are read at start-up
        offline = job("x", security_profile="offline")
        assert plugin.validate_job(offline, settings) == []  # the README's example tightens
        profile = plugin.resolve_profile(offline, settings)
        assert profile.name == "offline" and profile.steps.network == "none"
    finally:
        security.close()
