"""deploy/ and packaging hold what issue 18 asked of them: a hardened systemd unit
(``systemd-analyze security`` <= 3.0), compose and Dockerfile following the image's and
Docker's conventions, Prometheus rules that promtool accepts and whose unit tests pass,
and an sdist with tests and docs whose wheel carries the status page's files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_is_hardened() -> None:
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(DEPLOY / "ibhub.service")],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for ibhub\.service: ([\d.]+)", done.stdout)
    assert m, done.stdout[-2000:] + done.stderr
    assert float(m.group(1)) <= 3.0, done.stdout


def test_systemd_unit_keeps_what_the_hub_needs() -> None:
    unit = (DEPLOY / "ibhub.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert "AF_INET" in settings["RestrictAddressFamilies"] and "AF_UNIX" in \
        settings["RestrictAddressFamilies"]  # Gateway, ZeroMQ tcp:// and ipc://
    assert settings["SystemCallFilter"]  # @system-service includes setrlimit (LimitNOFILE)
    assert "@system-service" in unit and "~@resources" not in unit
    assert settings["LogsDirectory"] == "ibhub" and settings["StateDirectory"] == "ibhub"
    doc = settings["Documentation"]
    assert doc.startswith("file:///usr/share/doc/ibhub/")
    assert f"-t /usr/share/doc/ibhub docs/{Path(doc).name}" in unit  # the header installs it


def test_compose_follows_the_gateway_image_conventions() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    gw = compose["services"]["ib-gateway"]
    env = gw["environment"]
    assert "TWS_PASSWORD" not in env and env["TWS_PASSWORD_FILE"] == "/run/secrets/ib_password"
    assert gw["secrets"] == ["ib_password"] and "ib_password" in compose["secrets"]
    settings = env["TWS_SETTINGS_PATH"]
    assert any(v.endswith(":" + settings) for v in gw["volumes"])
    assert not any(v.endswith(":/home/ibgateway/Jts") for v in gw["volumes"])
    hub = compose["services"]["ibhub"]
    assert hub["build"]["dockerfile"] == "deploy/Dockerfile"
    assert any(v.endswith(":/var/lib/ibhub") for v in hub["volumes"])
    assert "TWS_PASSWORD=" not in (DEPLOY / "env.example").read_text()
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "deploy/ib_password.txt" in ignored and "deploy/.env" in ignored


def test_dockerfile_installs_dependencies_before_the_code() -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    copy_meta = next(i for i, ln in enumerate(lines) if ln.startswith("COPY pyproject.toml"))
    # the dependency layer: `pip install .` or `pip install ".${EXTRAS}"` (the nats build arg)
    deps = next(i for i, ln in enumerate(lines) if re.search(r'pip install "?\.', ln))
    copy_code = next(i for i, ln in enumerate(lines) if ln.startswith("COPY ibhub"))
    code = next(i for i, ln in enumerate(lines) if "pip install --no-deps ." in ln)
    assert copy_meta < deps < copy_code < code
    assert not any(ln.startswith("EXPOSE") for ln in lines)  # the hub binds 127.0.0.1 only
    assert 'VOLUME ["/var/lib/ibhub"]' in lines
    for name in re.findall(r"^COPY ([^\n]+) \./$", "\n".join(lines), re.M)[0].split():
        assert (ROOT / name).exists(), name


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="no promtool (Debian package prometheus; .ci/run installs it)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    rules = DEPLOY / "prometheus"
    check = subprocess.run(["promtool", "check", "rules", "ibhub-alerts.yml"], cwd=rules,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(["promtool", "test", "rules", "ibhub-alerts.test.yml"], cwd=rules,
                           capture_output=True, text=True, timeout=60)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_pyproject_license_and_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    for name in project["license-files"]:
        assert (ROOT / name).is_file()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert not any(c.startswith("License ::") for c in project["classifiers"])
    assert any(d.startswith("psutil") for d in project["dependencies"])  # doctor's 326 hint


def test_sdist_has_tests_and_docs_and_its_wheel_the_static_files(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")
    build = ("import sys; from setuptools import build_meta as b; "
             "print(getattr(b, sys.argv[1])(sys.argv[2]))")
    sdist = subprocess.run([sys.executable, "-c", build, "build_sdist", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert sdist.returncode == 0, sdist.stderr[-3000:]
    archive = tmp_path / sdist.stdout.split()[-1]
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path / "src", filter="data")
    for want in ("LICENSE", "tests/conftest.py", "tests/e2e/test_statuspage_browser.py",
                 "docs/operations.md", "docs/img/statuspage-connected.png",
                 "deploy/ibhub.service", "deploy/prometheus/ibhub-alerts.yml",
                 "deploy/grafana/ibhub-dashboard.json", ".ci/run",
                 "ibhub/hub/ops/static/status.js"):
        assert want in names, want
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    src = tmp_path / "src" / archive.name.removesuffix(".tar.gz")
    wheel = subprocess.run([sys.executable, "-c", build, "build_wheel", str(tmp_path)],
                           cwd=src, capture_output=True, text=True, timeout=120)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / wheel.stdout.split()[-1]) as whl:
        files = set(whl.namelist())
    for want in ("ibhub/hub/ops/static/status.js", "ibhub/hub/ops/static/status.css",
                 "ibhub/__main__.py", "ibhub/py.typed"):
        assert want in files, want
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    assert not any(f.startswith("tests/") for f in files)
