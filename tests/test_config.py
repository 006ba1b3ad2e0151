"""hosts.toml: valid files load into frozen specs; every malformed one gets one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, find_config, load_config

GOOD = """\
[engine]
state_dir = "state"

[hosts.local]
kind = "local"
max_jobs = 3
tags = ["cpu", "sklearn"]

[hosts.gpu-box]
kind = "ssh"
address = "gpu-box.lan"
user = "me"
workdir = "~/runyard"
tags = ["cuda"]

[[routes]]
match = { model_type = "XGBoost" }
prefer = ["gpu-box"]
fallback = ["local"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_a_full_file_loads_into_frozen_specs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.state_dir == (tmp_path / "state").resolve()
    assert list(config.hosts) == ["local", "gpu-box"]
    assert config.hosts["local"].max_jobs == 3
    assert config.hosts["local"].tags == ("cpu", "sklearn")
    assert config.hosts["gpu-box"].address == "gpu-box.lan"
    assert config.routes[0].prefer == ("gpu-box",)
    with pytest.raises(AttributeError):
        config.hosts["local"].max_jobs = 9  # type: ignore[misc]


def test_the_repositorys_default_holds_only_the_local_host() -> None:
    config = load_config(Path(__file__).parent.parent / "hosts.toml")
    assert [(h.name, h.kind) for h in config.hosts.values()] == [("local", "local")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bad TOML: the line and column
        ("[hosts.local]\nkind = \n", r"hosts.toml:2:\d+: not valid TOML"),
        ('[hosts.local\nkind = "local"\n', r"hosts.toml:1:\d+: not valid TOML"),
        # unknown key: the line, the key, and what is allowed
        (
            '[hosts.local]\nkind = "local"\nmaxjobs = 2\n',
            r"hosts.toml:3: hosts.local.maxjobs: unknown key; expected one of: kind, max_jobs",
        ),
        (
            'colour = "red"\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:1: colour: unknown top-level key",
        ),
        (
            '[engine]\nstate_dri = "x"\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:2: engine.state_dri: unknown key; expected one of: state_dir",
        ),
        # wrong type
        (
            '[hosts.local]\nkind = "local"\nmax_jobs = "two"\n',
            r"hosts.toml:3: hosts.local.max_jobs: expected an integer, got a string",
        ),
        (
            '[hosts.local]\nkind = "local"\ntags = "cpu"\n',
            r"hosts.toml:3: hosts.local.tags: expected a list, got a string",
        ),
        (
            '[hosts.local]\nkind = "local"\ntags = ["cpu", 3]\n',
            r"hosts.local.tags\[1\]: expected a string, got an integer",
        ),
        (
            '[hosts.local]\nkind = "banana"\n',
            r"hosts.toml:2: hosts.local.kind: expected one of 'local', 'ssh', 'slurm', got 'banana'",
        ),
        ("hosts = 3\n", r"hosts.toml:1: hosts: expected tables \[hosts.NAME\]"),
        # missing required field
        (
            "[hosts.local]\nmax_jobs = 2\n",
            r"hosts.toml:1: hosts.local: missing required key `kind`",
        ),
        ('[hosts.box]\nkind = "ssh"\n', r"hosts.box.address: an ssh host needs `address`"),
        ('[engine]\nstate_dir = "x"\n', r"hosts: expected at least one host"),
        # duplicate host
        (
            '[hosts.local]\nkind = "local"\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:3:\d+: duplicate table \[hosts.local\]",
        ),
        (
            '[hosts.local]\nkind = "local"\n[hosts.Local]\nkind = "local"\n',
            r"hosts.toml:3: hosts.Local: duplicate host: 'local' is already declared",
        ),
        # values out of range, wrong references
        (
            '[hosts.local]\nkind = "local"\nmax_jobs = 0\n',
            r"hosts.toml:3: hosts.local.max_jobs: expected an integer from 1 to 10,000, got 0",
        ),
        (
            '[hosts.local]\nkind = "local"\nport = 22\n',
            r"hosts.local.port: only ssh hosts take this key",
        ),
        (
            '[hosts.local]\nkind = "local"\n[[routes]]\nmatch = {}\nprefer = ["gpu"]\n',
            r"hosts.toml:5: routes\[0\].prefer: unknown host 'gpu'",
        ),
        # a quoted host name keeps its line
        (
            '[engine]\n\n[hosts."bad name"]\nkind = "local"\n',
            r"hosts.toml:3: hosts.bad name: a host name is letters, digits",
        ),
        # an error at the end of the file names its last line
        ('[hosts.local]\nkind = "local"\ntags = ["a",', r"hosts.toml:3: not valid TOML"),
        # numbers no setting takes, and strings that name nothing
        (
            '[hosts.local]\nkind = "local"\ngpus = [{memory_gb = nan}]\n',
            r"hosts.toml:3: hosts.local.gpus\[0\].memory_gb: expected a finite number, got nan",
        ),
        (
            '[hosts.b]\nkind = "ssh"\naddress = "b"\nworkdir = "/w"\nlost_after_s = inf\n',
            r"hosts.toml:5: hosts.b.lost_after_s: expected a finite number, got inf",
        ),
        (
            '[hosts.b]\nkind = "ssh"\naddress = "b"\nworkdir = "/w"\nuser = ""\n',
            r"hosts.toml:5: hosts.b.user: expected a value, got an empty string",
        ),
        (
            '[hosts.b]\nkind = "ssh"\naddress = "b"\n',
            r"hosts.toml:1: hosts.b.workdir: an ssh host needs `workdir`",
        ),
        (
            '[hosts.local]\nkind = "local"\n[[routes]]\nmatch = {}\nfallback = ["local"]\nfallback_after_s = -1\n',
            r"hosts.toml:6: routes\[0\].fallback_after_s: expected seconds from above 0",
        ),
        (
            '[engine]\nstate_dir = ""\n[hosts.local]\nkind = "local"\n',
            r'hosts.toml:2: engine.state_dir: expected a folder such as "runs"',
        ),
        (
            '[engine]\nstate_dir = "."\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:2: engine.state_dir: .* holds the project",
        ),
        (
            '[engine]\nstate_dir = "hosts.toml"\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:2: engine.state_dir: .* is a file",
        ),
        (
            '[engine]\nstate_dir = "a\\u0000b"\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:2: engine.state_dir: holds a NUL byte",
        ),
        (
            '[hosts.local]\nkind = "local"\nname = "x"\n',
            r"hosts.toml:3: hosts.local.name: unknown key; a host's name is its table's name",
        ),
        (
            '[engine]\nsample_interval_s = 0\n[hosts.local]\nkind = "local"\n',
            r"engine.sample_interval_s: expected seconds from above 0 to 3600, got 0",
        ),
        (
            '[engine]\nnotify = ""\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:2: engine.notify: expected a command, e.g. notify =",
        ),
        (
            '[engine]\nnotify = "notify-send \'Runyard"\n[hosts.local]\nkind = "local"\n',
            r"hosts.toml:2: engine.notify: cannot split it into words: No closing quotation",
        ),
        (
            '[hosts.local]\nkind = "local"\nstall_after_s = -5\n',
            r"hosts.toml:3: hosts.local.stall_after_s: expected seconds from above 0",
        ),
    ],
)
def test_malformed_input_names_file_key_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message and "Traceback" not in message


def test_binary_utf16_and_deeply_nested_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    for content, expected in [
        (b'[hosts.local]\nkind = "\xff"\n', r"hosts.toml:2: not UTF-8 text"),
        ('[hosts.local]\nkind = "local"\n'.encode("utf-16"), r"hosts.toml"),
        (b"a = " + b"[" * 5000 + b"]" * 5000, r"hosts.toml: tables or lists nested too deeply"),
        (b"a = " + b"[" * 30 + b"]" * 30, r"hosts.toml:1: a(\[0\])+: nested more than 16 deep"),
    ]:
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=expected) as caught:
            load_config(path)
        assert "\n" not in str(caught.value)


def test_a_missing_or_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="no such configuration file"):
        find_config(tmp_path / "nope.toml")


def test_discovery_walks_up_like_git_and_honours_env_and_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNYARD_CONFIG", raising=False)
    top = write(tmp_path, GOOD)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(start=deep) == top
    other = tmp_path / "a" / "other.toml"
    other.write_text(GOOD)
    monkeypatch.setenv("RUNYARD_CONFIG", str(other))
    assert find_config(start=deep) == other.resolve()
    assert find_config(top, start=deep) == top.resolve()
    monkeypatch.delenv("RUNYARD_CONFIG")
    lonely = Path("/")
    with pytest.raises(ConfigError, match=r"no hosts\.toml"):
        find_config(start=lonely)
