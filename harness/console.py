"""The web console for the tests: a ``voiceassist web`` server on a free loopback port, accounts
made with the real ``web adduser`` command, and headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium."""

from __future__ import annotations

import http.cookiejar
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.rig.asterisk import free_port
from voiceassist.admin.console.server import ConsoleServer
from voiceassist.config import Config

ADMIN, ADMIN_PASSWORD = "alice", "correct horse battery"
VIEWER, VIEWER_PASSWORD = "victor", "viewer's long password"


def console_conf(data_dir: Path, port: int, extra: str = "") -> str:
    return f"""[general]
answer_dir = {data_dir}/answers
[database]
url = sqlite:///{data_dir}/voiceassist.db
spool_dir = {data_dir}/spool
[webhooks]
outbox_dir = {data_dir}/outbox
[logging]
file = {data_dir}/voiceassist.log
[web]
port = {port}
users_file = {data_dir}/web-users
live_socket = {data_dir}/run/live.sock
{extra}
"""


def add_accounts(config_path: Path) -> None:
    """The two test accounts, through the command an admin runs."""
    for name, role, password in ((ADMIN, "admin", ADMIN_PASSWORD), (VIEWER, "viewer", VIEWER_PASSWORD)):
        subprocess.run([sys.executable, "-m", "voiceassist", "--config", str(config_path), "web", "adduser", name,
                        "--role", role, "--password-stdin"], input=password + "\n", text=True, check=True,
                       capture_output=True)


@contextmanager
def console_in_process(config: Config) -> Iterator[ConsoleServer]:
    server = ConsoleServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(config.web.port)
    try:
        yield server
    finally:
        server.stop()
        thread.join(5)


class ConsoleProcess:
    """``voiceassist web`` as an admin (or systemd) starts it."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "voiceassist", "--config", str(config_path), "web"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_port(port)
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the console did not listen on port {port} within {timeout} s")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HTTPClient:
    """A client with cookies and without following redirects (the tests look at them)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(self, path: str, data: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def login(self, name: str, password: str) -> int:
        status, _, page = self.request("/login")
        token = page.decode().split('name="login_token" value="')[1].split('"')[0]
        status, _, _ = self.request("/login", {"login_token": token, "name": name, "password": password, "next": ""})
        return status

    def csrf(self, path: str = "/calls") -> str:
        _, _, page = self.request(path)
        return page.decode().split('name="csrf" value="')[1].split('"')[0]


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def audio_duration(browser: Any, selector: str, timeout: float = 10) -> float:
    """The duration the browser found in the ``<audio>`` element ``selector`` once it loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        duration = browser.execute_script(
            "const a = document.querySelector(arguments[0]); return a && a.readyState >= 1 ? a.duration : null;", selector)
        if duration:
            return float(duration)
        time.sleep(0.1)
    raise AssertionError(f"{selector} did not load")


def browser_login(driver: Any, base: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)
