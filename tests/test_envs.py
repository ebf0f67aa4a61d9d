"""The conda environments under envs/ must pin exactly what requirements.txt pins."""

import re

import yaml


def _requirement_pins(path):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _env_pins(path):
    env = yaml.safe_load(path.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for spec in pip_section:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s]+)", spec)
        assert match, f"{path.name}: '{spec}' is not an exact pin"
        pins[match.group(1).lower()] = match.group(2)
    return env, pins


def test_env_pins_match_requirements(repo):
    required = _requirement_pins(repo / "requirements.txt")
    env_files = sorted((repo / "envs").glob("*.yaml"))
    assert env_files
    for path in env_files:
        env, pins = _env_pins(path)
        assert "python=3.11" in env["dependencies"], path.name
        for name, version in pins.items():
            assert name in required, f"{path.name} pins {name}, which requirements.txt lacks"
            assert version == required[name], f"{path.name}: {name}=={version}, requirements.txt has {required[name]}"


def test_lock_agrees_with_requirements(repo):
    required = _requirement_pins(repo / "requirements.txt")
    required.update(_requirement_pins(repo / "requirements-test.txt"))
    locked = {}
    for line in (repo / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            locked[name.lower().replace("_", "-")] = version
    for name, version in required.items():
        assert locked.get(name) == version, f"requirements.lock has {name}=={locked.get(name)}, expected {version}"


def test_every_rule_names_an_existing_env(repo):
    for rules_file in sorted((repo / "rules").glob("*.smk")):
        text = rules_file.read_text()
        rules = re.findall(r"^\s*(?:rule|checkpoint) (\w+):", text, flags=re.M)
        envs = re.findall(r'conda:\s*\n\s*"\.\./(envs/[\w.-]+)"', text)
        assert len(envs) == len(rules), f"{rules_file.name}: {len(rules)} rules but {len(envs)} conda envs"
        for env in envs:
            assert (repo / env).is_file(), f"{rules_file.name} names missing {env}"
